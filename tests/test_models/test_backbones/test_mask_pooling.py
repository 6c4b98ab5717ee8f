# Copyright (c) mmclim contributors. All rights reserved.
"""``OpenCLIPRegion.mask_features``: the dense map averaged over masks, area-weighted."""
from typing import List

import pytest
import torch
from torch import Tensor

from mmclim.models.backbones import OpenCLIPRegion
from mmclim.models.backbones.clip_dense import mask_cell_weights, mask_pool

TINY_VIT = 'mmclim-tiny-vit'
TINY_RN = 'mmclim-tiny-rn'
EMBED_DIM = 32  # embed_dim of both tiny configs
PATCH = 16
ATOL = 1e-5


def _images(batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _box_mask(height: int, width: int, box: List[int]) -> Tensor:
    """Boolean mask of shape (H, W) of the pixels inside ``box`` (x1, y1, x2, y2)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


@pytest.fixture(scope='module')
def vit() -> OpenCLIPRegion:
    torch.manual_seed(0)
    return OpenCLIPRegion(TINY_VIT).eval()


@pytest.fixture(scope='module')
def resnet() -> OpenCLIPRegion:
    """A ResNet whose region features pool the dense map (not the default attention pool), so
    that masks and boxes pool the same map."""
    torch.manual_seed(0)
    return OpenCLIPRegion(TINY_RN, region_mode='roi_align').eval()


@pytest.mark.parametrize('model_fixture,height,width', [('vit', 224, 224), ('vit', 160, 256),
                                                        ('resnet', 256, 320)])
def test_full_mask_is_dense_mean_and_whole_box_feature(request: pytest.FixtureRequest,
                                                       model_fixture: str, height: int,
                                                       width: int) -> None:
    model = request.getfixturevalue(model_fixture)
    images = _images(2, height, width)
    masks = [torch.ones(1, height, width, dtype=torch.bool) for _ in range(2)]
    boxes = [torch.tensor([[0., 0., width, height]]) for _ in range(2)]
    with torch.no_grad():
        pooled = model.mask_features(images, masks)
        dense_mean = model.dense_features(images).mean(dim=(2, 3))
        whole_box = model.region_features(images, boxes)
    assert pooled.shape == (2, EMBED_DIM)
    torch.testing.assert_close(pooled, dense_mean, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(pooled, whole_box, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize('model_fixture,stride', [('vit', PATCH), ('resnet', 32)])
def test_cell_aligned_box_mask_equals_its_roi_align_feature(request: pytest.FixtureRequest,
                                                            model_fixture: str,
                                                            stride: int) -> None:
    model = request.getfixturevalue(model_fixture)
    height, width = 8 * stride, 10 * stride
    images = _images(2, height, width, seed=1)
    # Cells: columns 2-5 / rows 3-7, columns 0-0 / rows 0-1, and columns 4-9 / rows 1-3.
    cell_boxes = [[[2, 3, 6, 8], [0, 0, 1, 2]], [[4, 1, 10, 4]]]
    boxes = [torch.tensor(b, dtype=torch.float) * stride for b in cell_boxes]
    masks = [torch.stack([_box_mask(height, width, [c * stride for c in box]) for box in b])
             for b in cell_boxes]
    with torch.no_grad():
        pooled = model.mask_features(images, masks, normalize=True)
        roi = model.region_features(images, boxes, normalize=True)
    assert pooled.shape == (3, EMBED_DIM)
    torch.testing.assert_close(pooled, roi, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-3)


def test_partial_cells_are_weighted_by_covered_area() -> None:
    """A mask covering a whole cell and a quarter of its neighbour weighs them 4:1."""
    dense = torch.randn(1, 4, 2, 3, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 2 * PATCH, 3 * PATCH)
    mask[0, :PATCH, :PATCH] = 1  # cell (0, 0)
    mask[0, :PATCH // 2, PATCH:PATCH + PATCH // 2] = 1  # a quarter of cell (0, 1)
    weights = mask_cell_weights(mask, (2, 3))
    torch.testing.assert_close(weights[0], torch.tensor([[1., .25, 0.], [0., 0., 0.]]))
    expected = (dense[0, :, 0, 0] * 1.0 + dense[0, :, 0, 1] * 0.25) / 1.25
    torch.testing.assert_close(mask_pool(dense, [mask])[0], expected)


def test_soft_mask_weights_pixels_and_bool_equals_float() -> None:
    dense = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    hard = torch.zeros(1, 2 * PATCH, 2 * PATCH, dtype=torch.bool)
    hard[0, PATCH:, :] = True  # the bottom row of cells
    torch.testing.assert_close(mask_pool(dense, [hard]), mask_pool(dense, [hard.float()]))
    # Half weight on the top row, full weight on the bottom row: weights 0.5 and 1 per cell.
    soft = torch.full((1, 2 * PATCH, 2 * PATCH), 0.5)
    soft[0, PATCH:, :] = 1.0
    expected = (0.5 * dense[0, :, 0].sum(-1) + dense[0, :, 1].sum(-1)) / 3.0
    torch.testing.assert_close(mask_pool(dense, [soft])[0], expected)


def test_empty_mask_falls_back_to_dense_mean(vit: OpenCLIPRegion) -> None:
    images = _images(1, 224, 224)
    masks = [torch.stack([torch.zeros(224, 224, dtype=torch.bool),
                          _box_mask(224, 224, [16, 16, 64, 64])])]
    with torch.no_grad():
        pooled = vit.mask_features(images, masks)
        dense_mean = vit.dense_features(images).mean(dim=(2, 3))
    torch.testing.assert_close(pooled[0], dense_mean[0], atol=ATOL, rtol=ATOL)
    assert torch.isfinite(pooled).all()
    assert not torch.allclose(pooled[1], dense_mean[0], atol=1e-3)


def test_images_without_masks(vit: OpenCLIPRegion) -> None:
    images = _images(2, 224, 224)
    masks = [torch.zeros(0, 224, 224, dtype=torch.bool),
             _box_mask(224, 224, [0, 0, 32, 48])[None]]
    with torch.no_grad():
        pooled = vit.mask_features(images, masks)
        none = vit.mask_features(images, [torch.zeros(0, 224, 224)] * 2)
        roi = vit.region_features(images, [torch.zeros(0, 4), torch.tensor([[0., 0., 32., 48.]])])
    assert pooled.shape == (1, EMBED_DIM) and none.shape == (0, EMBED_DIM)
    torch.testing.assert_close(pooled, roi, atol=ATOL, rtol=ATOL)


def test_mask_features_backpropagate_to_trainable_tower() -> None:
    torch.manual_seed(0)
    model = OpenCLIPRegion(TINY_VIT, unlocked_vision_blocks=1).train()
    masks = [_box_mask(224, 224, [8, 8, 100, 120])[None]]
    model.mask_features(_images(1, 224, 224), masks).sum().backward()
    assert model.clip.visual.transformer.resblocks[-1].mlp.c_fc.weight.grad is not None


def test_mask_features_reject_bad_masks(vit: OpenCLIPRegion) -> None:
    images = _images(2, 224, 224)
    with pytest.raises(ValueError, match='masks: expected a list of 2 tensors'):
        vit.mask_features(images, [torch.ones(1, 224, 224)])
    with pytest.raises(ValueError, match=r'masks\[1\]: expected shape \(K_i, 224, 224\) like '
                                         r'the images, got \(1, 112, 112\)'):
        vit.mask_features(images, [torch.ones(1, 224, 224), torch.ones(1, 112, 112)])
    with pytest.raises(ValueError, match=r'masks\[0\]: expected shape .* got \(224, 224\)'):
        vit.mask_features(images, [torch.ones(224, 224), torch.ones(1, 224, 224)])
    label_map = torch.full((1, 224, 224), 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r'masks: expected bool or values in \[0, 1\], got '
                                         r'values in \[3, 3\]'):
        vit.mask_features(images[:1], [label_map])
    with pytest.raises(ValueError, match=r'multiples of the dense map size \(14, 14\), got '
                                         r'100x224'):
        mask_cell_weights(torch.ones(1, 100, 224), (14, 14))
