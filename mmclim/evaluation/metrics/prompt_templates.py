# Copyright (c) mmclim contributors. All rights reserved.
"""Prompt-template sets that turn a class name into CLIP text prompts.

A set is its templates plus the rule that puts a class name in them (:class:`PromptSet`). Each
template holds one ``{}`` for the class name and may hold ``{article}``, the name's indefinite
article.

- ``'single'``: ``'a photo of a {}.'``.
- ``'detic'``: ``'a {}'``, the one prompt of Detic's class embeddings (``lvis_v1_clip_a+cname``:
  "a" followed by the class name).
- ``'ensemble'``: the prompt ensembling of CLIP (Radford et al. 2021, Sec. 3.1.4): generic photo
  and scene descriptions, written for this project, whose text embeddings are averaged per
  class. They use the article "a" whatever the name's first letter, as CLIP's own templates do.
  Class names are put in as they are.
- ``'vild'``: the 63 prompts of ViLD (Gu et al. 2022), as CLIM's official
  ``tools/generate_text_embeddings.py`` (``multiple_templates``, ``article``,
  ``processed_name``) builds them for its region-classification class embeddings (CLIM,
  Table 5): the article from the name as given, the name with ``/`` read as "or", lower-cased
  and without trailing dots, and "This is " before every prompt that starts with "a" or "the".
- ``'regionclip'``: the 81 prompts with which RegionCLIP (Zhong et al. 2022) embeds its concept
  pool (official ``tools/extract_concept_features.py``): ``'{}.'`` and CLIP's 80 ImageNet
  templates (Radford et al. 2021), whose embeddings are averaged per concept. Names are put in
  as they are (the official code also drops commas and reads "+" as a space, which the concept
  names of :mod:`mmclim.datasets.concept_pool` never hold).
"""
from dataclasses import dataclass
from string import Formatter
from typing import Callable, Dict, List, Tuple

from mmclim.datasets.toy_shapes import TOY_UNSEEN_PROMPT_TEMPLATES

NAME_FIELD = ''  # the positional field ``{}``
ARTICLE_FIELD = 'article'
# ViLD's article(): "an" when the name's first character is one of these (case-sensitive: the
# official code tests the name before lower-casing it), else "a".
ARTICLE_VOWELS = 'aeiou'
# ViLD: prompts that start with "a" (so also "an") or "the" get this prefix; "There is ..." and
# "itap of ..." do not.
THIS_IS_PREFIX = 'This is '
THIS_IS_STARTS = ('a', 'the')

SINGLE_TEMPLATES = ('a photo of a {}.', )
DETIC_TEMPLATES = ('a {}', )

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

# ViLD's public prompt strings (tensorflow/tpu models/official/detection/projects/vild), in the
# order of wusize/CLIM tools/generate_text_embeddings.py ``multiple_templates`` (lines 25-101).
VILD_TEMPLATES = (
    'There is {article} {} in the scene.',
    'There is the {} in the scene.',
    'a photo of {article} {} in the scene.',
    'a photo of the {} in the scene.',
    'a photo of one {} in the scene.',
    'itap of {article} {}.',
    'itap of my {}.',  # itap: I took a picture of
    'itap of the {}.',
    'a photo of {article} {}.',
    'a photo of my {}.',
    'a photo of the {}.',
    'a photo of one {}.',
    'a photo of many {}.',
    'a good photo of {article} {}.',
    'a good photo of the {}.',
    'a bad photo of {article} {}.',
    'a bad photo of the {}.',
    'a photo of a nice {}.',
    'a photo of the nice {}.',
    'a photo of a cool {}.',
    'a photo of the cool {}.',
    'a photo of a weird {}.',
    'a photo of the weird {}.',
    'a photo of a small {}.',
    'a photo of the small {}.',
    'a photo of a large {}.',
    'a photo of the large {}.',
    'a photo of a clean {}.',
    'a photo of the clean {}.',
    'a photo of a dirty {}.',
    'a photo of the dirty {}.',
    'a bright photo of {article} {}.',
    'a bright photo of the {}.',
    'a dark photo of {article} {}.',
    'a dark photo of the {}.',
    'a photo of a hard to see {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of {article} {}.',
    'a low resolution photo of the {}.',
    'a cropped photo of {article} {}.',
    'a cropped photo of the {}.',
    'a close-up photo of {article} {}.',
    'a close-up photo of the {}.',
    'a jpeg corrupted photo of {article} {}.',
    'a jpeg corrupted photo of the {}.',
    'a blurry photo of {article} {}.',
    'a blurry photo of the {}.',
    'a pixelated photo of {article} {}.',
    'a pixelated photo of the {}.',
    'a black and white photo of the {}.',
    'a black and white photo of {article} {}.',
    'a plastic {}.',
    'the plastic {}.',
    'a toy {}.',
    'the toy {}.',
    'a plushie {}.',
    'the plushie {}.',
    'a cartoon {}.',
    'the cartoon {}.',
    'an embroidered {}.',
    'the embroidered {}.',
    'a painting of the {}.',
    'a painting of a {}.',
)

# RegionCLIP's concept prompts, in the order of microsoft/RegionCLIP
# detectron2/data/datasets/clip_prompt_utils.py ``get_prompt_templates`` (used by
# ``pre_tokenize`` in tools/extract_concept_features.py): the bare name with a full stop, then
# the 80 ImageNet templates of CLIP (open_clip ``OPENAI_IMAGENET_TEMPLATES``) with
# 'a photo of a {}.' moved to the front. "a origami" and "a embroidered" are CLIP's wording.
REGIONCLIP_TEMPLATES = (
    '{}.',
    'a photo of a {}.',
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)


def indefinite_article(name: str) -> str:
    """ViLD's article of a class name: ``'an'`` if its first character is a lower-case vowel.

    Args:
        name (str): The class name as given (before any lower-casing), e.g. ``'apple'``.

    Returns:
        str: ``'an'`` or ``'a'``.
    """
    return 'an' if name[:1] and name[0] in ARTICLE_VOWELS else 'a'


def name_as_is(name: str) -> str:
    """The class name unchanged (the ``'single'`` and ``'ensemble'`` sets)."""
    return name


def vild_class_name(name: str) -> str:
    """A class name as ViLD's prompts hold it (official ``processed_name(name, rm_dot=True)``).

    Args:
        name (str): E.g. ``'Cup/Mug.'`` or ``'traffic_light'``.

    Returns:
        str: Underscores as spaces, ``/`` as " or ", lower case, trailing dots removed, e.g.
        ``'cup or mug'``, ``'traffic light'``.
    """
    return name.replace('_', ' ').replace('/', ' or ').lower().rstrip('.')


@dataclass(frozen=True)
class PromptSet:
    """Prompt templates and the rule that puts a class name in them.

    Args:
        templates (tuple[str, ...]): T templates, each with one ``{}`` (the processed name) and
            any number of ``{article}`` (:func:`indefinite_article` of the name as given).
        name_rule (Callable[[str], str]): Turns a class name into the text put in ``{}``.
            Defaults to :func:`name_as_is`.
        this_is_prefix (bool): Prefix :data:`THIS_IS_PREFIX` to every prompt that starts with
            one of :data:`THIS_IS_STARTS` (ViLD). Defaults to False.
    """

    templates: Tuple[str, ...]
    name_rule: Callable[[str], str] = name_as_is
    this_is_prefix: bool = False

    def __post_init__(self) -> None:
        templates = tuple(self.templates)
        if not templates:
            raise ValueError('templates: expected at least one template, got none')
        for template in templates:
            if not isinstance(template, str):
                raise ValueError(f'templates: expected strings, got {template!r}')
            fields = [field for _, field, _, _ in Formatter().parse(template)
                      if field is not None]
            if fields.count(NAME_FIELD) != 1 or set(fields) - {NAME_FIELD, ARTICLE_FIELD}:
                raise ValueError(f"templates: expected one '{{}}' in each template (and "
                                 f"optionally '{{{ARTICLE_FIELD}}}'), got {template!r}")
        object.__setattr__(self, 'templates', templates)

    def __len__(self) -> int:
        return len(self.templates)

    def prompts(self, class_name: str) -> List[str]:
        """The T prompts of one class, in template order.

        Args:
            class_name (str): The class name as given (e.g. from ``load_class_names``).

        Returns:
            List[str]: T prompts.
        """
        name = self.name_rule(class_name)
        article = indefinite_article(class_name)
        texts = [template.format(name, **{ARTICLE_FIELD: article})
                 for template in self.templates]
        if self.this_is_prefix:
            texts = [THIS_IS_PREFIX + text if text.startswith(THIS_IS_STARTS) else text
                     for text in texts]
        return texts


PROMPT_SETS: Dict[str, PromptSet] = dict(
    single=PromptSet(SINGLE_TEMPLATES),
    detic=PromptSet(DETIC_TEMPLATES),
    ensemble=PromptSet(ENSEMBLE_TEMPLATES),
    vild=PromptSet(VILD_TEMPLATES, name_rule=vild_class_name, this_is_prefix=True),
    regionclip=PromptSet(REGIONCLIP_TEMPLATES),
    # The toy data's zero-shot vocabulary in a wording its captions never use (tools/demo.sh).
    **{'toy-unseen': PromptSet(TOY_UNSEEN_PROMPT_TEMPLATES)})
# The templates of each set (without their name rules): use :func:`get_prompt_set` to build
# prompts, so that a set's rules come with it.
PROMPT_TEMPLATES: Dict[str, Tuple[str, ...]] = {
    name: prompt_set.templates for name, prompt_set in PROMPT_SETS.items()}


def get_prompt_set(name: str) -> PromptSet:
    """A named set of :data:`PROMPT_SETS`: its templates and name rules.

    Args:
        name (str): ``'single'``, ``'detic'``, ``'ensemble'``, ``'vild'``, ``'regionclip'`` or
            ``'toy-unseen'``.

    Returns:
        PromptSet: The set.
    """
    if name not in PROMPT_SETS:
        raise ValueError(f'template set: expected one of {sorted(PROMPT_SETS)}, got {name!r}')
    return PROMPT_SETS[name]


def get_prompt_templates(name: str) -> Tuple[str, ...]:
    """The templates of a named set of :data:`PROMPT_TEMPLATES`.

    The ``'vild'`` templates alone lack the set's name processing and "This is " prefix: pass
    :func:`get_prompt_set` to ``compute_text_embeddings`` to get the official prompts.

    Args:
        name (str): ``'single'`` (``'a photo of a {}.'``), ``'ensemble'`` or ``'vild'``.

    Returns:
        Tuple[str, ...]: Templates, each with one ``{}`` for the class name.
    """
    return get_prompt_set(name).templates
