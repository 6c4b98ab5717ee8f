# Copyright (c) mmclim contributors. All rights reserved.
from .detic_bbox_head import DeticBBoxHead
from .detic_cascade_roi_head import DeticCascadeRoIHead
from .detic_roi_head import DeticRoIHead
from .fvlm_bbox_head import FVLMBBoxHead
from .fvlm_roi_head import FVLMRoIHead
from .fvlm_scores import cosine_logits, fvlm_fuse_scores
from .sigmoid_text_classifier import SigmoidTextClassifier
from .text_embedding_classifier import TextEmbeddingClassifier

__all__ = [
    'DeticBBoxHead', 'DeticCascadeRoIHead', 'DeticRoIHead', 'FVLMBBoxHead', 'SigmoidTextClassifier',
    'FVLMRoIHead', 'TextEmbeddingClassifier', 'cosine_logits', 'fvlm_fuse_scores'
]
