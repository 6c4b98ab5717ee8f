# Copyright (c) mmclim contributors. All rights reserved.
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType
from torch import nn


@MODELS.register_module()
class NormRPNHead(RPNHead):
    """mmdet's ``RPNHead`` with a normalisation layer in each of its stacked convolutions.

    mmdet's ``RPNHead(num_convs=N)`` stacks N 3x3 ``ConvModule`` layers with ReLU and no
    normalisation, and has no argument to add one. The official CLIM code's RN50x64 F-VLM config
    uses a ``CustomRPNHead(num_convs=2, norm_cfg=SyncBN)`` whose stacked convolutions carry the
    norm (``ovdet/ovdet/models/dense_heads/rpn_head.py``); this is that head: the same layers
    with ``norm_cfg``.

    Args:
        in_channels (int): Channels of the input maps.
        norm_cfg (dict): Normalisation of each stacked convolution, e.g. ``dict(type='SyncBN',
            requires_grad=True)``.
        num_convs (int): Stacked 3x3 convolutions, at least 2 (one convolution is mmdet's plain
            ``Conv2d``, without the norm, in the official head too). Defaults to 2.
        **kwargs: ``RPNHead`` arguments.
    """

    def __init__(self, in_channels: int, norm_cfg: ConfigType, num_convs: int = 2,
                 **kwargs) -> None:
        if num_convs < 2:
            raise ValueError(f'{type(self).__name__}.num_convs: expected at least 2 stacked '
                             f'convolutions to normalise, got {num_convs}; use RPNHead')
        self.norm_cfg = norm_cfg
        super().__init__(in_channels, num_convs=num_convs, **kwargs)

    def _init_layers(self) -> None:
        """``RPNHead``'s layers, the stacked convolutions with ``norm_cfg``."""
        super()._init_layers()
        self.rpn_conv = nn.Sequential(*(
            ConvModule(self.in_channels if index == 0 else self.feat_channels, self.feat_channels,
                       3, padding=1, norm_cfg=self.norm_cfg, inplace=False)
            for index in range(self.num_convs)))
