# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F

from mmclim.models.utils import batch_mosaic, sample_mosaic_grids
from mmclim.structures import grid_cells


def test_batch_mosaic_tiles_groups_and_keeps_leftovers() -> None:
    images = torch.rand(29, 3, 32, 32)
    order = torch.randperm(29, generator=torch.Generator().manual_seed(0))
    out = batch_mosaic(images, [(2, 2), (4, 4), (3, 3)], canvas_size=100, order=order)
    assert out.canvases.shape == (3, 3, 100, 100)
    assert out.boxes.shape == (29, 4) and out.single_index.numel() == 0
    torch.testing.assert_close(out.source_index, order)
    expected_boxes = torch.cat([torch.as_tensor(grid_cells(g, (100, 100))).float()
                                for g in [(2, 2), (4, 4), (3, 3)]])
    torch.testing.assert_close(out.boxes, expected_boxes)
    assert out.canvas_index.tolist() == [0] * 4 + [1] * 16 + [2] * 9
    for box, canvas, source in zip(out.boxes.long(), out.canvas_index, out.source_index):
        x1, y1, x2, y2 = box.tolist()
        expected = F.interpolate(images[source][None], size=(y2 - y1, x2 - x1), mode='bilinear',
                                 align_corners=False, antialias=True)[0]
        torch.testing.assert_close(out.canvases[canvas, :, y1:y2, x1:x2], expected)
    rois = out.rois()
    assert rois.shape == (29, 5) and rois[:, 0].tolist() == out.canvas_index.float().tolist()


def test_leftover_images_are_singles() -> None:
    images = torch.rand(7, 3, 8, 8)
    out = batch_mosaic(images, [(2, 2)], canvas_size=(16, 24))
    assert out.canvases.shape == (1, 3, 16, 24)
    assert out.source_index.tolist() == [0, 1, 2, 3]
    assert out.single_index.tolist() == [4, 5, 6]


def test_sample_grids_respects_budget_and_choices() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        grids = sample_mosaic_grids(29, [2, 3, 4], generator=generator)
        used = sum(r * c for r, c in grids)
        assert used <= 29 and 29 - used < 4  # stops only when not even 2x2 fits
    grids = sample_mosaic_grids(29, [2, 3, 4], max_mosaic_images=10, generator=generator)
    assert sum(r * c for r, c in grids) <= 10


def test_batch_smaller_than_smallest_grid_is_an_error() -> None:
    with pytest.raises(ValueError, match='batch of 3 images .* smallest grid .* needs 4'):
        sample_mosaic_grids(3, [2, 3])
    with pytest.raises(ValueError, match=r'need 9 images, the batch has 4'):
        batch_mosaic(torch.rand(4, 3, 8, 8), [3], canvas_size=30)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        batch_mosaic(torch.rand(3, 8, 8), [2], canvas_size=30)
