# Copyright (c) mmclim contributors. All rights reserved.
import json
from pathlib import Path
from typing import Callable, List

import open_clip
import pytest
import torch
from mmdet.registry import MODELS
from open_clip.model import build_model_from_openai_state_dict, resize_pos_embed
from torch import Tensor, nn

from mmclim.models.backbones import (OpenCLIPRegion, boxes_to_patch_mask, read_clip_state_dict,
                                     save_clip_checkpoint, vit_box_attention_pool, vit_embed_tokens,
                                     vit_tokens_before_last_block)

TINY_VIT = 'mmclim-tiny-vit'
TINY_RN = 'mmclim-tiny-rn'
EMBED_DIM = 32  # embed_dim of both tiny configs
PATCH = 16
NUM_VIT_BLOCKS = 3
NATIVE = 224
ATOL = 1e-5
TEXTS = ['a photo of a cat', 'a dog', 'a red car on a road', 'a bird', 'two zebras']


def _images(batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _whole_boxes(images: Tensor) -> List[Tensor]:
    height, width = images.shape[-2:]
    return [torch.tensor([[0., 0., width, height]]) for _ in range(images.shape[0])]


def _build(model_name: str = TINY_VIT, seed: int = 0, **kwargs) -> OpenCLIPRegion:
    torch.manual_seed(seed)
    return OpenCLIPRegion(model_name, **kwargs)


@pytest.fixture(scope='module')
def vit() -> OpenCLIPRegion:
    return _build(TINY_VIT).eval()


@pytest.fixture(scope='module')
def resnet() -> OpenCLIPRegion:
    return _build(TINY_RN).eval()


@pytest.fixture(scope='module')
def vit_attn_mask(vit: OpenCLIPRegion) -> OpenCLIPRegion:
    model = _build(TINY_VIT, region_mode='attn_mask').eval()
    model.load_state_dict(vit.state_dict())
    return model


# ---------------------------------------------------------------------------------------------
# Dense features
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('height,width', [(224, 224), (512, 512), (256, 384)])
def test_vit_dense_shape(vit: OpenCLIPRegion, height: int, width: int) -> None:
    with torch.no_grad():
        dense = vit.dense_features(_images(2, height, width))
        levels = vit(_images(1, height, width))
    grid = (height // PATCH, width // PATCH)
    assert dense.shape == (2, EMBED_DIM, *grid)
    assert torch.isfinite(dense).all()
    assert len(levels) == 1 and levels[0].shape == (1, EMBED_DIM, *grid)


def _self_only(num_tokens: int) -> Tensor:
    """An attention mask letting every token attend to itself only: attention becomes the value
    path (softmax over one key is 1)."""
    return torch.full((num_tokens, num_tokens), float('-inf')).fill_diagonal_(0)


def test_vit_clim_dense_map_is_the_official_v2_map(vit: OpenCLIPRegion) -> None:
    """The official v2 map (forward_without_attn: ``x = t + attn_v(ln_1 t)``,
    ``x = x + mlp(ln_2 x)``, then ln_post, proj and a per-token L2 norm), written here from
    open_clip's public modules: the last block's own forward with self-only attention."""
    images = _images(2, NATIVE, NATIVE)
    visual = vit.clip.visual
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        tokens = vit_tokens_before_last_block(visual, images)
        out = block(tokens, attn_mask=_self_only(tokens.shape[1]))
        expected = nn.functional.normalize(visual.ln_post(out[:, 1:]) @ visual.proj, dim=-1)
        dense = vit.dense_features(images)
    expected = expected.transpose(1, 2).reshape(dense.shape)
    torch.testing.assert_close(dense, expected, atol=ATOL, rtol=ATOL)
    assert vit.dense_mode == 'clim'


def test_vit_maskclip_dense_map_is_the_value_path(vit: OpenCLIPRegion) -> None:
    """MaskCLIP: the attention branch alone (no residual, no MLP), not normalised."""
    maskclip = _build(TINY_VIT, dense_mode='maskclip').eval()
    maskclip.load_state_dict(vit.state_dict())
    images = _images(2, NATIVE, NATIVE)
    visual = maskclip.clip.visual
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        tokens = vit_tokens_before_last_block(visual, images)
        attended = block.attention(q_x=block.ln_1(tokens), attn_mask=_self_only(tokens.shape[1]))
        expected = visual.ln_post(attended[:, 1:]) @ visual.proj
        dense = maskclip.dense_features(images)
    expected = expected.transpose(1, 2).reshape(dense.shape)
    torch.testing.assert_close(dense, expected, atol=ATOL, rtol=ATOL)


def test_vit_tokens_match_open_clip_at_native_size(vit: OpenCLIPRegion) -> None:
    images = _images(2, NATIVE, NATIVE)
    with torch.no_grad():
        ours = vit_tokens_before_last_block(vit.clip.visual, images)
        upstream = vit.clip.visual.forward_intermediates(
            images, indices=[NUM_VIT_BLOCKS - 2], intermediates_only=True, output_fmt='NLC',
            output_extra_tokens=True)
    torch.testing.assert_close(ours[:, 1:], upstream['image_intermediates'][0])
    torch.testing.assert_close(ours[:, :1], upstream['image_intermediates_prefix'][0])


def test_vit_pos_embed_interpolation_is_the_official_one(vit: OpenCLIPRegion) -> None:
    """At 512 pixels the positional embedding is the official rescale_positional_embedding's:
    the 14x14 grid resized bicubically, corners not aligned, not antialiased; the class token's
    unchanged. open_clip's checkpoint loader (resize_pos_embed) antialiases, which is another
    kernel: our tokens differ from its resized model's."""
    size, grid = 512, 512 // PATCH
    visual = vit.clip.visual
    pos = visual.positional_embedding.detach()
    side = NATIVE // PATCH
    expected_grid = nn.functional.interpolate(
        pos[1:].T.reshape(1, -1, side, side), size=(grid, grid), mode='bicubic',
        align_corners=False).reshape(-1, grid * grid).T
    images = _images(1, size, size)
    with torch.no_grad():
        patches = visual.conv1(images).flatten(2).transpose(1, 2)
        class_token = visual.class_embedding + pos[0]
        expected = visual.ln_pre(torch.cat([class_token[None, None], patches + expected_grid],
                                           dim=1))
        ours = vit_embed_tokens(visual, images)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=ATOL)

    big = open_clip.create_model(TINY_VIT, pretrained=None, force_image_size=size).eval()
    state_dict = vit.clip.state_dict()
    resize_pos_embed(state_dict, big)
    assert not torch.allclose(state_dict['visual.positional_embedding'][1:], expected_grid,
                              atol=1e-3)


def test_dense_rejects_size_not_multiple_of_stride(vit: OpenCLIPRegion,
                                                   resnet: OpenCLIPRegion) -> None:
    with pytest.raises(ValueError, match='divisible by the tower stride 16, got 200x224'):
        vit.dense_features(_images(1, 200, 224))
    with pytest.raises(ValueError, match='divisible by the tower stride 32, got 224x240'):
        resnet.dense_features(_images(1, 224, 240))


def test_resnet_dense_and_region_shapes(resnet: OpenCLIPRegion) -> None:
    images = _images(2, 256, 320)
    boxes = [torch.tensor([[0., 0., 64., 64.], [32., 32., 320., 256.]]), torch.zeros(0, 4)]
    with torch.no_grad():
        dense = resnet.dense_features(images)
        regions = resnet.region_features(images, boxes)
    assert dense.shape == (2, EMBED_DIM, 256 // 32, 320 // 32)
    assert regions.shape == (2, EMBED_DIM)
    assert resnet.stride == 32 and resnet.region_mode == 'attn_pool'


def test_resnet_dense_at_native_size_uses_trained_pos_embed(resnet: OpenCLIPRegion) -> None:
    """At the native size the map is c_proj(v_proj(x + pos)) with the pool's own embedding,
    L2-normalised per location (the official encode_dense)."""
    images = _images(1, NATIVE, NATIVE)
    visual = resnet.clip.visual
    pool = visual.attnpool
    with torch.no_grad():
        features = visual.forward_intermediates(images, intermediates_only=True)
        layer4 = features['image_intermediates'][-1]
        tokens = layer4.flatten(2).transpose(1, 2) + pool.positional_embedding[1:]
        expected = nn.functional.normalize(pool.c_proj(pool.v_proj(tokens)), dim=-1)
        expected = expected.transpose(1, 2).reshape(1, EMBED_DIM, 7, 7)
        dense = resnet.dense_features(images)
    torch.testing.assert_close(dense, expected, atol=ATOL, rtol=ATOL)


def test_resnet_region_of_the_whole_native_image_is_clips_embedding(
        resnet: OpenCLIPRegion) -> None:
    """The official RN region feature (a 7x7 RoIAlign of C5 for this tower, then CLIP's
    attention pool): for the whole native image the RoIAlign samples every C5 cell centre, so
    the region embedding is the global image embedding."""
    images = _images(2, NATIVE, NATIVE)
    with torch.no_grad():
        regions = resnet.region_features(images, _whole_boxes(images))
        global_embedding = resnet.encode_image(images)
    torch.testing.assert_close(regions, global_embedding, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------------------------------
# Region features
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('model_fixture,height,width', [('vit', 224, 224), ('vit', 320, 480)])
def test_roi_whole_image_box_is_spatial_mean(request: pytest.FixtureRequest, model_fixture: str,
                                             height: int, width: int) -> None:
    model = request.getfixturevalue(model_fixture)
    images = _images(2, height, width)
    with torch.no_grad():
        dense = model.dense_features(images)
        regions = model.region_features(images, _whole_boxes(images))
    torch.testing.assert_close(regions, dense.mean(dim=(2, 3)), atol=ATOL, rtol=ATOL)


def test_roi_of_cell_aligned_box_is_mean_of_its_cells(vit: OpenCLIPRegion) -> None:
    images = _images(1, NATIVE, NATIVE)
    # Columns 2-5 and rows 3-7 of the 16-pixel grid.
    boxes = [torch.tensor([[2 * PATCH, 3 * PATCH, 6 * PATCH, 8 * PATCH]], dtype=torch.float)]
    with torch.no_grad():
        dense = vit.dense_features(images)
        regions = vit.region_features(images, boxes, normalize=True)
    expected = nn.functional.normalize(dense[:, :, 3:8, 2:6].mean(dim=(2, 3)), dim=-1)
    torch.testing.assert_close(regions, expected, atol=ATOL, rtol=ATOL)


def test_attn_mask_whole_image_box_equals_global_embedding(vit_attn_mask: OpenCLIPRegion) -> None:
    images = _images(2, NATIVE, NATIVE)
    boxes = [torch.tensor([[0., 0., NATIVE, NATIVE], [16., 16., 80., 64.]]),
             torch.tensor([[0., 0., NATIVE, NATIVE]])]
    with torch.no_grad():
        regions = vit_attn_mask.region_features(images, boxes)
        global_embed = vit_attn_mask.encode_image(images)
    assert regions.shape == (3, EMBED_DIM)
    torch.testing.assert_close(regions[[0, 2]], global_embed, atol=ATOL, rtol=ATOL)
    assert not torch.allclose(regions[1], global_embed[0], atol=1e-2)


def test_attn_mask_ignores_tokens_outside_the_box(vit_attn_mask: OpenCLIPRegion) -> None:
    """Changing the last block's input outside a box (class token kept) leaves its feature."""
    visual = vit_attn_mask.clip.visual
    grid = (NATIVE // PATCH, NATIVE // PATCH)
    boxes = [torch.tensor([[40., 8., 100., 70.]])]
    with torch.no_grad():
        tokens = vit_tokens_before_last_block(visual, _images(1, NATIVE, NATIVE))
        inside = boxes_to_patch_mask(boxes[0], grid, PATCH)[0]
        perturbed = tokens.clone()
        perturbed[0, 1:][~inside] += torch.randn_like(perturbed[0, 1:][~inside])
        perturbed_inside = tokens.clone()
        perturbed_inside[0, 1:][inside] += torch.randn_like(perturbed_inside[0, 1:][inside])
        reference = vit_box_attention_pool(visual, tokens, boxes, grid)
        outside_changed = vit_box_attention_pool(visual, perturbed, boxes, grid)
        inside_changed = vit_box_attention_pool(visual, perturbed_inside, boxes, grid)
    torch.testing.assert_close(outside_changed, reference, atol=ATOL, rtol=ATOL)
    assert not torch.allclose(inside_changed, reference, atol=1e-3)


def test_attn_mask_at_other_size_and_empty_boxes(vit_attn_mask: OpenCLIPRegion) -> None:
    images = _images(2, 320, 256)
    boxes = [torch.zeros(0, 4), torch.tensor([[0., 0., 50., 50.], [100., 100., 250., 300.]])]
    with torch.no_grad():
        regions = vit_attn_mask.region_features(images, boxes, normalize=True)
        empty = vit_attn_mask.region_features(images, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert regions.shape == (2, EMBED_DIM)
    torch.testing.assert_close(regions.norm(dim=-1), torch.ones(2))
    assert empty.shape == (0, EMBED_DIM)


def test_boxes_to_patch_mask_geometry() -> None:
    grid = (4, 5)
    boxes = torch.tensor([
        [16., 0., 40., 16.],  # columns 1-2 of row 0
        [20., 20., 21., 21.],  # smaller than a cell: cell (1, 1) only
        [500., 500., 600., 600.],  # outside the image: the nearest (last) cell
        [0., 0., 80., 64.],  # the whole grid
    ])
    mask = boxes_to_patch_mask(boxes, grid, PATCH).reshape(-1, *grid)
    assert mask[0].nonzero().tolist() == [[0, 1], [0, 2]]
    assert mask[1].nonzero().tolist() == [[1, 1]]
    assert mask[2].nonzero().tolist() == [[3, 4]]
    assert mask[3].all()


def test_region_features_reject_bad_boxes(vit: OpenCLIPRegion) -> None:
    images = _images(2, NATIVE, NATIVE)
    with pytest.raises(ValueError, match='boxes: expected a list of 2 tensors'):
        vit.region_features(images, [torch.zeros(0, 4)])


# ---------------------------------------------------------------------------------------------
# Image and text embeddings
# ---------------------------------------------------------------------------------------------
def test_encode_image(vit: OpenCLIPRegion, resnet: OpenCLIPRegion) -> None:
    images = _images(2, NATIVE, NATIVE)
    with torch.no_grad():
        for model in (vit, resnet):
            torch.testing.assert_close(model.encode_image(images),
                                       model.clip.encode_image(images))
            normalized = model.encode_image(images, normalize=True)
            assert normalized.shape == (2, EMBED_DIM)
            torch.testing.assert_close(normalized.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match=r'native size \(224, 224\)'):
        vit.encode_image(_images(1, 512, 512))


def test_encode_text_shape_norm_and_batching(vit: OpenCLIPRegion) -> None:
    unbatched = vit.encode_text(TEXTS)
    batched = vit.encode_text(TEXTS, batch_size=2)
    assert unbatched.shape == (len(TEXTS), EMBED_DIM)
    torch.testing.assert_close(unbatched.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(batched, unbatched, atol=ATOL, rtol=ATOL)
    raw = vit.encode_text(TEXTS, normalize=False)
    torch.testing.assert_close(nn.functional.normalize(raw, dim=-1), unbatched)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(TEXTS)))
    assert vit.encode_text([]).shape == (0, EMBED_DIM)
    assert not unbatched.requires_grad
    with pytest.raises(ValueError, match='batch_size: expected a positive int'):
        vit.encode_text(TEXTS, batch_size=0)


def test_encode_text_with_grad_when_text_trainable() -> None:
    model = _build(TINY_VIT, freeze_text=False)
    embeddings = model.encode_text(TEXTS[:2], no_grad=False)
    assert embeddings.requires_grad
    embeddings.sum().backward()
    assert model.clip.token_embedding.weight.grad is not None


def test_logit_scale(vit: OpenCLIPRegion) -> None:
    torch.testing.assert_close(vit.logit_scale, vit.clip.logit_scale.exp())
    assert vit.logit_scale.ndim == 0


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def _round_to_fp16(model: OpenCLIPRegion) -> OpenCLIPRegion:
    """Make fp16 storage lossless for the model's weights."""
    with torch.no_grad():
        for tensor in model.clip.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def _assert_same_outputs(model: OpenCLIPRegion, other: OpenCLIPRegion) -> None:
    images = _images(1, 256, 256)
    with torch.no_grad():
        assert torch.equal(model.dense_features(images), other.dense_features(images))
        assert torch.equal(model.encode_text(TEXTS[:2]), other.encode_text(TEXTS[:2]))
        assert torch.equal(model.logit_scale, other.logit_scale)


@pytest.mark.parametrize('model_name', [TINY_VIT, TINY_RN])
def test_openai_format_fp16_round_trip(tmp_path: Path, model_name: str) -> None:
    model = _round_to_fp16(_build(model_name, seed=1)).eval()
    path = str(tmp_path / 'openai.pt')
    save_clip_checkpoint(model.clip, path)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == list(model.clip.state_dict())
    assert all(value.dtype == torch.float16 for value in saved.values()
               if value.is_floating_point())
    # open_clip's own builder for OpenAI state dicts accepts the file (it loads strictly).
    build_model_from_openai_state_dict(dict(saved))

    fresh = _build(model_name, seed=2).eval()
    assert not torch.equal(fresh.clip.visual.conv1.weight, model.clip.visual.conv1.weight)
    loaded = _build(model_name, seed=2, pretrained=path).eval()
    assert loaded.clip.visual.conv1.weight.dtype == torch.float32
    _assert_same_outputs(model, loaded)


def test_openai_resnet_checkpoint_without_bn_counters_loads(tmp_path: Path) -> None:
    model = _build(TINY_RN, seed=1).eval()
    state_dict = {key: value for key, value in model.clip.state_dict().items()
                  if not key.endswith('num_batches_tracked')}
    state_dict.update(input_resolution=torch.tensor(NATIVE), context_length=torch.tensor(77),
                      vocab_size=torch.tensor(49408))
    path = str(tmp_path / 'rn.pt')
    torch.save(state_dict, path)
    _assert_same_outputs(model, _build(TINY_RN, seed=2, pretrained=path).eval())


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_torchscript_archive_round_trip(tmp_path: Path) -> None:
    model = _build(TINY_VIT, seed=1).eval()
    traced = torch.jit.trace_module(model.clip, {'encode_image': (_images(1, NATIVE, NATIVE), )},
                                    check_trace=False)
    path = str(tmp_path / 'ViT-tiny.pt')
    torch.jit.save(traced, path)
    assert 'attn_mask' in torch.jit.load(path).state_dict()  # a buffer the loader must skip
    _assert_same_outputs(model, _build(TINY_VIT, seed=2, pretrained=path).eval())


def test_open_clip_nested_module_prefixed_checkpoint(tmp_path: Path) -> None:
    model = _build(TINY_VIT, seed=1).eval()
    checkpoint = dict(epoch=3, name='run',
                      state_dict={f'module.{k}': v for k, v in model.clip.state_dict().items()})
    path = str(tmp_path / 'epoch_3.pt')
    torch.save(checkpoint, path)
    assert set(read_clip_state_dict(path)) == set(model.clip.state_dict())
    _assert_same_outputs(model, _build(TINY_VIT, seed=2, pretrained=path).eval())


def test_missing_checkpoint_names_path(tmp_path: Path) -> None:
    path = str(tmp_path / 'nowhere' / 'ViT-B-16.pt')
    with pytest.raises(FileNotFoundError, match='nowhere/ViT-B-16.pt'):
        _build(TINY_VIT, pretrained=path)


def _save_edited(tmp_path: Path, edit: Callable[[dict], None]) -> str:
    state_dict = _build(TINY_VIT, seed=1).clip.state_dict()
    edit(state_dict)
    path = str(tmp_path / 'edited.pt')
    torch.save(state_dict, path)
    return path


def test_checkpoint_missing_key_names_path_and_first_key(tmp_path: Path) -> None:
    last_block = f'visual.transformer.resblocks.{NUM_VIT_BLOCKS - 1}.'

    def drop_last_block(state_dict: dict) -> None:
        for key in [k for k in state_dict if k.startswith(last_block)]:
            del state_dict[key]

    path = _save_edited(tmp_path, drop_last_block)
    with pytest.raises(ValueError) as error:
        _build(TINY_VIT, pretrained=path)
    message = str(error.value)
    assert path in message
    assert f"first mismatched key '{last_block}ln_1.weight' is missing" in message


def test_checkpoint_shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:

    def shrink_proj(state_dict: dict) -> None:
        state_dict['visual.proj'] = state_dict['visual.proj'][:, :16]

    path = _save_edited(tmp_path, shrink_proj)
    with pytest.raises(ValueError, match=r"'visual.proj' has shape \(64, 16\) in the checkpoint "
                                         r'but \(64, 32\) in the model') as error:
        _build(TINY_VIT, pretrained=path)
    assert path in str(error.value)


def test_checkpoint_of_other_architecture_names_unexpected_key(tmp_path: Path) -> None:
    path = str(tmp_path / 'rn.pt')
    save_clip_checkpoint(_build(TINY_RN).clip, path)
    with pytest.raises(ValueError, match=r"first mismatched key 'visual.class_embedding' is "
                                         r'missing from the checkpoint \(\d+ mismatched'):
        _build(TINY_VIT, pretrained=path)

    def add_key(state_dict: dict) -> None:
        state_dict['visual.extra_head.weight'] = torch.zeros(2)

    path = _save_edited(tmp_path, add_key)
    with pytest.raises(ValueError, match="'visual.extra_head.weight' of the checkpoint is not"):
        _build(TINY_VIT, pretrained=path)


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('region_mode', ['roi_align', 'attn_mask'])
def test_unlocked_last_block_gets_the_only_vision_grads(region_mode: str) -> None:
    model = _build(TINY_VIT, unlocked_vision_blocks=1, region_mode=region_mode).train()
    last_block = f'visual.transformer.resblocks.{NUM_VIT_BLOCKS - 1}.'
    trainable = {name for name, param in model.clip.named_parameters() if param.requires_grad}
    vision_trainable = {name for name in trainable if name.startswith('visual.')}
    expected = {name for name, _ in model.clip.named_parameters() if name.startswith(last_block)}
    assert vision_trainable == expected  # ln_post and proj stay frozen (freeze_projection)
    assert trainable - vision_trainable == {'logit_scale'}  # text tower frozen

    images = _images(2, NATIVE, NATIVE)
    boxes = [torch.tensor([[0., 0., 100., 120.]]), torch.tensor([[32., 48., 224., 200.]])]
    model.region_features(images, boxes).sum().backward()
    with_grad = {name for name, param in model.clip.named_parameters() if param.grad is not None}
    assert with_grad <= trainable
    assert f'{last_block}attn.in_proj_weight' in with_grad

    heads = _build(TINY_VIT, unlocked_vision_blocks=1, freeze_projection=False)
    assert heads.clip.visual.proj.requires_grad and heads.clip.visual.ln_post.weight.requires_grad


def test_vit_lock_bounds() -> None:
    frozen = _build(TINY_VIT, unlocked_vision_blocks=0)
    assert not any(p.requires_grad for p in frozen.clip.visual.parameters())
    all_blocks = _build(TINY_VIT, unlocked_vision_blocks=NUM_VIT_BLOCKS)
    assert all_blocks.clip.visual.transformer.resblocks[0].ln_1.weight.requires_grad
    assert not all_blocks.clip.visual.conv1.weight.requires_grad
    unlocked = _build(TINY_VIT, freeze_text=False)
    assert all(p.requires_grad for p in unlocked.clip.parameters())
    with pytest.raises(ValueError, match=r'unlocked_vision_blocks: expected None or 0 to 3'):
        _build(TINY_VIT, unlocked_vision_blocks=NUM_VIT_BLOCKS + 1)


def test_resnet_locking_and_frozen_batch_norm() -> None:
    frozen = _build(TINY_RN, unlocked_vision_blocks=0, norm_eval=False).train()
    assert not any(p.requires_grad for p in frozen.clip.visual.parameters())
    assert not frozen.clip.visual.bn1.training
    with pytest.raises(ValueError, match=r'unlocked_vision_blocks: expected None or 0 to 4 \(the '
                       r'number of ModifiedResNet stages\)'):
        _build(TINY_RN, unlocked_vision_blocks=5)

    model = _build(TINY_RN).train()  # the whole tower trains, BatchNorm frozen (norm_eval)
    assert model.clip.visual.conv1.weight.requires_grad
    batch_norms = [m for m in model.clip.visual.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    assert not any(p.requires_grad for m in batch_norms for p in m.parameters())
    assert model.clip.visual.attnpool.training
    stats = [m.running_mean.clone() for m in batch_norms]
    model.region_features(_images(2, NATIVE, NATIVE), _whole_boxes(_images(2, NATIVE, NATIVE)))
    assert all(torch.equal(m.running_mean, s) for m, s in zip(batch_norms, stats))

    updating = _build(TINY_RN, norm_eval=False).train()
    assert updating.clip.visual.bn1.training and updating.clip.visual.bn1.weight.requires_grad


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------
def test_build_from_registry_and_config_errors() -> None:
    model = MODELS.build(dict(type='OpenCLIPRegion', model_name=TINY_VIT, region_mode='attn_mask'))
    assert isinstance(model, OpenCLIPRegion) and model.embed_dim == EMBED_DIM
    with pytest.raises(ValueError, match=r"region_mode: expected None or one of \('roi_align', "
                                         r"'attn_pool', 'attn_mask'\), got 'mean'"):
        _build(TINY_VIT, region_mode='mean')
    with pytest.raises(ValueError, match="region_mode: 'attn_mask' needs a ViT"):
        _build(TINY_RN, region_mode='attn_mask')
    with pytest.raises(ValueError, match="region_mode: 'attn_pool' needs a ModifiedResNet"):
        _build(TINY_VIT, region_mode='attn_pool')
    with pytest.raises(ValueError, match=r"dense_mode: expected one of \('clim', 'maskclip'\)"):
        _build(TINY_VIT, dense_mode='v3')


def test_unsupported_vit_variant_is_rejected(tmp_path: Path) -> None:
    """qk_norm makes open_clip build CustomResidualAttentionBlocks, which have no MaskCLIP path."""
    name = 'mmclim-test-qk-norm-vit'
    config = open_clip.get_model_config(TINY_VIT)
    config['vision_cfg']['qk_norm'] = True
    (tmp_path / f'{name}.json').write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f'{name}.json')
    expected = ('model_name: expected the last ViT block to be a ResidualAttentionBlock.*'
                rf"got CustomResidualAttentionBlock \(model_name='{name}'\)")
    with pytest.raises(ValueError, match=expected):
        _build(name)


def test_real_openai_configs_at_cpu_size() -> None:
    """The shipped open_clip configs of the paper's towers (ViT-B-16, the RN50x64 family) pass
    the checks; run at 224 pixels with random weights."""
    images = _images(1, NATIVE, NATIVE)
    vit_b = _build('ViT-B-16-quickgelu', unlocked_vision_blocks=2, region_mode='attn_mask').eval()
    trainable_blocks = {name.split('.')[3] for name, param in vit_b.clip.named_parameters()
                        if param.requires_grad and name.startswith('visual.transformer.')}
    assert trainable_blocks == {'10', '11'}
    resnet50 = _build('RN50-quickgelu').eval()
    with torch.no_grad():
        torch.testing.assert_close(vit_b.region_features(images, _whole_boxes(images)),
                                   vit_b.encode_image(images), atol=ATOL, rtol=ATOL)
        assert resnet50.dense_features(images).shape == (1, 1024, 7, 7)


@pytest.mark.gpu
def test_region_features_on_gpu_match_cpu(vit_attn_mask: OpenCLIPRegion) -> None:
    images = _images(1, 320, 320)
    boxes = [torch.tensor([[0., 0., 320., 320.], [40., 60., 200., 180.]])]
    gpu_model = _build(TINY_VIT, region_mode='attn_mask').eval()
    gpu_model.load_state_dict(vit_attn_mask.state_dict())
    gpu_model = gpu_model.cuda()
    with torch.no_grad():
        cpu = vit_attn_mask.region_features(images, boxes)
        gpu = gpu_model.region_features(images.cuda(), [b.cuda() for b in boxes])
        dense_gpu = gpu_model.dense_features(images.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dense_gpu.cpu(), vit_attn_mask.dense_features(images),
                               atol=1e-4, rtol=1e-4)
