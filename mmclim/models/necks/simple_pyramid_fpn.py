# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Sequence

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor, nn

# Detector strides of the four maps fed to the FPN (F-VLM, ViTDet's simple feature pyramid).
PYRAMID_STRIDES = (4, 8, 16, 32)
# The official CLIPViT's "interpolate" layers (ovdet/ovdet/models/backbones/clip_vit.py) upsample
# by 2 with ConvTranspose2d(width, width, kernel_size=2, stride=2), channels kept, and
# downsample by 2 with MaxPool2d(kernel_size=2, stride=2).
RESCALE_FACTOR = 2
# Between two consecutive upsamplings: norm_cfg's layer, then GELU (official clip_vit.py).
DEFAULT_ACT_CFG = dict(type='GELU')


def _power_of_two(value: int) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


@MODELS.register_module()
class SimplePyramidFPN(BaseModule):
    """F-VLM's trainable neck: each backbone map rescaled to its detector stride, then an FPN.

    As the official CLIM code's F-VLM (the ``interpolate1-4`` layers of its ``CLIPViT``, then the
    config's neck): a map of stride s_in becomes stride s_out by k = log2(s_in / s_out)
    transposed convolutions of kernel 2 and stride 2 keeping the channels, with ``norm_cfg``'s
    layer and GELU between consecutive ones (one upsampling: no normalisation); by a
    (s_out / s_in) max-pool; or is kept as it is. For ViT-B/16 (stride 16) and out strides
    (4, 8, 16, 32): two deconvolutions, one, identity and a 2x max-pool, 768 channels each. For a
    ResNet's C2-C5, every rescaling is the identity: the neck is the plain FPN. The rescaled
    maps feed ``fpn`` (mmdet's ``FPN`` or ``NASFPN``), whose ``in_channels`` are filled in here.

    ``in_channels`` and ``in_strides`` are the backbone's (``FVLM`` fills them in from the built
    backbone, so configs never type them).

    Args:
        in_channels (Sequence[int]): Channels of each input map.
        in_strides (Sequence[int]): Stride of each input map, powers of two.
        fpn (dict): Config of the neck taking the rescaled maps, without ``in_channels``, e.g.
            ``dict(type='FPN', out_channels=256, num_outs=5)``.
        out_strides (Sequence[int]): The stride each input map is rescaled to, one per map,
            powers of two. Defaults to (4, 8, 16, 32).
        norm_cfg (dict, optional): Normalisation between consecutive transposed convolutions;
            None for none. Defaults to None.
        act_cfg (dict): Activation after that normalisation. Defaults to ``dict(type='GELU')``.
        init_cfg (dict or List[dict], optional): mmengine initialisation config of the
            rescaling layers (None: PyTorch's defaults, as the official code); ``fpn`` has its
            own. Defaults to None.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 in_strides: Sequence[int],
                 fpn: ConfigType,
                 out_strides: Sequence[int] = PYRAMID_STRIDES,
                 norm_cfg: OptConfigType = None,
                 act_cfg: ConfigType = DEFAULT_ACT_CFG,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        in_channels, in_strides, out_strides = (tuple(values) for values in
                                                (in_channels, in_strides, out_strides))
        if not out_strides or not len(in_channels) == len(in_strides) == len(out_strides):
            raise ValueError(f'{name}: expected one in_channels, in_strides and out_strides entry '
                             f'per map, got {in_channels}, {in_strides} and {out_strides}')
        if not all(_power_of_two(stride) for stride in in_strides + out_strides):
            raise ValueError(f'{name}.in_strides and out_strides: expected powers of two, got '
                             f'{in_strides} and {out_strides}')
        if 'in_channels' in fpn:
            raise ValueError(f'{name}.fpn: expected no in_channels (they are the input maps\' '
                             f'channels), got {fpn["in_channels"]}')
        self.in_strides = in_strides
        self.out_strides = out_strides
        self.rescales = nn.ModuleList(
            self._rescale(channels, in_stride, out_stride, norm_cfg, act_cfg)
            for channels, in_stride, out_stride in zip(in_channels, in_strides, out_strides))
        self.fpn = MODELS.build(dict(fpn, in_channels=list(in_channels)))

    @staticmethod
    def _rescale(channels: int, in_stride: int, out_stride: int, norm_cfg: OptConfigType,
                 act_cfg: ConfigType) -> nn.Module:
        """Layers taking a map of ``channels`` from ``in_stride`` to ``out_stride``."""
        if out_stride > in_stride:
            return nn.MaxPool2d(kernel_size=out_stride // in_stride, stride=out_stride // in_stride)
        layers: List[nn.Module] = []
        for index in range((in_stride // out_stride).bit_length() - 1):
            if index:
                if norm_cfg is not None:
                    layers.append(build_norm_layer(norm_cfg, channels)[1])
                layers.append(build_activation_layer(act_cfg))
            layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=RESCALE_FACTOR,
                                             stride=RESCALE_FACTOR))
        return nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, inputs: Sequence[Tensor]) -> tuple:
        """Rescale each map to its stride and run the FPN.

        Args:
            inputs (Sequence[Tensor]): One map per out stride, map i of shape
                (B, in_channels[i], H/in_strides[i], W/in_strides[i]).

        Returns:
            tuple: The outputs of ``fpn``; for mmdet's ``FPN``, maps of shape
            (B, out_channels, H/s, W/s) for s in ``out_strides`` and then the extra levels.
        """
        if len(inputs) != len(self.rescales):
            raise ValueError(f'inputs: expected {len(self.rescales)} maps (one per out stride '
                             f'{self.out_strides}), got {len(inputs)}')
        return self.fpn(tuple(rescale(x) for rescale, x in zip(self.rescales, inputs)))
