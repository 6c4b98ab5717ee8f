# Copyright (c) mmclim contributors. All rights reserved.
from . import backbones, losses, utils

__all__ = ['backbones', 'losses', 'utils']
