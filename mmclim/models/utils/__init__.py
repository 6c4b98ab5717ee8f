# Copyright (c) mmclim contributors. All rights reserved.
from .bag_of_regions import (BAG_SAMPLING_DEFAULTS, DEFAULT_MAX_PERMS, BoxPositionalEmbedding,
                             boxes_in_frame, drop_words, random_permutations, sample_bag,
                             sine_box_encoding)
from .batch_mosaic import BatchMosaic, batch_mosaic
from .box_pool import box_pool, boxes_to_rois, float32_maps
from .feature_queue import FeatureQueue
from .max_size_proposal import max_size_proposal
from .ops_fallback import install_ops_fallback, mmcv_has_kernels, torchvision_ops
from .pseudo_concepts import PseudoConcepts, pseudo_concept_labels

__all__ = [
    'BatchMosaic', 'batch_mosaic', 'box_pool', 'boxes_to_rois', 'float32_maps',
    'install_ops_fallback', 'mmcv_has_kernels', 'torchvision_ops', 'max_size_proposal',
    'BAG_SAMPLING_DEFAULTS', 'DEFAULT_MAX_PERMS', 'BoxPositionalEmbedding', 'drop_words',
    'boxes_in_frame', 'random_permutations', 'sample_bag', 'sine_box_encoding', 'FeatureQueue',
    'PseudoConcepts', 'pseudo_concept_labels'
]
