# Copyright (c) mmclim contributors. All rights reserved.
from .baron_bbox_head import BaronBBoxHead
from .detic_bbox_head import DeticBBoxHead
from .detic_cascade_roi_head import DeticCascadeRoIHead
from .detic_roi_head import DeticRoIHead
from .fvlm_bbox_head import FVLMBBoxHead
from .fvlm_roi_head import FVLMRoIHead
from .fvlm_scores import cosine_logits, fvlm_fuse_scores
from .pseudo_word_classifier import PseudoWordClassifier
from .sigmoid_text_classifier import SigmoidTextClassifier
from .text_embedding_classifier import TextEmbeddingClassifier

__all__ = [
    'BaronBBoxHead', 'DeticBBoxHead', 'DeticCascadeRoIHead', 'DeticRoIHead', 'FVLMBBoxHead',
    'FVLMRoIHead', 'PseudoWordClassifier', 'SigmoidTextClassifier', 'TextEmbeddingClassifier',
    'cosine_logits', 'fvlm_fuse_scores'
]
