# Copyright (c) mmclim contributors. All rights reserved.
"""The F-VLM backbone against open_clip's own forward passes and the region wrapper's maps."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from mmclim.models.backbones import CLIPPyramidOutput, CLIPViTPyramidBackbone

TINY_VIT12 = 'mmclim-tiny-vit12'  # 12 blocks, width 32, patch 16, embed_dim 32, native 224
TOY_VIT = 'mmclim-toy-vit'  # 4 blocks, width 96, patch 8, embed_dim 64
TINY_RN = 'mmclim-tiny-rn'  # ModifiedResNet, width 16: C2-C5 of 64-512 channels, embed_dim 32
VIT_B_OUT_INDICES = (3, 5, 7, 11)  # CLIM's F-VLM on ViT-B/16 (official config out_indices)
NATIVE = 224


def _images(batch: int, height: int, width: int) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def _build(model_name: str, out_indices: tuple) -> CLIPViTPyramidBackbone:
    torch.manual_seed(0)
    return MODELS.build(dict(type='CLIPViTPyramidBackbone', model_name=model_name,
                             out_indices=out_indices))


@pytest.fixture(scope='module')
def vit12() -> CLIPViTPyramidBackbone:
    return _build(TINY_VIT12, VIT_B_OUT_INDICES)


@pytest.fixture(scope='module')
def tiny_rn() -> CLIPViTPyramidBackbone:
    return _build(TINY_RN, (1, 2, 3, 4))


def test_frozen_in_eval_mode_without_graph(vit12: CLIPViTPyramidBackbone,
                                           tiny_rn: CLIPViTPyramidBackbone) -> None:
    for backbone in (vit12, tiny_rn):
        assert not any(p.requires_grad for p in backbone.parameters())
        backbone.train()
        assert not any(module.training for module in backbone.modules())
        out = backbone(_images(1, 64, 64).requires_grad_(), with_vlm=True)
        assert isinstance(out, CLIPPyramidOutput)
        assert not any(x.requires_grad for x in (*out.pyramid, out.vlm))


def test_properties_come_from_the_tower(vit12: CLIPViTPyramidBackbone,
                                        tiny_rn: CLIPViTPyramidBackbone) -> None:
    assert vit12.out_channels == [32] * 4 and vit12.out_strides == [16] * 4
    assert (vit12.embed_dim, vit12.vlm_stride, vit12.model_name) == (32, 16, TINY_VIT12)
    # ModifiedResNet of width 16: bottleneck outputs 4 * 16 * 2^(i-1) channels.
    assert tiny_rn.out_channels == [64, 128, 256, 512] and tiny_rn.out_strides == [4, 8, 16, 32]
    assert (tiny_rn.embed_dim, tiny_rn.vlm_stride, tiny_rn.model_name) == (32, 32, TINY_RN)


def test_vit_pyramid_blocks_match_open_clip(vit12: CLIPViTPyramidBackbone) -> None:
    """The maps of blocks 3, 5 and 7 are open_clip's own intermediates (at the native size,
    where no positional embedding is resized); the map of the last block is its official
    forward_without_attn output: x = t + out_proj(v(ln_1 t)); x + mlp(ln_2 x), before ln_post."""
    images = _images(2, NATIVE, NATIVE)
    out = vit12(images)
    assert out.vlm is None
    assert [tuple(x.shape) for x in out.pyramid] == [(2, 32, 14, 14)] * 4
    visual = vit12.visual
    with torch.no_grad():
        upstream = visual.forward_intermediates(images, indices=[3, 5, 7, 10],
                                                intermediates_only=True, output_fmt='NCHW')
    for ours, theirs in zip(out.pyramid[:3], upstream['image_intermediates'][:3]):
        torch.testing.assert_close(ours, theirs)
    block = visual.transformer.resblocks[11]
    tokens = upstream['image_intermediates'][3].flatten(2).transpose(1, 2)  # (B, 196, 32)
    value_weight, value_bias = (block.attn.in_proj_weight[64:], block.attn.in_proj_bias[64:])
    with torch.no_grad():
        x = tokens + block.attn.out_proj(block.ln_1(tokens) @ value_weight.T + value_bias)
        x = x + block.mlp(block.ln_2(x))
    torch.testing.assert_close(out.pyramid[3], x.transpose(1, 2).reshape(2, 32, 14, 14))


@pytest.mark.parametrize('height,width', [(64, 96), (NATIVE, NATIVE)])
def test_vlm_map_is_the_region_wrappers_map(vit12: CLIPViTPyramidBackbone,
                                            tiny_rn: CLIPViTPyramidBackbone, height: int,
                                            width: int) -> None:
    """The VLM map is what OpenCLIPRegion.region_source computes in its own pass: the
    normalised v2 map of the ViT, C5 of the ModifiedResNet."""
    images = _images(2, height, width)
    for backbone in (vit12, tiny_rn):
        with torch.no_grad():
            expected = backbone.region.region_source(images)
        torch.testing.assert_close(backbone(images, with_vlm=True).vlm, expected)
    vlm = vit12(images, with_vlm=True).vlm
    assert tuple(vlm.shape) == (2, 32, height // 16, width // 16)
    torch.testing.assert_close(vlm.norm(dim=1), torch.ones(2, height // 16, width // 16))


def test_resnet_pyramid_is_c2_to_c5(tiny_rn: CLIPViTPyramidBackbone) -> None:
    images = _images(2, 64, 96)
    visual = tiny_rn.visual
    with torch.no_grad():
        x = visual.stem(images)
        stages = []
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
            stages.append(x)
    out = tiny_rn(images)
    for ours, expected in zip(out.pyramid, stages):
        torch.testing.assert_close(ours, expected)
    assert out.vlm is None


def test_training_pass_computes_no_vlm_map(vit12: CLIPViTPyramidBackbone) -> None:
    calls = []
    handle = vit12.visual.ln_post.register_forward_hook(lambda *args: calls.append(1))
    try:
        vit12(_images(1, 64, 64))
        assert not calls
        vit12(_images(1, 64, 64), with_vlm=True)
        assert len(calls) == 1
    finally:
        handle.remove()


def test_vlm_region_embedding_of_one_cell(vit12: CLIPViTPyramidBackbone) -> None:
    """A box covering exactly cell (1, 2) of the stride-16 map (x 32-48, y 16-32): RoIAlign
    (aligned, one bin, one sample at the box centre) reads that cell, already unit-norm."""
    images = _images(2, 64, 64)
    vlm = vit12(images, with_vlm=True).vlm
    rois = torch.tensor([[1., 32., 16., 48., 32.], [0., 0., 0., 64., 64.]])
    embeddings = vit12.vlm_region_embeddings(vlm, rois)
    torch.testing.assert_close(embeddings[0], vlm[1, :, 1, 2])
    torch.testing.assert_close(embeddings[1], F.normalize(vlm[0].mean(dim=(1, 2)), dim=0))


def test_resnet_vlm_region_embedding_is_the_attention_pool_of_the_box(
        tiny_rn: CLIPViTPyramidBackbone) -> None:
    """The box covering the whole 224 image (the pool's native 7x7 grid) is RoIAligned to 7x7
    unchanged, so its embedding is CLIP's own image embedding, normalised."""
    images = _images(1, NATIVE, NATIVE)
    vlm = tiny_rn(images, with_vlm=True).vlm
    embedding = tiny_rn.vlm_region_embeddings(vlm, torch.tensor([[0., 0., 0., 224., 224.]]))
    with torch.no_grad():
        expected = tiny_rn.region.clip.encode_image(images, normalize=True)
    torch.testing.assert_close(embedding, expected)


def test_init_weights_keeps_the_clip_weights(vit12: CLIPViTPyramidBackbone) -> None:
    weights = {k: v.clone() for k, v in vit12.state_dict().items()}
    vit12.init_weights()
    assert all(torch.equal(v, weights[k]) for k, v in vit12.state_dict().items())


@pytest.mark.parametrize('model_name,out_indices,match', [
    (TOY_VIT, (0, 4), r'0-based blocks of the 4-block ViT in \(0, 1, 2, 3\), got \(0, 4\)'),
    (TOY_VIT, (), 'non-empty'),
    (TINY_RN, (0, 1), r'stages 1-4 \(C2-C5\) in \(1, 2, 3, 4\), got \(0, 1\)'),
])
def test_rejects_out_indices_outside_the_tower(model_name: str, out_indices: tuple,
                                               match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CLIPViTPyramidBackbone(model_name, out_indices=out_indices)


def test_rejects_size_not_multiple_of_stride(vit12: CLIPViTPyramidBackbone,
                                             tiny_rn: CLIPViTPyramidBackbone) -> None:
    with pytest.raises(ValueError, match='divisible by the tower stride 16, got 72x64'):
        vit12(_images(1, 72, 64))
    with pytest.raises(ValueError, match='divisible by the tower stride 32, got 64x80'):
        tiny_rn(_images(1, 64, 80))
