# Copyright (c) mmclim contributors. All rights reserved.
import json
from pathlib import Path

import open_clip
import pytest
import torch
from mmdet.registry import MODELS
from torch import Tensor

from mmclim.models.backbones import MODEL_CONFIG_DIR, CLIPViTPyramidBackbone, resnet_dense_from_c5
from mmclim.models.backbones.clip_dense import resnet_dense_features

TOY_VIT = 'mmclim-toy-vit'  # 4 blocks, width 96, patch 8, embed_dim 64, native 64x64
TINY_VIT = 'mmclim-tiny-vit'  # 3 blocks, width 64, patch 16, embed_dim 32, native 224x224
TINY_RN = 'mmclim-tiny-rn'  # ModifiedResNet, width 16 (C2-C5: 64-512 channels), embed_dim 32


def _images(batch: int, height: int, width: int) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def _build(model_name: str, out_indices: tuple) -> CLIPViTPyramidBackbone:
    torch.manual_seed(0)
    return MODELS.build(dict(type='CLIPViTPyramidBackbone', model_name=model_name,
                             out_indices=out_indices))


@pytest.fixture(scope='module')
def toy_vit() -> CLIPViTPyramidBackbone:
    return _build(TOY_VIT, (0, 1, 2, 3))


@pytest.fixture(scope='module')
def tiny_rn() -> CLIPViTPyramidBackbone:
    return _build(TINY_RN, (1, 2, 3, 4))


def test_backbone_is_frozen_and_stays_in_eval_mode(toy_vit: CLIPViTPyramidBackbone,
                                                   tiny_rn: CLIPViTPyramidBackbone) -> None:
    for backbone in (toy_vit, tiny_rn):
        assert not any(p.requires_grad for p in backbone.parameters())
        backbone.train()
        assert not any(module.training for module in backbone.modules())
        images = _images(1, 64, 64).requires_grad_()
        assert not any(out.requires_grad for out in backbone(images))


@pytest.mark.parametrize('height,width', [(64, 64), (128, 96)])
def test_vit_maps_and_dense_map_shapes(toy_vit: CLIPViTPyramidBackbone, height: int,
                                       width: int) -> None:
    outs = toy_vit(_images(2, height, width))
    grid = (height // 8, width // 8)
    assert len(outs) == 5
    assert [tuple(out.shape) for out in outs[:4]] == [(2, 96, *grid)] * 4
    assert tuple(outs[4].shape) == (2, 64, *grid)
    assert toy_vit.out_channels == [96] * 4 and toy_vit.out_strides == [8] * 4
    assert toy_vit.dense_stride == 8 and toy_vit.embed_dim == 64


def test_vit_maps_are_open_clip_intermediates_at_native_size(
        toy_vit: CLIPViTPyramidBackbone) -> None:
    images = _images(2, 64, 64)
    upstream = toy_vit.visual.forward_intermediates(images, indices=[0, 1, 2, 3],
                                                    intermediates_only=True, output_fmt='NCHW')
    for ours, theirs in zip(toy_vit(images)[:4], upstream['image_intermediates']):
        torch.testing.assert_close(ours, theirs)


def test_vit_dense_map_is_open_clip_region_dense_features(
        toy_vit: CLIPViTPyramidBackbone) -> None:
    """At a non-native size too: the positional embedding is interpolated the same way."""
    images = _images(2, 96, 128)
    torch.testing.assert_close(toy_vit(images)[-1], toy_vit.vlm.dense_features(images))


def test_vit_repeated_out_indices_and_one_block_ahead_of_dense() -> None:
    """ViTDet-style repeats, and a last index that is also the dense map's input block."""
    backbone = _build(TINY_VIT, (1, 1, 2, 2))
    images = _images(1, 224, 224)
    outs = backbone(images)
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.equal(outs[1], outs[2])
    torch.testing.assert_close(outs[-1], backbone.vlm.dense_features(images))


def test_one_block_vit_dense_map_from_the_embedded_tokens(tmp_path: Path) -> None:
    config = json.loads((MODEL_CONFIG_DIR / f'{TINY_VIT}.json').read_text())
    config['vision_cfg']['layers'] = 1
    (tmp_path / 'mmclim-one-block-vit.json').write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    backbone = _build('mmclim-one-block-vit', (0, ))
    images = _images(1, 64, 96)
    outs = backbone(images)
    assert [tuple(out.shape) for out in outs] == [(1, 64, 4, 6), (1, 32, 4, 6)]
    torch.testing.assert_close(outs[-1], backbone.vlm.dense_features(images))


def test_resnet_stages_and_dense_map(tiny_rn: CLIPViTPyramidBackbone) -> None:
    images = _images(2, 128, 96)
    outs = tiny_rn(images)
    assert tiny_rn.out_channels == [64, 128, 256, 512]
    assert tiny_rn.out_strides == [4, 8, 16, 32] and tiny_rn.dense_stride == 32
    for out, channels, stride in zip(outs[:4], tiny_rn.out_channels, tiny_rn.out_strides):
        assert tuple(out.shape) == (2, channels, 128 // stride, 96 // stride)
    torch.testing.assert_close(outs[-1], resnet_dense_features(tiny_rn.visual, images))
    torch.testing.assert_close(resnet_dense_from_c5(tiny_rn.visual, outs[3]), outs[-1])


def test_init_weights_keeps_the_clip_weights(toy_vit: CLIPViTPyramidBackbone) -> None:
    before = {k: v.clone() for k, v in toy_vit.state_dict().items()}
    toy_vit.init_weights()
    for key, value in toy_vit.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize('model_name,out_indices,match', [
    (TOY_VIT, (0, 4), r'out_indices: .* in \(0, 1, 2, 3\), got \(0, 4\)'),
    (TOY_VIT, (), r'out_indices: expected a non-empty'),
    (TINY_RN, (0, 1), r'out_indices: .*stages 1-4 \(C2-C5\) in \(1, 2, 3, 4\), got \(0, 1\)'),
])
def test_rejects_bad_out_indices(model_name: str, out_indices: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CLIPViTPyramidBackbone(model_name, out_indices=out_indices)


def test_rejects_size_not_multiple_of_stride(toy_vit: CLIPViTPyramidBackbone,
                                             tiny_rn: CLIPViTPyramidBackbone) -> None:
    with pytest.raises(ValueError, match='divisible by the tower stride 8, got 60x64'):
        toy_vit(_images(1, 60, 64))
    with pytest.raises(ValueError, match='divisible by the tower stride 32, got 64x80'):
        tiny_rn(_images(1, 64, 80))
