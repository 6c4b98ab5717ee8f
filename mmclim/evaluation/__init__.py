# Copyright (c) mmclim contributors. All rights reserved.
from . import functional, metrics
from .functional import LVISEvalResult, LVISGroundTruth, evaluate_lvis
from .lvis_compat import patch_lvis_numpy_aliases
from .metrics import (PROMPT_SETS, PROMPT_TEMPLATES, FastLVISMetric, RegionClassificationMetric,
                      compute_text_embeddings, get_prompt_set, get_prompt_templates,
                      load_class_names)

__all__ = [
    'functional', 'LVISEvalResult', 'LVISGroundTruth', 'evaluate_lvis', 'FastLVISMetric',
    'metrics', 'patch_lvis_numpy_aliases', 'RegionClassificationMetric', 'PROMPT_SETS',
    'PROMPT_TEMPLATES', 'compute_text_embeddings', 'get_prompt_set', 'get_prompt_templates',
    'load_class_names'
]
