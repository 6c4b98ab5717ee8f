# Copyright (c) mmclim contributors. All rights reserved.
from .lvis_compat import patch_lvis_numpy_aliases

__all__ = ['patch_lvis_numpy_aliases']
