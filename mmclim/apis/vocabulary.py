# Copyright (c) mmclim contributors. All rights reserved.
"""A free-text vocabulary for a built open-vocabulary detector, at test time.

The detector's classes come from its config's class-embedding and split files when it is built
(:func:`mmclim.structures.load_vocabulary`). :func:`embed_vocabulary` embeds other class names
with the text tower and the text output its classifiers were made with, and
:func:`set_vocabulary` swaps them into every classifier of the detector, with the novel classes
among them, so that the same weights detect the new names (as mmdet's ``mmdet.apis`` holds
``init_detector`` and ``inference_detector`` for built detectors).

Supported:

- :class:`~mmclim.models.detectors.FVLM`: one box head; the text tower is the backbone's CLIP.
- :class:`~mmclim.models.detectors.DeticDetector`: one box head, or one per stage of a
  :class:`~mmclim.models.roi_heads.DeticCascadeRoIHead` (all swapped); the text tower is its
  ``text_encoder``, or, for a Detic built without one (no caption branch), a CLIP given to
  :func:`embed_vocabulary` (``tools/demo/detect_free_text.py --text-model``).
- :class:`~mmclim.models.detectors.BaronDetector`: as Detic; its classifier reads pseudo words
  with its ``text_encoder`` and compares its ``text_output`` (``'projection'`` or, as the
  OV-COCO recipe, ``'last_block'``) with the class embeddings, so new names are embedded with
  that output.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmclim.evaluation.metrics import PromptSet, compute_text_embeddings
from mmclim.models.backbones.clip_text_paths import check_text_output, text_tower_output_dim
from mmclim.models.detectors import FVLM, DeticDetector
from mmclim.models.roi_heads import DeticBBoxHead, FVLMBBoxHead
from mmclim.models.roi_heads.detic_bbox_head import detic_class_weight
from mmclim.models.roi_heads.fvlm_bbox_head import CLASS_WEIGHT
from mmclim.structures.vocabulary import DEFAULT_TEXT_OUTPUT

# A class the old vocabulary did not have has no training image count: Detic's federated loss
# never draws it as a negative (it is still a positive wherever it is a label).
UNKNOWN_CLASS_FREQUENCY = 0.0


def _bbox_heads(model: nn.Module) -> List[nn.Module]:
    """The box heads whose classifiers hold the detector's vocabulary.

    Args:
        model (nn.Module): A built FVLM, DeticDetector or BaronDetector.

    Returns:
        List[nn.Module]: F-VLM's box head; a Detic's or BARON's box head, or one per cascade
        stage.

    Raises:
        ValueError: Another type of model (named in the message).
    """
    if isinstance(model, FVLM):
        return [model.roi_head.bbox_head]
    if isinstance(model, DeticDetector):  # BaronDetector too
        return list(model.bbox_heads)
    raise ValueError(f'model: a {type(model).__name__} has no swappable vocabulary; expected an '
                     'FVLM, DeticDetector or BaronDetector')


def text_tower(model: nn.Module) -> Optional[nn.Module]:
    """The detector's own CLIP text tower, which made (and must make) its class embeddings.

    Args:
        model (nn.Module): A built FVLM, DeticDetector or BaronDetector.

    Returns:
        nn.Module | None: F-VLM's frozen backbone CLIP (``model.backbone.region``, an
        :class:`~mmclim.models.backbones.OpenCLIPRegion`); a Detic's or BARON's
        ``text_encoder`` (a :class:`~mmclim.models.backbones.CLIPTextEncoder`), None for a
        Detic built without one.
    """
    _bbox_heads(model)  # refuses other models
    if isinstance(model, FVLM):
        return model.backbone.region
    return model.text_encoder


def _classifier_text_output(model: nn.Module, text_output: Optional[str]) -> str:
    """The text output new names are embedded with: a classifier's own (BARON's
    ``text_output``, checked against ``text_output`` when given), else ``text_output``, else
    :data:`~mmclim.structures.vocabulary.DEFAULT_TEXT_OUTPUT`."""
    if text_output is not None:
        check_text_output(text_output, 'text_output')
    own = {getattr(head.classifier, 'text_output', None) for head in _bbox_heads(model)} - {None}
    if not own:
        return DEFAULT_TEXT_OUTPUT if text_output is None else text_output
    if len(own) > 1:  # not built by the shipped heads; refused rather than guessed
        raise ValueError(f'model: its classifiers compare different text outputs {sorted(own)}')
    own = own.pop()
    if text_output is not None and text_output != own:
        raise ValueError(f'text_output: {text_output!r}, but the classifier of the '
                         f'{type(model).__name__} compares its {own!r} text output')
    return own


def _embedding_size(model: nn.Module) -> int:
    """The size of the class embeddings the classifiers compare with."""
    return int(_bbox_heads(model)[0].classifier.class_embeddings.shape[1])


def resolve_text_tower(model: nn.Module,
                       tower: Optional[nn.Module] = None,
                       text_output: Optional[str] = None,
                       field: str = 'tower') -> Tuple[nn.Module, str]:
    """The text tower and output that embed new names for the detector, checked.

    Args:
        model (nn.Module): A built FVLM, DeticDetector or BaronDetector.
        tower (nn.Module, optional): A CLIP with ``encode_text`` (an
            :class:`~mmclim.models.backbones.OpenCLIPRegion`) for a detector without its own
            text tower (:func:`text_tower` None); refused for one that has its own. Defaults to
            None.
        text_output (str, optional): The output the detector's class embeddings were made with
            (their sidecar's ``text_output``). None: see :func:`embed_vocabulary`. Defaults to
            None.
        field (str): How errors about ``tower`` name it, e.g. ``'--text-model'``. Defaults to
            ``'tower'``.

    Returns:
        tuple[nn.Module, str]: The tower and the text output.

    Raises:
        ValueError: No tower, two towers, or a tower whose output size is not the class
            embeddings' (named ``field``), or a ``text_output`` the classifier does not use.
    """
    name = type(model).__name__
    own = text_tower(model)
    if own is not None and tower is not None:
        raise ValueError(f'{field}: the {name} embeds with its own text tower '
                         f'({type(own).__name__} {own.model_name!r}); give none')
    if own is None and tower is None:
        raise ValueError(f'{field}: the {name} has no text tower (built without text_encoder); '
                         'give the CLIP whose text tower made its class embeddings')
    tower = own if own is not None else tower
    output = _classifier_text_output(model, text_output)
    size, expected = text_tower_output_dim(tower.clip, output), _embedding_size(model)
    if size != expected:
        raise ValueError(f'{field}: the {output!r} text output of {tower.model_name!r} has '
                         f'{size} dimensions, the class embeddings of the {name} {expected}')
    return tower, output


def embed_vocabulary(model: nn.Module,
                     names: Sequence[str],
                     templates: Union[Sequence[str], PromptSet],
                     tower: Optional[nn.Module] = None,
                     text_output: Optional[str] = None) -> Tensor:
    """Class-name embeddings made as the detector's class embeddings were.

    The prompt ensemble of :func:`mmclim.evaluation.metrics.compute_text_embeddings` (as
    ``tools/generate_text_embeddings.py`` makes the config's files), by the detector's own text
    tower (:func:`text_tower`) or ``tower``, with the output its classifiers compare with,
    without building a graph.

    Args:
        model (nn.Module): A built FVLM, DeticDetector or BaronDetector.
        names (Sequence[str]): C class names.
        templates (Sequence[str] | PromptSet): T templates, each with one ``{}``, or a set of
            :func:`mmclim.evaluation.metrics.get_prompt_set`.
        tower (nn.Module, optional): The CLIP for a Detic without text tower
            (:func:`resolve_text_tower`). Defaults to None.
        text_output (str, optional): The output the class embeddings were made with, their
            sidecar's ``text_output`` (``'projection'`` or ``'last_block'``). None takes a
            BARON classifier's ``text_output``, else ``'projection'``; a BARON classifier's own
            must match. Defaults to None.

    Returns:
        Tensor: Unit rows of shape (C, D), D the size of the class embeddings, on the tower's
        device.
    """
    tower, output = resolve_text_tower(model, tower, text_output)
    with torch.no_grad():
        return compute_text_embeddings(tower, list(names), templates, text_output=output)


def _check_names(names: Sequence[str], novel: Sequence[str]) -> List[str]:
    """``names`` as a list if they are distinct non-empty strings and hold ``novel``."""
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
    return names


def _follow_names(values: Tensor, old_names: Optional[Sequence[str]], names: Sequence[str],
                  fill: float) -> Tensor:
    """Per-class values (C_old,) re-ordered for ``names`` by name, ``fill`` for a name not
    among ``old_names`` (all of them when the old names are unknown)."""
    old = {name: index for index, name in enumerate(old_names or ())}
    return torch.stack([values[old[name]] if name in old else values.new_tensor(fill)
                        for name in names])


def _set_class_weights(head: nn.Module, novel_mask: Tensor, old_names: Optional[Sequence[str]],
                       names: Sequence[str]) -> None:
    """The classification loss's per-class numbers for the new classes, as the head derives
    them when built."""
    loss = head.loss_cls
    if isinstance(head, FVLMBBoxHead):  # softmax cross-entropy: every class, then background
        loss.class_weight = [CLASS_WEIGHT] * len(names) + [head.background_weight]
    elif isinstance(head, DeticBBoxHead):  # sigmoid loss: base 1, novel novel_class_weight
        weights = detic_class_weight(novel_mask, head.novel_class_weight)
        loss.class_weight = (loss.class_weight.new_tensor(weights)
                             if isinstance(loss.class_weight, Tensor) else weights)
        if getattr(loss, 'fed_class_probs', None) is not None:  # federated loss, OV-LVIS
            loss.fed_class_probs = _follow_names(loss.fed_class_probs, old_names, names,
                                                 UNKNOWN_CLASS_FREQUENCY)
    else:
        raise ValueError(f'model: its box head {type(head).__name__} is not a FVLMBBoxHead or '
                         'DeticBBoxHead; its class weights are unknown')


def _old_class_names(model: nn.Module, num_classes: int) -> Optional[tuple]:
    """``dataset_meta['classes']`` when it names the model's current classes (mmdet's
    ``init_detector`` puts COCO's 80 names on a model without checkpoint meta)."""
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    return tuple(classes) if classes is not None and len(classes) == num_classes else None


def set_vocabulary(model: nn.Module,
                   names: Sequence[str],
                   embeddings: Tensor,
                   novel: Sequence[str] = ()) -> None:
    """Make the detector classify regions into ``names``, in place.

    What the number C and the order of the classes determine is changed together, in every box
    head (each cascade stage's): the classifier's class embeddings and its novel-class mask, the
    head's ``num_classes`` (the background label C), and the classification loss's per-class
    numbers, as the head derives them when built: F-VLM's cross-entropy weights (1 per class,
    then ``background_weight``); Detic's and BARON's sigmoid class weights (1 for base,
    ``novel_class_weight`` for novel classes) and, with the federated loss, its class
    frequencies, which follow the names of ``dataset_meta['classes']`` (a name not among them,
    or every name when they do not name the current classes, gets
    :data:`UNKNOWN_CLASS_FREQUENCY`). ``model.dataset_meta['classes']`` becomes ``names`` (its
    old ``'palette'`` is dropped). The novel mask is what the heads score novel classes by:
    F-VLM's novel VLM weight ``novel_beta`` instead of ``base_alpha`` in the score fusion
    (:func:`mmclim.models.roi_heads.fvlm_scores.fvlm_fuse_scores`); Detic and BARON score every
    class alike at test time (the mask weighs their training loss). The learned weights are
    kept: labels are indices into ``names``.

    Args:
        model (nn.Module): A built FVLM, DeticDetector or BaronDetector.
        names (Sequence[str]): C distinct, non-empty class names, in label order.
        embeddings (Tensor): Their embeddings (:func:`embed_vocabulary`), shape (C, D); rows
            are L2-normalised here.
        novel (Sequence[str]): The names among ``names`` to score as novel classes. Defaults
            to () (all base).

    Raises:
        ValueError: The model is not supported, or an argument does not fit (named in the
            message).
    """
    heads = _bbox_heads(model)
    names = _check_names(names, novel)
    embed_dim = _embedding_size(model)
    if embeddings.shape != (len(names), embed_dim):
        tower = text_tower(model)
        made_by = 'its text tower' if tower is None else repr(tower.model_name)
        raise ValueError(f'embeddings: expected shape ({len(names)}, {embed_dim}) (one row per '
                         f'name, of the size of the class embeddings, made by {made_by}), got '
                         f'{tuple(embeddings.shape)}')
    old_names = _old_class_names(model, heads[0].num_classes)
    novel = set(novel)
    novel_mask = torch.tensor([name in novel for name in names], dtype=torch.bool)
    embeddings = F.normalize(embeddings.detach().float(), dim=-1)
    for head in heads:
        classifier = head.classifier
        device = classifier.class_embeddings.device
        classifier.class_embeddings = embeddings.to(device)
        classifier.novel_mask = novel_mask.to(device)
        head.num_classes = len(names)
        _set_class_weights(head, novel_mask, old_names, names)
    meta = dict(getattr(model, 'dataset_meta', None) or {})
    meta.pop('palette', None)
    meta['classes'] = tuple(names)
    model.dataset_meta = meta
