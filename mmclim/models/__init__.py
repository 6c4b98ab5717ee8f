# Copyright (c) mmclim contributors. All rights reserved.
from . import backbones, detectors, losses, necks, pretrainers, roi_heads, utils

__all__ = ['backbones', 'detectors', 'losses', 'necks', 'pretrainers', 'roi_heads', 'utils']
