# Copyright (c) mmclim contributors. All rights reserved.
from .centernet_rpn_head import CenterNetRPNHead
from .norm_rpn_head import NormRPNHead

__all__ = ['CenterNetRPNHead', 'NormRPNHead']
