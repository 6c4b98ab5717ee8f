# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from torch import nn

from mmclim.models.necks import SimplePyramidFPN

FPN = dict(type='FPN', out_channels=16, num_outs=5)
BN = dict(type='BN', requires_grad=True)


def _neck(**kwargs) -> SimplePyramidFPN:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(dict(dict(type='SimplePyramidFPN', fpn=FPN), **kwargs))


def test_vit_b_layout_of_the_official_interpolate_layers() -> None:
    """Stride 16 to (4, 8, 16, 32): deconv, norm, GELU, deconv / deconv / identity / 2x max-pool,
    every layer keeping the channels (the official CLIPViT interpolate1-4)."""
    neck = _neck(in_channels=[8] * 4, in_strides=[16] * 4, norm_cfg=BN)
    up4, up2, same, down2 = neck.rescales
    assert [type(layer) for layer in up4] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.GELU,
                                              nn.ConvTranspose2d]
    for deconv in (up4[0], up4[3], up2[0]):
        assert (deconv.in_channels, deconv.out_channels) == (8, 8)
        assert deconv.kernel_size == deconv.stride == (2, 2)
    assert len(up2) == 1 and isinstance(same, nn.Identity)
    assert isinstance(down2, nn.MaxPool2d) and down2.kernel_size == down2.stride == 2
    assert [conv.conv.in_channels for conv in neck.fpn.lateral_convs] == [8] * 4
    maps = [torch.randn(2, 8, 4, 6) for _ in range(4)]
    outs = neck(maps)
    assert [tuple(out.shape[-2:]) for out in outs] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(out.shape[:2] == (2, 16) for out in outs)


def test_without_norm_cfg_only_the_activation_sits_between_the_deconvolutions() -> None:
    neck = _neck(in_channels=[8] * 4, in_strides=[16] * 4)
    layers = [type(layer) for layer in neck.rescales[0]]
    assert layers == [nn.ConvTranspose2d, nn.GELU, nn.ConvTranspose2d]


def test_deconvolution_places_each_cell_on_a_2x2_block() -> None:
    """A kernel-2 stride-2 transposed convolution of weight w and bias b maps cell v to the
    block v * w + b (hand-worked on one channel)."""
    neck = _neck(in_channels=[1], in_strides=[16], out_strides=[8],
                 fpn=dict(type='FPN', out_channels=4, num_outs=1))
    deconv = neck.rescales[0][0]
    with torch.no_grad():
        deconv.weight.copy_(torch.tensor([[[[1., 2.], [3., 4.]]]]))
        deconv.bias.fill_(0.5)
    x = torch.tensor([[[[1., -1.]]]])
    expected = torch.tensor([[[[1.5, 2.5, -0.5, -1.5], [3.5, 4.5, -2.5, -3.5]]]])
    torch.testing.assert_close(deconv(x), expected)


def test_resnet_strides_make_it_the_plain_fpn() -> None:
    """C2-C5 at their own strides: identities, so the output is mmdet's FPN's on the maps."""
    neck = _neck(in_channels=[4, 8, 16, 32], in_strides=[4, 8, 16, 32], norm_cfg=BN)
    assert all(isinstance(rescale, nn.Identity) for rescale in neck.rescales)
    fpn = MODELS.build(dict(FPN, in_channels=[4, 8, 16, 32]))
    fpn.load_state_dict(neck.fpn.state_dict())
    maps = [torch.randn(1, c, 64 // s, 64 // s) for c, s in ((4, 4), (8, 8), (16, 16), (32, 32))]
    for ours, theirs in zip(neck(maps), fpn(maps)):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=[8], in_strides=[16], out_strides=[4, 8]), 'one in_channels'),
    (dict(in_channels=[8], in_strides=[14], out_strides=[4]), 'powers of two'),
    (dict(in_channels=[8], in_strides=[16], out_strides=[4],
          fpn=dict(FPN, in_channels=[8])), 'fpn: expected no in_channels'),
])
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f'SimplePyramidFPN.*{match}'):
        _neck(**kwargs)


def test_wrong_number_of_maps() -> None:
    neck = _neck(in_channels=[8] * 4, in_strides=[16] * 4)
    with pytest.raises(ValueError, match='expected 4 maps'):
        neck([torch.randn(1, 8, 4, 4)] * 3)
