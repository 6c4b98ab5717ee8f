# Copyright (c) mmclim contributors. All rights reserved.
from .clim_clip import CLIMCLIP
from .clip_pretrainer import CLIPPretrainer
from .region_clip import RegionCLIP

__all__ = ['CLIPPretrainer', 'CLIMCLIP', 'RegionCLIP']
