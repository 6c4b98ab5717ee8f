# Copyright (c) mmclim contributors. All rights reserved.
from .simple_pyramid_fpn import SimplePyramidFPN

__all__ = ['SimplePyramidFPN']
