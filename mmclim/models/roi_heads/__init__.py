# Copyright (c) mmclim contributors. All rights reserved.
from .fvlm_bbox_head import FVLMBBoxHead
from .fvlm_roi_head import FVLMRoIHead
from .fvlm_scores import cosine_logits, fvlm_fuse_scores
from .text_embedding_classifier import TextEmbeddingClassifier

__all__ = [
    'FVLMBBoxHead', 'FVLMRoIHead', 'TextEmbeddingClassifier', 'cosine_logits', 'fvlm_fuse_scores'
]
