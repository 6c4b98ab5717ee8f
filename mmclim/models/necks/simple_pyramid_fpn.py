# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Sequence, Tuple

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor, nn

# Detector strides of the four maps, ViTDet's simple feature pyramid (Li et al., ECCV 2022).
PYRAMID_STRIDES = (4, 8, 16, 32)
# ViTDet upsamples with 2x2 transposed convolutions of stride 2, halving the channels each time.
DECONV_SCALE = 2
# GroupNorm with one group is LayerNorm over (C, H, W) of conv features (Wu & He, "Group
# Normalization", 2018); ViTDet normalises each position's channels instead.
DEFAULT_NORM_CFG = dict(type='GN', num_groups=1)
DEFAULT_ACT_CFG = dict(type='GELU')  # ViTDet's activation between the two deconvolutions


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@MODELS.register_module()
class SimplePyramidFPN(BaseModule):
    """ViTDet's simple feature pyramid on patch-token maps of a plain ViT, then an FPN neck.

    Each input map (stride p, the patch size) is rescaled to one detector stride of
    ``out_strides``: up by 2^k with k 2x2 stride-2 transposed convolutions (channels halved by
    each, LayerNorm-like normalisation and GELU in between), kept as it is, or down by 2^k with
    a 2^k max-pool. For p = 16 and strides (4, 8, 16, 32): two deconvolutions, one, identity and
    a 2x max-pool. The rescaled maps feed ``fpn`` (e.g. mmdet's ``FPN``), whose ``in_channels``
    are filled in here.

    These layers have weights, so they live here in the trainable neck rather than in the frozen
    backbone (:class:`~mmclim.models.backbones.CLIPViTPyramidBackbone`), which has none.

    Args:
        in_channels (int): Channels of every input map (the ViT width).
        in_stride (int): Stride of every input map (the ViT patch size), a power of two.
        fpn (dict): Config of the neck taking the rescaled maps, without ``in_channels``, e.g.
            ``dict(type='FPN', out_channels=256, num_outs=5)``.
        out_strides (Sequence[int]): The stride each input map is rescaled to, one per map, each
            a power of two. Defaults to (4, 8, 16, 32).
        norm_cfg (dict): Normalisation between consecutive transposed convolutions. Defaults to
            ``dict(type='GN', num_groups=1)``.
        act_cfg (dict): Activation after that normalisation. Defaults to ``dict(type='GELU')``.
        init_cfg (dict or List[dict], optional): mmengine initialisation config of the
            rescaling layers; ``fpn`` has its own. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 in_stride: int,
                 fpn: ConfigType,
                 out_strides: Sequence[int] = PYRAMID_STRIDES,
                 norm_cfg: ConfigType = DEFAULT_NORM_CFG,
                 act_cfg: ConfigType = DEFAULT_ACT_CFG,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        strides = (in_stride, *out_strides)
        if not out_strides or not all(isinstance(s, int) and _power_of_two(s) for s in strides):
            raise ValueError(f'{name}.in_stride and out_strides: expected powers of two (and at '
                             f'least one out stride), got in_stride={in_stride}, '
                             f'out_strides={tuple(out_strides)}')
        if 'in_channels' in fpn:
            raise ValueError(f'{name}.fpn: expected no in_channels (they follow from in_channels '
                             f'and the rescaling), got {fpn["in_channels"]}')
        self.in_stride = in_stride
        self.out_strides = tuple(out_strides)
        self.rescales = nn.ModuleList()
        fpn_in_channels: List[int] = []
        for out_stride in self.out_strides:
            rescale, channels = self._build_rescale(in_channels, out_stride, norm_cfg, act_cfg)
            self.rescales.append(rescale)
            fpn_in_channels.append(channels)
        self.fpn = MODELS.build(dict(fpn, in_channels=fpn_in_channels))

    def _build_rescale(self, channels: int, out_stride: int, norm_cfg: ConfigType,
                       act_cfg: ConfigType) -> Tuple[nn.Module, int]:
        """Layers taking a map of ``channels`` from ``in_stride`` to ``out_stride``, and their
        output channels."""
        if out_stride < self.in_stride:
            up = self.in_stride // out_stride
            num_deconvs = up.bit_length() - 1
            if channels % up:
                raise ValueError(f'{type(self).__name__}.in_channels: expected a multiple of '
                                 f'{up} to halve it {num_deconvs} times, got {channels}')
            layers: List[nn.Module] = []
            for index in range(num_deconvs):
                if index:
                    layers += [build_norm_layer(norm_cfg, channels)[1],
                               build_activation_layer(act_cfg)]
                layers.append(nn.ConvTranspose2d(channels, channels // DECONV_SCALE,
                                                 kernel_size=DECONV_SCALE, stride=DECONV_SCALE))
                channels //= DECONV_SCALE
            return nn.Sequential(*layers), channels
        if out_stride > self.in_stride:
            down = out_stride // self.in_stride
            return nn.MaxPool2d(kernel_size=down, stride=down), channels
        return nn.Identity(), channels

    def forward(self, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        """Rescale each map to its stride and run the FPN.

        Args:
            inputs (Tuple[Tensor, ...]): One map per out stride, each of shape
                (B, in_channels, H/p, W/p).

        Returns:
            Tuple[Tensor, ...]: The outputs of ``fpn``; for mmdet's ``FPN``, maps of shape
            (B, out_channels, H/s, W/s) for s in ``out_strides`` and then the extra levels.
        """
        if len(inputs) != len(self.rescales):
            raise ValueError(f'inputs: expected {len(self.rescales)} maps (one per out stride '
                             f'{self.out_strides}), got {len(inputs)}')
        return self.fpn(tuple(rescale(x) for rescale, x in zip(self.rescales, inputs)))
