# Copyright (c) mmclim contributors. All rights reserved.
from .fvlm import FVLM

__all__ = ['FVLM']
