# Copyright (c) mmclim contributors. All rights reserved.
"""The vocabulary files of open-vocabulary models: one reader and writer per format.

**Class embeddings** (``X.npy`` + sidecar ``X.json``): float32 rows of shape (C [+ 1], D), one
per class in label order (ascending category id), then the background row when the file has
one; the sidecar records how they were made, at least the open_clip model name
(:data:`EMBEDDING_MODEL_KEY`), the size D (:data:`EMBEDDING_DIM_KEY`) and the number of rows
(:data:`EMBEDDING_ROWS_KEY`), and which text output made them (:data:`EMBEDDING_TEXT_OUTPUT_KEY`;
absent means :data:`DEFAULT_TEXT_OUTPUT`). :func:`load_class_embeddings` checks the array
against its sidecar and against the model that uses it, so embeddings of another text tower
(whose space another image tower does not share) or of another text output are an error, not a
silent zero-shot failure.

**Open-vocabulary split** (json): which category ids are base (trained) and novel (held out),
written next to the base-only training file by ``tools/dataset_converters/prepare_ov_*.py``.
The classes of a model are the base and novel categories together in ascending id, the order
of mmdet's labels for these files and of the rows of the class embeddings.
"""
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor

EMBEDDING_SUFFIX = '.npy'
SIDECAR_SUFFIX = '.json'
EMBEDDING_MODEL_KEY = 'model'
EMBEDDING_DIM_KEY = 'embed_dim'
EMBEDDING_ROWS_KEY = 'num_rows'
EMBEDDING_BACKGROUND_KEY = 'background'
# Which text output made the rows ('projection' or 'last_block', see
# mmclim.models.backbones.clip_text_paths.TEXT_OUTPUTS); files without it are 'projection'.
EMBEDDING_TEXT_OUTPUT_KEY = 'text_output'
DEFAULT_TEXT_OUTPUT = 'projection'
EMBEDDING_TOOL = 'tools/generate_text_embeddings.py'

SPLIT_RULE_KEY = 'rule'
SPLIT_BASE_IDS_KEY = 'base_category_ids'
SPLIT_BASE_CLASSES_KEY = 'base_classes'
SPLIT_NOVEL_IDS_KEY = 'novel_category_ids'
SPLIT_NOVEL_CLASSES_KEY = 'novel_classes'


def sidecar_path(embedding_file: str) -> str:
    """The metadata file of an embedding file: ``x.npy`` -> ``x.json``."""
    return str(Path(embedding_file).with_suffix(SIDECAR_SUFFIX))


def save_class_embeddings(path: str, embeddings: Tensor, model_name: str,
                          metadata: Optional[Dict[str, Any]] = None) -> str:
    """Write class embeddings as float32 ``.npy`` and their sidecar ``.json``.

    Args:
        path (str): The ``.npy`` file; its folder is created.
        embeddings (Tensor): Shape (N, D).
        model_name (str): The open_clip model whose text tower made them.
        metadata (dict, optional): More JSON-serialisable facts (templates, class names,
            checkpoint, background). Defaults to None.

    Returns:
        str: The sidecar's path.
    """
    if Path(path).suffix != EMBEDDING_SUFFIX:
        raise ValueError(f'class embeddings: expected a path ending in {EMBEDDING_SUFFIX!r}, got '
                         f'{path!r}')
    if embeddings.ndim != 2:
        raise ValueError(f'class embeddings: expected shape (N, D), got '
                         f'{tuple(embeddings.shape)}')
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings.detach().float().cpu().numpy())
    sidecar = sidecar_path(path)
    record = dict(metadata or {})
    record.update({EMBEDDING_MODEL_KEY: model_name, EMBEDDING_DIM_KEY: int(embeddings.shape[1]),
                   EMBEDDING_ROWS_KEY: int(embeddings.shape[0])})
    with open(sidecar, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=2)
    return sidecar


def read_embedding_sidecar(path: str) -> Optional[Dict[str, Any]]:
    """The sidecar of an embedding file, or None when there is none."""
    sidecar = Path(sidecar_path(path))
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding='utf-8'))
    except json.JSONDecodeError as err:
        raise ValueError(f'{sidecar}: not a valid JSON sidecar of {path} ({err})') from err
    if not isinstance(record, dict):
        raise ValueError(f'{sidecar}: expected a JSON object, got {type(record).__name__}')
    return record


def load_class_embeddings(path: str,
                          model_name: Optional[str] = None,
                          embed_dim: Optional[int] = None,
                          num_rows: Optional[int] = None,
                          field: str = 'class_embeddings',
                          text_output: Optional[str] = None) -> Tensor:
    """Read class embeddings, check them against their sidecar and the model, L2-normalise.

    Args:
        path (str): A ``.npy`` of :func:`save_class_embeddings`, read as data: an array of
            Python objects (which ``.npy`` stores as a pickle) is refused.
        model_name (str, optional): The open_clip model the embeddings are used with; must be
            the sidecar's model (the same text tower, so the same space). Defaults to None (not
            checked).
        embed_dim (int, optional): The model's embedding size D. Defaults to None.
        num_rows (int, optional): The rows expected (classes [+ background]). Defaults to None.
        field (str): How errors name the config field. Defaults to ``'class_embeddings'``.
        text_output (str, optional): The text output the model expects (``'projection'`` or
            ``'last_block'``); must be the sidecar's :data:`EMBEDDING_TEXT_OUTPUT_KEY`, which
            is :data:`DEFAULT_TEXT_OUTPUT` when absent. Defaults to None (not checked).

    Returns:
        Tensor: Float32 unit rows of shape (N, D).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'{field}: {path!r} does not exist; make it with {EMBEDDING_TOOL}')
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f'{field}: {path}: expected a float array of shape (N, D), got '
                         f'{array.dtype} of shape {array.shape}')
    sidecar = read_embedding_sidecar(path)
    if sidecar is None:
        print_log(f'{field}: {path} has no sidecar {sidecar_path(path)}; only its shape '
                  f'{array.shape} is checked (files of {EMBEDDING_TOOL} have one)',
                  logger='current', level=logging.WARNING)
    else:
        for key, actual in ((EMBEDDING_DIM_KEY, array.shape[1]),
                            (EMBEDDING_ROWS_KEY, array.shape[0])):
            if key in sidecar and sidecar[key] != actual:
                raise ValueError(f'{field}: {path} has shape {array.shape} but its sidecar says '
                                 f'{key}={sidecar[key]}; the two files do not belong together')
        made_with = sidecar.get(EMBEDDING_MODEL_KEY)
        if model_name is not None and made_with is not None and made_with != model_name:
            raise ValueError(f'{field}: {path} was made with the text tower of {made_with!r} '
                             f'(its sidecar), but the model is {model_name!r}; embed the classes '
                             f'with {EMBEDDING_TOOL} --model {model_name}')
        made_from = sidecar.get(EMBEDDING_TEXT_OUTPUT_KEY, DEFAULT_TEXT_OUTPUT)
        if text_output is not None and made_from != text_output:
            raise ValueError(f'{field}: {path} holds the {made_from!r} text output (its sidecar '
                             f'{EMBEDDING_TEXT_OUTPUT_KEY}), but the model expects '
                             f'{text_output!r}; embed the classes with {EMBEDDING_TOOL} '
                             f'--text-output {text_output}')
    if embed_dim is not None and array.shape[1] != embed_dim:
        raise ValueError(f'{field}: {path} has embeddings of size {array.shape[1]}, the model\'s '
                         f'embedding size is {embed_dim}')
    if num_rows is not None and array.shape[0] != num_rows:
        raise ValueError(f'{field}: {path} has {array.shape[0]} rows, expected {num_rows}')
    return F.normalize(torch.from_numpy(array).float(), dim=-1)


class OVSplit(NamedTuple):
    """An open-vocabulary split file's content, each list in ascending category id.

    Attributes:
        base_ids (tuple[int, ...]): Base (training) category ids.
        novel_ids (tuple[int, ...]): Novel (held-out) category ids.
        base_classes (tuple[str, ...]): Their names (empty if the file has none).
        novel_classes (tuple[str, ...]): Likewise.
    """
    base_ids: tuple
    novel_ids: tuple
    base_classes: tuple
    novel_classes: tuple

    def novel_mask(self) -> Tensor:
        """Bool (C,): True for the novel classes, classes in ascending category id."""
        novel = set(self.novel_ids)
        return torch.tensor([cat_id in novel for cat_id in sorted(novel | set(self.base_ids))],
                            dtype=torch.bool)


def split_record(names: Dict[int, str], base_ids: Sequence[int], novel_ids: Sequence[int],
                 rule: str) -> Dict[str, Any]:
    """The json record of a split file.

    Args:
        names (dict[int, str]): Category names by id.
        base_ids (Sequence[int]): Base category ids.
        novel_ids (Sequence[int]): Novel category ids.
        rule (str): How the split was made, for the reader.

    Returns:
        dict: The record, lists in ascending category id.
    """
    base, novel = sorted(base_ids), sorted(novel_ids)
    return {SPLIT_RULE_KEY: rule,
            SPLIT_BASE_IDS_KEY: base,
            SPLIT_BASE_CLASSES_KEY: [names[cat_id] for cat_id in base],
            SPLIT_NOVEL_IDS_KEY: novel,
            SPLIT_NOVEL_CLASSES_KEY: [names[cat_id] for cat_id in novel]}


def write_split_file(path: str, record: Dict[str, Any]) -> None:
    """Write a record of :func:`split_record` as UTF-8 JSON."""
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(record, f, separators=(',', ':'))


def _id_list(record: Any, key: str, path: str) -> List[int]:
    ids = record.get(key) if isinstance(record, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f'{path}: expected a json object whose {key!r} is a list of category '
                         f'ids (a split file of tools/dataset_converters/prepare_ov_*.py), got '
                         f'{type(ids).__name__}')
    if len(set(ids)) != len(ids):
        raise ValueError(f'{path}: {key!r} repeats category ids')
    return ids


def load_vocabulary(class_embeddings: str, split_file: str, field: str,
                    **checks: Any) -> Tuple[Tensor, Tensor]:
    """A classifier's vocabulary: its class embeddings and the novel mask of their split.

    Args:
        class_embeddings (str): The ``.npy`` (with its sidecar) of :func:`load_class_embeddings`.
        split_file (str): The split of the same classes (:func:`read_split_file`).
        field (str): The config field holding both, e.g. ``'bbox_head'``, for errors.
        **checks: ``model_name``, ``embed_dim``, ``num_rows``, ``text_output`` of
            :func:`load_class_embeddings`.

    Returns:
        tuple[Tensor, Tensor]: The unit embeddings (C, D) and the bool novel mask (C,).

    Raises:
        ValueError: The split lists another number of classes than the embeddings' rows.
    """
    embeddings = load_class_embeddings(class_embeddings, field=f'{field}.class_embeddings',
                                       **checks)
    novel_mask = read_split_file(split_file).novel_mask()
    if len(novel_mask) != embeddings.shape[0]:
        raise ValueError(f'{field}.split_file: {split_file} lists {len(novel_mask)} base and '
                         f'novel classes, expected {embeddings.shape[0]} (the rows of '
                         f'{class_embeddings})')
    return embeddings, novel_mask


def read_split_file(path: str) -> OVSplit:
    """Read an open-vocabulary split file.

    Args:
        path (str): A json object with ``base_category_ids`` and ``novel_category_ids`` (and
            optionally the class names), as :func:`write_split_file` writes.

    Returns:
        OVSplit: The split.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'split file {path!r} does not exist; '
                                'tools/dataset_converters/prepare_ov_*.py writes it')
    with open(path, encoding='utf-8') as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}: not a valid JSON file ({err})') from err
    base = _id_list(record, SPLIT_BASE_IDS_KEY, path)
    novel = _id_list(record, SPLIT_NOVEL_IDS_KEY, path)
    both = sorted(set(base) & set(novel))
    if both:
        raise ValueError(f'{path}: the category ids {both} are both base and novel')
    names = []
    for ids_key, names_key in ((SPLIT_BASE_IDS_KEY, SPLIT_BASE_CLASSES_KEY),
                               (SPLIT_NOVEL_IDS_KEY, SPLIT_NOVEL_CLASSES_KEY)):
        group = record.get(names_key, [])
        if group and len(group) != len(record[ids_key]):
            raise ValueError(f'{path}: {names_key!r} has {len(group)} names for '
                             f'{len(record[ids_key])} ids in {ids_key!r}')
        names.append(tuple(group))
    order = [sorted(range(len(ids)), key=ids.__getitem__) for ids in (base, novel)]
    return OVSplit(tuple(base[i] for i in order[0]), tuple(novel[i] for i in order[1]),
                   tuple(names[0][i] for i in order[0]) if names[0] else (),
                   tuple(names[1][i] for i in order[1]) if names[1] else ())
