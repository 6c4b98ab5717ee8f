# Copyright (c) mmclim contributors. All rights reserved.
from .detic import DeticDetector
from .fvlm import FVLM

__all__ = ['DeticDetector', 'FVLM']
