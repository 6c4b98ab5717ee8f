# Copyright (c) mmclim contributors. All rights reserved.
"""A free-text vocabulary for a built open-vocabulary detector, at test time.

The detector's classes come from its config's class-embedding and split files when it is built
(:func:`mmclim.structures.load_vocabulary`). :func:`embed_vocabulary` embeds other class names
with the detector's own CLIP text tower, and :func:`set_vocabulary` swaps them in, with the
novel classes among them, so that the same weights detect the new names (as mmdet's
``mmdet.apis`` holds ``init_detector`` and ``inference_detector`` for built detectors).

Supported: :class:`~mmclim.models.detectors.FVLM`. The caption detectors
(:class:`~mmclim.models.detectors.DeticDetector`, :class:`~mmclim.models.detectors.BaronDetector`)
are refused (:data:`UNSUPPORTED_REASON`).
"""
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmclim.evaluation.metrics import PromptSet, compute_text_embeddings
from mmclim.models.backbones import OpenCLIPRegion
from mmclim.models.detectors import FVLM
from mmclim.models.roi_heads.fvlm_bbox_head import CLASS_WEIGHT

UNSUPPORTED_REASON = (
    'only FVLM is supported: the caption detectors (DeticDetector, BaronDetector) hold their '
    'vocabulary the same way, but their text tower is optional (DeticDetector without caption '
    'branches has none to embed new names with), BARON may classify with the last text block '
    "('last_block') rather than CLIP's embedding, and a cascade has one classifier per stage; "
    'swapping them is not implemented nor tested')


def _check_model(model: nn.Module) -> FVLM:
    """The model if it is supported, else a ValueError naming it."""
    if not isinstance(model, FVLM):
        raise ValueError(f'model: a {type(model).__name__} has no swappable vocabulary; '
                         f'{UNSUPPORTED_REASON}')
    return model


def text_tower(model: nn.Module) -> OpenCLIPRegion:
    """The CLIP model whose text tower made (and must make) the detector's class embeddings.

    Args:
        model (nn.Module): A built :class:`~mmclim.models.detectors.FVLM`.

    Returns:
        OpenCLIPRegion: The frozen CLIP of its backbone (``model.backbone.region``).
    """
    return _check_model(model).backbone.region


def embed_vocabulary(model: nn.Module, names: Sequence[str],
                     templates: Union[Sequence[str], PromptSet]) -> Tensor:
    """Class-name embeddings made with the detector's own text tower.

    The prompt ensemble of :func:`mmclim.evaluation.metrics.compute_text_embeddings` (as
    ``tools/generate_text_embeddings.py`` makes the config's files), CLIP's projected text
    embedding (the output F-VLM's classifier compares with), without building a graph.

    Args:
        model (nn.Module): A built :class:`~mmclim.models.detectors.FVLM`.
        names (Sequence[str]): C class names.
        templates (Sequence[str] | PromptSet): T templates, each with one ``{}``, or a set of
            :func:`mmclim.evaluation.metrics.get_prompt_set`.

    Returns:
        Tensor: Unit rows of shape (C, D), D the model's embedding size, on the model's device.
    """
    tower = text_tower(model)
    with torch.no_grad():
        return compute_text_embeddings(tower, list(names), templates)


def set_vocabulary(model: nn.Module,
                   names: Sequence[str],
                   embeddings: Tensor,
                   novel: Sequence[str] = ()) -> None:
    """Make the detector classify regions into ``names``, in place.

    What the number C and the order of the classes determine is changed together: the
    classifier's class embeddings (F-VLM's detection and VLM scores both compare with them) and
    its novel-class mask (which class gets F-VLM's novel VLM weight ``novel_beta`` in the score
    fusion instead of ``base_alpha``, :func:`mmclim.models.roi_heads.fvlm_scores.
    fvlm_fuse_scores`, and which classes training masks out), the box head's ``num_classes``
    (the background label C) and its cross-entropy class weights (1 per class, then
    ``background_weight``), and ``model.dataset_meta['classes']`` (whose old ``'palette'`` is
    dropped). The learned weights (projection, background embedding, logit scale, box
    regression) are kept: labels are indices into ``names``.

    Args:
        model (nn.Module): A built :class:`~mmclim.models.detectors.FVLM`.
        names (Sequence[str]): C distinct, non-empty class names, in label order.
        embeddings (Tensor): Their embeddings by the model's text tower
            (:func:`embed_vocabulary`), shape (C, D); rows are L2-normalised here.
        novel (Sequence[str]): The names among ``names`` to score as novel classes. Defaults
            to () (all base).

    Raises:
        ValueError: The model is not supported, or an argument does not fit (named in the
            message).
    """
    model = _check_model(model)
    names = list(names)
    if not names:
        raise ValueError('names: expected at least one class name, got none')
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'names[{index}]: expected a non-empty str, got {name!r}')
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f'names: expected distinct class names, {repeated} repeated')
    unknown = sorted(set(novel) - set(names))
    if unknown:
        raise ValueError(f'novel: {unknown} are not among names {names}')
    classifier = model.roi_head.classifier
    embed_dim = classifier.class_embeddings.shape[1]
    if embeddings.shape != (len(names), embed_dim):
        raise ValueError(f'embeddings: expected shape ({len(names)}, {embed_dim}) (one row per '
                         f'name, of the embedding size of {model.backbone.model_name!r}), got '
                         f'{tuple(embeddings.shape)}')
    device = classifier.class_embeddings.device
    novel = set(novel)
    classifier.class_embeddings = F.normalize(embeddings.detach().float(), dim=-1).to(device)
    classifier.novel_mask = torch.tensor([name in novel for name in names], dtype=torch.bool,
                                         device=device)
    bbox_head = model.roi_head.bbox_head
    bbox_head.num_classes = len(names)
    bbox_head.loss_cls.class_weight = [CLASS_WEIGHT] * len(names) + [bbox_head.background_weight]
    meta = dict(getattr(model, 'dataset_meta', None) or {})
    meta.pop('palette', None)
    meta['classes'] = tuple(names)
    model.dataset_meta = meta
