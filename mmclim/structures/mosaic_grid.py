# Copyright (c) mmclim contributors. All rights reserved.
"""The one grid geometry of CLIM's mosaics.

A canvas of ``(height, width)`` pixels is divided into ``rows x cols`` cells whose integer edges
are ``round(i * size / n)``, so the cells tile the canvas exactly (no gap, no overlap) even when
the size is not a multiple of the grid. Cells are numbered row-major. Both the pipeline transform
(:class:`mmclim.datasets.transforms.MosaicPseudoRegion`) and the tensor batch path
(:func:`mmclim.models.utils.batch_mosaic`) take their cells from here.
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

Grid = Tuple[int, int]
# The paper's best setting draws 2x2, 3x3 or 4x4 at random per mosaic (CLIM, Table 2b).
DEFAULT_GRID_CHOICES: Tuple[Grid, ...] = ((2, 2), (3, 3), (4, 4))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def to_grid(grid: Union[int, Sequence[int]], field: str = 'grid') -> Grid:
    """Read a grid given as ``n`` (an ``n x n`` grid) or ``(rows, cols)``.

    Args:
        grid (int | Sequence[int]): The grid.
        field (str): Name used in the error message. Defaults to ``'grid'``.

    Returns:
        tuple[int, int]: ``(rows, cols)``, both >= 1.
    """
    if isinstance(grid, (int, np.integer)):
        rows, cols = grid, grid
    elif isinstance(grid, Sequence) and not isinstance(grid, str) and len(grid) == 2:
        rows, cols = grid
    else:
        rows = cols = None
    # A bool is an int to Python; True as a 1x1 grid is a mistake, not a grid.
    if not (_is_int(rows) and _is_int(cols) and rows >= 1 and cols >= 1):
        raise ValueError(f'{field} must be a positive int n or a pair (rows, cols) of positive '
                         f'ints, got {grid!r}')
    return int(rows), int(cols)


def to_grid_choices(grid_choices: Sequence[Union[int, Sequence[int]]],
                    field: str = 'grid_choices') -> Tuple[Grid, ...]:
    """Read a non-empty list of grids whose cell counts are distinct.

    Distinct counts let a transform recover the grid from the number of images it was given.

    Args:
        grid_choices (Sequence[int | Sequence[int]]): Grids as accepted by :func:`to_grid`.
        field (str): Name used in error messages. Defaults to ``'grid_choices'``.

    Returns:
        tuple[tuple[int, int], ...]: The grids as ``(rows, cols)``.
    """
    if not isinstance(grid_choices, Sequence) or isinstance(grid_choices, str) or len(
            grid_choices) == 0:
        raise ValueError(f'{field} must be a non-empty list of grids, got {grid_choices!r}')
    grids = tuple(to_grid(grid, field) for grid in grid_choices)
    counts = [rows * cols for rows, cols in grids]
    if len(set(counts)) != len(counts):
        raise ValueError(
            f'{field} must have distinct cell counts, got {grids} with counts {counts}')
    return grids


def grid_edges(size: int, num: int) -> np.ndarray:
    """Integer cell edges along one side.

    Args:
        size (int): Side of the canvas in pixels.
        num (int): Number of cells along the side.

    Returns:
        np.ndarray: Shape (num + 1,), int64, from 0 to ``size``, strictly increasing.
    """
    if num < 1 or size < num:
        raise ValueError(f'cannot divide a side of {size} pixels into {num} cells')
    return np.round(np.arange(num + 1) * size / num).astype(np.int64)


def grid_cells(grid: Grid, canvas_size: Tuple[int, int]) -> np.ndarray:
    """Pixel boxes of the cells of a grid on a canvas, row-major.

    Args:
        grid (tuple[int, int]): ``(rows, cols)``.
        canvas_size (tuple[int, int]): ``(height, width)`` of the canvas.

    Returns:
        np.ndarray: Shape (rows * cols, 4), int64, ``(x1, y1, x2, y2)`` with exclusive ``x2, y2``;
        cell ``r * cols + c`` is row ``r``, column ``c``.
    """
    rows, cols = grid
    height, width = canvas_size
    ys, xs = grid_edges(height, rows), grid_edges(width, cols)
    y1, x1 = np.meshgrid(ys[:-1], xs[:-1], indexing='ij')
    y2, x2 = np.meshgrid(ys[1:], xs[1:], indexing='ij')
    return np.stack([x1, y1, x2, y2], axis=-1).reshape(-1, 4)


def normalize_boxes(boxes: np.ndarray, canvas_size: Tuple[int, int]) -> np.ndarray:
    """Divide pixel boxes by the canvas size.

    Args:
        boxes (np.ndarray): Shape (N, 4), ``(x1, y1, x2, y2)`` in pixels.
        canvas_size (tuple[int, int]): ``(height, width)``.

    Returns:
        np.ndarray: Shape (N, 4), float32, in [0, 1].
    """
    height, width = canvas_size
    return (boxes / np.array([width, height, width, height])).astype(np.float32)


def sample_cell_groups(grid: Grid, num_groups: int,
                       rng: Optional[np.random.Generator] = None) -> List[List[int]]:
    """Draw distinct rectangles of two or more cells of a grid, as the official Detic + CLIM
    caption loss composes extra pseudo regions from a mosaic (``DeticCaptionWithComposition.
    _sample_pseudo_regions``: 4 per mosaic on OV-COCO, 2 on OV-LVIS; the paper does not
    describe them).

    Each draw takes two rows and two columns with replacement, sorted, so a rectangle's
    probability is that of the official sampler; single cells and repeats are drawn again.

    Args:
        grid (tuple[int, int]): ``(rows, cols)``.
        num_groups (int): Rectangles to draw; at most the number of multi-cell rectangles
            of the grid.
        rng (np.random.Generator, optional): Random source. Defaults to None (numpy's global
            one, seeded by the runner).

    Returns:
        List[List[int]]: ``num_groups`` lists of row-major cell indices.
    """
    rows, cols = grid
    available = (rows * (rows + 1) // 2) * (cols * (cols + 1) // 2) - rows * cols
    if not 0 <= num_groups <= available:
        raise ValueError(f'num_groups: a {rows}x{cols} grid has {available} rectangles of two or '
                         f'more cells, asked for {num_groups}')
    integers = np.random.randint if rng is None else rng.integers
    groups: List[List[int]] = []
    while len(groups) < num_groups:
        r0, r1 = sorted(int(v) for v in integers(0, rows, size=2))
        c0, c1 = sorted(int(v) for v in integers(0, cols, size=2))
        group = [r * cols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        if len(group) > 1 and group not in groups:
            groups.append(group)
    return groups
