# Copyright (c) mmclim contributors. All rights reserved.
from .fvlm_roi_head import FVLMRoIHead
from .fvlm_scores import fvlm_fuse_scores, vlm_region_scores
from .text_embedding_classifier import TextEmbeddingClassifier, load_text_embeddings

__all__ = [
    'FVLMRoIHead', 'TextEmbeddingClassifier', 'fvlm_fuse_scores', 'vlm_region_scores',
    'load_text_embeddings'
]
