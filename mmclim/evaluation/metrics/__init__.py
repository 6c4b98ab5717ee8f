# Copyright (c) mmclim contributors. All rights reserved.
from .fast_lvis_metric import FastLVISMetric
from .ov_coco_metric import OVCocoSplitMetric
from .prompt_templates import (ENSEMBLE_TEMPLATES, PROMPT_TEMPLATES, SINGLE_TEMPLATES,
                               get_prompt_templates)
from .region_classification_metric import RegionClassificationMetric
from .text_embeddings import (BACKGROUND_CLASS_NAME, build_prompts, clean_class_name,
                              compute_text_embeddings, load_class_names)

__all__ = [
    'FastLVISMetric', 'OVCocoSplitMetric', 'RegionClassificationMetric', 'PROMPT_TEMPLATES',
    'SINGLE_TEMPLATES', 'ENSEMBLE_TEMPLATES', 'get_prompt_templates', 'BACKGROUND_CLASS_NAME',
    'build_prompts', 'clean_class_name', 'compute_text_embeddings', 'load_class_names'
]
