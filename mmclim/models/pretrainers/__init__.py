# Copyright (c) mmclim contributors. All rights reserved.
from .clim_clip import CLIMCLIP

__all__ = ['CLIMCLIP']
