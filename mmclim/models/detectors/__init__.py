# Copyright (c) mmclim contributors. All rights reserved.
from .baron import BaronDetector
from .detic import DeticDetector
from .fvlm import FVLM

__all__ = ['BaronDetector', 'DeticDetector', 'FVLM']
