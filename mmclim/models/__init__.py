# Copyright (c) mmclim contributors. All rights reserved.
from . import backbones, dense_heads, detectors, losses, necks, pretrainers, roi_heads, utils

__all__ = [
    'backbones', 'dense_heads', 'detectors', 'losses', 'necks', 'pretrainers', 'roi_heads', 'utils'
]
