# Copyright (c) mmclim contributors. All rights reserved.
from .fast_lvis_metric import FastLVISMetric
from .ov_coco_metric import OVCocoSplitMetric
from .prompt_templates import (ENSEMBLE_TEMPLATES, PROMPT_SETS, PROMPT_TEMPLATES, SINGLE_TEMPLATES,
                               VILD_TEMPLATES, PromptSet, get_prompt_set, get_prompt_templates,
                               indefinite_article, vild_class_name)
from .region_classification_metric import RegionClassificationMetric
from .text_embeddings import (BACKGROUND_CLASS_NAME, as_prompt_set, build_prompts, clean_class_name,
                              compute_text_embeddings, load_class_names)

__all__ = [
    'FastLVISMetric', 'OVCocoSplitMetric', 'RegionClassificationMetric', 'PROMPT_SETS',
    'PROMPT_TEMPLATES', 'SINGLE_TEMPLATES', 'ENSEMBLE_TEMPLATES', 'VILD_TEMPLATES', 'PromptSet',
    'get_prompt_set', 'get_prompt_templates', 'indefinite_article', 'vild_class_name',
    'BACKGROUND_CLASS_NAME', 'as_prompt_set', 'build_prompts', 'clean_class_name',
    'compute_text_embeddings', 'load_class_names'
]
