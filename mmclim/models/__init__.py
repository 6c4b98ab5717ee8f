# Copyright (c) mmclim contributors. All rights reserved.
from . import (backbones, data_preprocessors, dense_heads, detectors, losses, necks, pretrainers,
               roi_heads, utils)

__all__ = [
    'backbones', 'data_preprocessors', 'dense_heads', 'detectors', 'losses', 'necks', 'pretrainers',
    'roi_heads', 'utils'
]
