# Copyright (c) mmclim contributors. All rights reserved.
"""Mosaic a batch that is already a tensor on the device (the CLIM training step's path)."""
from collections import defaultdict
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmclim.structures import grid_cells, to_grid


class BatchMosaic(NamedTuple):
    """The output of :func:`batch_mosaic`.

    Attributes:
        canvases (Tensor): Shape (M, C, S_h, S_w), one per grid.
        boxes (Tensor): Shape (K, 4), float32, each pseudo region ``(x1, y1, x2, y2)`` in its
            canvas's pixels, canvases in order and cells row-major within a canvas.
        canvas_index (Tensor): Shape (K,), int64, the canvas of each box.
        source_index (Tensor): Shape (K,), int64, the input image in each box.
        single_index (Tensor): Shape (L,), int64, the input images left out of every mosaic.
    """
    canvases: Tensor
    boxes: Tensor
    canvas_index: Tensor
    source_index: Tensor
    single_index: Tensor

    def rois(self) -> Tensor:
        """Boxes in RoIAlign's format.

        Returns:
            Tensor: Shape (K, 5), ``(canvas_index, x1, y1, x2, y2)``.
        """
        return torch.cat([self.canvas_index[:, None].to(self.boxes), self.boxes], dim=1)


def batch_mosaic(images: Tensor,
                 grids: Sequence[Union[int, Sequence[int]]],
                 canvas_size: Union[int, Tuple[int, int]],
                 order: Optional[Tensor] = None,
                 mode: str = 'bilinear') -> BatchMosaic:
    """Tile consecutive images of a batch into one canvas per grid.

    Images ``order[0 : n_0]`` fill the first grid's cells row-major, the next ``n_1`` the second,
    and so on; the images left over are returned as singles. Every cell is an exact cell of
    :func:`mmclim.structures.grid_cells`, the geometry the pipeline transform uses too. Each
    image is resized to its cell (no crop: crop in the data pipeline if wanted).

    Args:
        images (Tensor): Shape (B, C, H, W), float.
        grids (Sequence[int | Sequence[int]]): The grids in order, e.g. those of
            :meth:`mmclim.structures.MosaicPolicy.draw`.
        canvas_size (int | tuple[int, int]): Canvas ``(height, width)`` or one int.
        order (Tensor, optional): Shape (B,), a permutation of the batch. Defaults to identity.
        mode (str): ``F.interpolate`` mode; ``'bilinear'`` and ``'bicubic'`` antialias when they
            shrink an image. Defaults to ``'bilinear'``.

    Returns:
        BatchMosaic: Canvases on ``images.device`` and their boxes.
    """
    if images.dim() != 4:
        raise ValueError(f'images must be (B, C, H, W), got shape {tuple(images.shape)}')
    num_images, channels = images.shape[:2]
    canvas_hw = (canvas_size, canvas_size) if isinstance(canvas_size, int) else tuple(canvas_size)
    grids = [to_grid(grid, 'grids') for grid in grids]
    needed = sum(rows * cols for rows, cols in grids)
    if needed > num_images:
        raise ValueError(f'grids {grids} need {needed} images, the batch has {num_images}')
    device = images.device
    order = torch.arange(num_images, device=device) if order is None else order.to(device)
    canvases = images.new_empty((len(grids), channels, *canvas_hw))

    all_cells = [grid_cells(grid, canvas_hw) for grid in grids]
    # Group every (canvas, cell) by cell size, so each size is one interpolate call.
    by_size = defaultdict(list)
    start = 0
    for canvas_id, cells in enumerate(all_cells):
        for cell_id, (x1, y1, x2, y2) in enumerate(cells):
            by_size[(int(y2 - y1), int(x2 - x1))].append((canvas_id, start + cell_id, y1, x1))
        start += len(cells)
    for (cell_h, cell_w), placements in by_size.items():
        sources = order[[position for _, position, _, _ in placements]]
        smooth = mode in ('bilinear', 'bicubic')
        # Antialiasing only when shrinking: torch's antialiased kernels differ from the plain
        # ones even when enlarging (bicubic a = -0.5 instead of -0.75), and the official code
        # enlarges with the plain one.
        shrink = cell_h < images.shape[-2] or cell_w < images.shape[-1]
        resized = F.interpolate(images[sources], size=(cell_h, cell_w), mode=mode,
                                align_corners=False if smooth else None,
                                antialias=smooth and shrink)
        for tile, (canvas_id, _, y1, x1) in zip(resized, placements):
            canvases[canvas_id, :, y1:y1 + cell_h, x1:x1 + cell_w] = tile

    boxes = torch.as_tensor(np.concatenate(all_cells) if grids else np.zeros((0, 4)),
                            dtype=torch.float32, device=device)
    canvas_index = torch.as_tensor(
        np.repeat(np.arange(len(grids)), [len(cells) for cells in all_cells]), dtype=torch.long,
        device=device)
    return BatchMosaic(canvases, boxes, canvas_index, order[:needed], order[needed:])
