# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F

from mmclim.models.utils import batch_mosaic
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


def test_a_2x2_mosaic_matches_the_official_canvas_inside_its_cells() -> None:
    """The official code (clim.py) concatenates four 224 images into a 448 canvas and resizes
    it to 1024 (bicubic). Resizing each image into its 512 cell samples the same positions, so
    away from the cell borders (where the official kernel reads the neighbouring image) the
    pixels are the same."""
    images = torch.rand(4, 3, 224, 224)
    ours = batch_mosaic(images, [(2, 2)], canvas_size=1024, mode='bicubic').canvases[0]
    tiled = torch.cat([torch.cat([images[0], images[1]], dim=2),
                       torch.cat([images[2], images[3]], dim=2)], dim=1)
    official = F.interpolate(tiled[None], size=1024, mode='bicubic')[0]
    inside = torch.ones(1024, dtype=torch.bool)
    inside[504:520] = False  # 2 source pixels either side of the border, x 512/224
    inside[:8] = inside[-8:] = False  # the canvas edges: both clamp, at other scales
    torch.testing.assert_close(ours[:, inside][:, :, inside], official[:, inside][:, :, inside],
                               atol=1e-5, rtol=1e-5)


def test_bad_batches_are_errors() -> None:
    with pytest.raises(ValueError, match=r'need 9 images, the batch has 4'):
        batch_mosaic(torch.rand(4, 3, 8, 8), [3], canvas_size=30)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        batch_mosaic(torch.rand(3, 8, 8), [2], canvas_size=30)
