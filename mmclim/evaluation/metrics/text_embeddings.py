# Copyright (c) mmclim contributors. All rights reserved.
"""Class-name text embeddings of an :class:`~mmclim.models.backbones.OpenCLIPRegion`.

Zero-shot classifiers (region classification, open-vocabulary detection heads) score regions
against one embedding per class: the normalised mean of the normalised embeddings of the class
name put in each prompt template (:mod:`.prompt_templates`). They are written and read by
:mod:`mmclim.structures.vocabulary`, the one owner of the class-embedding file format.
"""
import json
from pathlib import Path
from typing import List, Sequence, Union

import torch.nn.functional as F
from torch import Tensor

from mmclim.models.backbones import OpenCLIPRegion
from mmclim.models.backbones.open_clip_region import DEFAULT_TEXT_BATCH_SIZE
from .prompt_templates import PromptSet

# The learning-free background class: the word put in the same templates as the classes.
BACKGROUND_CLASS_NAME = 'background'
CLASS_FILE_SUFFIXES = ('.json', '.txt')


def clean_class_name(name: str) -> str:
    """A class name as put in prompts: LVIS-style underscores become spaces.

    Args:
        name (str): A category name, e.g. ``'traffic_light'``.

    Returns:
        str: E.g. ``'traffic light'``.
    """
    return ' '.join(name.replace('_', ' ').split())


def _load_json_class_names(path: Path) -> List[str]:
    """Names of the ``categories`` of a COCO/LVIS-style json, in ascending id order."""
    with open(path) as f:
        data = json.load(f)
    categories = data.get('categories') if isinstance(data, dict) else None
    if not isinstance(categories, list):
        raise ValueError(f"{path}: expected a json object with a 'categories' list, got "
                         f'{type(categories if isinstance(data, dict) else data).__name__}')
    ids = {}
    for index, category in enumerate(categories):
        if not (isinstance(category, dict) and isinstance(category.get('id'), int)
                and isinstance(category.get('name'), str)):
            raise ValueError(f"{path}: categories[{index}]: expected an object with an int 'id' "
                             f"and a str 'name', got {category!r}")
        if category['id'] in ids:
            raise ValueError(f"{path}: categories[{index}]: id {category['id']} is repeated")
        ids[category['id']] = category['name']
    return [ids[category_id] for category_id in sorted(ids)]


def load_class_names(path: str) -> List[str]:
    """Class names of a data set, cleaned with :func:`clean_class_name`.

    Args:
        path (str): A COCO/LVIS-style ``.json`` annotation file, whose ``categories`` (objects
            with ``id`` and ``name``; LVIS ``synonyms`` are not used) give the names in ascending
            id order, or a ``.txt`` file with one name per line (blank lines skipped).

    Returns:
        List[str]: C class names.
    """
    file = Path(path)
    if file.suffix not in CLASS_FILE_SUFFIXES:
        raise ValueError(f'{path}: expected a class file ending in one of {CLASS_FILE_SUFFIXES}')
    if not file.is_file():
        raise FileNotFoundError(f'class file {path!r} does not exist')
    if file.suffix == '.json':
        names = _load_json_class_names(file)
    else:
        names = file.read_text().splitlines()
    names = [clean_class_name(name) for name in names]
    if file.suffix == '.txt':
        names = [name for name in names if name]
    for index, name in enumerate(names):
        if not name:
            raise ValueError(f'{path}: class {index} has an empty name')
    if not names:
        raise ValueError(f'{path}: expected at least one class name, found none')
    return names


def as_prompt_set(templates: Union[Sequence[str], PromptSet]) -> PromptSet:
    """A :class:`PromptSet` as given, or one that puts class names as they are in templates.

    Args:
        templates (Sequence[str] | PromptSet): T templates, each with one ``{}``, or a set of
            :func:`get_prompt_set` with its name rules.

    Returns:
        PromptSet: The set.
    """
    return templates if isinstance(templates, PromptSet) else PromptSet(tuple(templates))


def build_prompts(class_names: Sequence[str],
                  templates: Union[Sequence[str], PromptSet]) -> List[str]:
    """Every class name in every template.

    Args:
        class_names (Sequence[str]): C class names.
        templates (Sequence[str] | PromptSet): T templates, each with one ``{}`` (names put in
            as they are), or a :class:`PromptSet` (e.g. ``get_prompt_set('vild')``), whose rules
            process the names.

    Returns:
        List[str]: C * T prompts, class-major: prompt ``c * T + t`` is class c in template t.
    """
    prompt_set = as_prompt_set(templates)
    return [prompt for name in class_names for prompt in prompt_set.prompts(name)]


def compute_text_embeddings(model: OpenCLIPRegion,
                            class_names: Sequence[str],
                            templates: Union[Sequence[str], PromptSet],
                            background: bool = False,
                            batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
                            text_output: str = 'projection') -> Tensor:
    """Per-class embeddings: the normalised mean of the class's normalised prompt embeddings.

    Run the model in eval mode; no graph is built.

    Args:
        model (OpenCLIPRegion | CLIPTextEncoder): The text tower that embeds the prompts (any
            module with ``encode_text(texts, normalize, batch_size, output)``).
        class_names (Sequence[str]): C class names.
        templates (Sequence[str] | PromptSet): T templates, each with one ``{}`` (names put in
            as they are), or a :class:`PromptSet` whose rules process the names.
        background (bool): Append a background row: :data:`BACKGROUND_CLASS_NAME` put in the
            same templates, a learning-free stand-in for a learned background embedding.
            Defaults to False.
        batch_size (int): Prompts per text-tower forward pass. Defaults to 256.
        text_output (str): Which text output embeds each prompt
            (:data:`~mmclim.models.backbones.clip_text_paths.TEXT_OUTPUTS`): ``'projection'``,
            CLIP's text embedding (size D), or ``'last_block'``, the EOT token after the last
            transformer block (size W; the official BARON OV-COCO classifier's
            ``attn12`` embeddings). Defaults to ``'projection'``.

    Returns:
        Tensor: Unit rows in class order, then background, of shape (C [+ 1], D) (or
        (C [+ 1], W) for ``'last_block'``).
    """
    if not class_names:
        raise ValueError('class_names: expected at least one class name, got none')
    prompt_set = as_prompt_set(templates)
    names = [*class_names, BACKGROUND_CLASS_NAME] if background else list(class_names)
    prompts = build_prompts(names, prompt_set)
    embeddings = model.encode_text(prompts, normalize=True, batch_size=batch_size,
                                   output=text_output)
    embeddings = embeddings.reshape(len(names), len(prompt_set), -1).mean(dim=1)
    return F.normalize(embeddings, dim=-1)
