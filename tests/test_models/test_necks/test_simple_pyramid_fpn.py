# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch
from mmdet.registry import MODELS
from torch import nn

from mmclim.models.necks import SimplePyramidFPN

FPN = dict(type='FPN', out_channels=16, num_outs=5)


def _neck(in_channels: int, in_stride: int, **kwargs) -> SimplePyramidFPN:
    torch.manual_seed(0)
    return MODELS.build(dict(type='SimplePyramidFPN', in_channels=in_channels,
                             in_stride=in_stride, fpn=FPN, **kwargs))


@pytest.mark.parametrize('in_stride', [16, 8])
def test_outputs_have_strides_4_to_32_then_the_extra_level(in_stride: int) -> None:
    neck = _neck(64, in_stride)
    height, width = 128, 64
    maps = tuple(torch.randn(2, 64, height // in_stride, width // in_stride) for _ in range(4))
    outs = neck(maps)
    assert len(outs) == 5
    for out, stride in zip(outs, (4, 8, 16, 32, 64)):
        assert tuple(out.shape) == (2, 16, height // stride, width // stride)


def test_vitdet_layers_for_patch_16() -> None:
    """Two deconvolutions (halving channels, norm and GELU between), one, identity, max-pool."""
    neck = _neck(64, 16)
    up4, up2, same, down2 = neck.rescales
    deconvs = [m for m in up4 if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels, d.stride) for d in deconvs] == [
        (64, 32, (2, 2)), (32, 16, (2, 2))]
    assert [type(m).__name__ for m in up4] == ['ConvTranspose2d', 'GroupNorm', 'GELU',
                                               'ConvTranspose2d']
    assert [type(m).__name__ for m in up2] == ['ConvTranspose2d']
    assert isinstance(same, nn.Identity)
    assert isinstance(down2, nn.MaxPool2d) and down2.kernel_size == 2
    assert neck.fpn.in_channels == [16, 32, 64, 64]


def test_all_layers_train() -> None:
    neck = _neck(64, 16)
    maps = tuple(torch.randn(1, 64, 4, 4) for _ in range(4))
    sum(out.sum() for out in neck(maps)).backward()
    assert all(p.grad is not None for p in neck.parameters())


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_stride=12), r'powers of two .* in_stride=12'),
    (dict(out_strides=(4, 6)), r'powers of two .* out_strides=\(4, 6\)'),
    (dict(in_channels=6, in_stride=16), r'in_channels: expected a multiple of 4 .* got 6'),
    (dict(fpn=dict(FPN, in_channels=[1, 2, 3, 4])), r'fpn: expected no in_channels'),
])
def test_rejects_bad_config(kwargs: dict, match: str) -> None:
    cfg = dict(dict(in_channels=64, in_stride=16, fpn=FPN), **kwargs)
    with pytest.raises(ValueError, match=match):
        SimplePyramidFPN(**cfg)


def test_rejects_wrong_number_of_maps() -> None:
    with pytest.raises(ValueError, match=r'expected 4 maps .* got 5'):
        _neck(64, 16)(tuple(torch.randn(1, 64, 4, 4) for _ in range(5)))
