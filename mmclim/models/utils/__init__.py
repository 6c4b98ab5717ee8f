# Copyright (c) mmclim contributors. All rights reserved.
from .batch_mosaic import BatchMosaic, batch_mosaic
from .box_pool import box_pool, boxes_to_rois, float32_maps
from .max_size_proposal import max_size_proposal
from .ops_fallback import install_ops_fallback, mmcv_has_kernels, torchvision_ops

__all__ = [
    'BatchMosaic', 'batch_mosaic', 'box_pool', 'boxes_to_rois', 'float32_maps',
    'install_ops_fallback', 'mmcv_has_kernels', 'torchvision_ops', 'max_size_proposal'
]
