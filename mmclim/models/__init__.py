# Copyright (c) mmclim contributors. All rights reserved.
from . import backbones, losses, pretrainers, utils

__all__ = ['backbones', 'losses', 'pretrainers', 'utils']
