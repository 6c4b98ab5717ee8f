# Copyright (c) mmclim contributors. All rights reserved.
"""Prompt-template sets that turn a class name into CLIP text prompts.

Each template holds one ``{}`` for the class name. The ``'ensemble'`` set follows the prompt
ensembling of CLIP (Radford et al. 2021, Sec. 3.1.4): generic photo and scene descriptions,
written for this project, whose text embeddings are averaged per class. Templates use the
article "a" whatever the name's first letter, as CLIP's own templates do.
"""
from typing import Dict, Tuple

SINGLE_TEMPLATES = ('a photo of a {}.', )

ENSEMBLE_TEMPLATES = (
    'a photo of a {}.',
    'a photo of the {}.',
    'a photo of one {}.',
    'a photo of a small {}.',
    'a photo of a large {}.',
    'a cropped photo of a {}.',
    'a close-up photo of a {}.',
    'a bright photo of a {}.',
    'a dark photo of a {}.',
    'a blurry photo of a {}.',
    'a low resolution photo of a {}.',
    'a good photo of a {}.',
    'a photo of a {} in the scene.',
    'there is a {} in the scene.',
    'there is the {} in the scene.',
    'itap of a {}.',
)

PROMPT_TEMPLATES: Dict[str, Tuple[str, ...]] = dict(
    single=SINGLE_TEMPLATES, ensemble=ENSEMBLE_TEMPLATES)


def get_prompt_templates(name: str) -> Tuple[str, ...]:
    """The templates of a named set of :data:`PROMPT_TEMPLATES`.

    Args:
        name (str): ``'single'`` (``'a photo of a {}.'``) or ``'ensemble'``.

    Returns:
        Tuple[str, ...]: Templates, each with one ``{}`` for the class name.
    """
    if name not in PROMPT_TEMPLATES:
        raise ValueError(f'template set: expected one of {sorted(PROMPT_TEMPLATES)}, '
                         f'got {name!r}')
    return PROMPT_TEMPLATES[name]
