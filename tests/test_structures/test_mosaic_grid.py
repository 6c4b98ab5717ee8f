# Copyright (c) mmclim contributors. All rights reserved.
import numpy as np
import pytest

from mmclim.structures import (grid_cells, grid_edges, normalize_boxes, sample_cell_groups, to_grid,
                               to_grid_choices)


@pytest.mark.parametrize('grid,canvas', [((2, 2), (1024, 1024)), ((3, 3), (1000, 1000)),
                                         ((4, 4), (224, 300)), ((7, 5), (101, 37)),
                                         ((1, 1), (5, 9))])
def test_cells_tile_the_canvas_exactly(grid, canvas) -> None:
    cells = grid_cells(grid, canvas)
    assert cells.shape == (grid[0] * grid[1], 4)
    coverage = np.zeros(canvas, dtype=int)
    for x1, y1, x2, y2 in cells:
        assert x2 > x1 and y2 > y1
        coverage[y1:y2, x1:x2] += 1
    assert (coverage == 1).all()  # no gap, no overlap
    # row-major: cell r * cols + c is at row r, column c
    rows, cols = grid
    for index, (x1, y1, _, _) in enumerate(cells):
        r, c = divmod(index, cols)
        assert x1 == grid_edges(canvas[1], cols)[c] and y1 == grid_edges(canvas[0], rows)[r]
    normalized = normalize_boxes(cells, canvas)
    assert normalized.min() == 0 and normalized.max() == 1
    np.testing.assert_allclose(normalized[-1, 2:], [1, 1])


def test_cell_sizes_differ_by_at_most_one_pixel() -> None:
    widths = np.diff(grid_edges(1024, 3))
    assert widths.tolist() == [341, 342, 341]


def test_grid_parsing_and_errors() -> None:
    assert to_grid(3) == (3, 3) and to_grid((2, 4)) == (2, 4)
    assert to_grid_choices([2, (3, 3), 4]) == ((2, 2), (3, 3), (4, 4))
    with pytest.raises(ValueError, match='grid_choices must have distinct cell counts'):
        to_grid_choices([(1, 4), (2, 2)])
    with pytest.raises(ValueError, match='positive'):
        to_grid((0, 2))
    with pytest.raises(ValueError, match='non-empty'):
        to_grid_choices([])
    with pytest.raises(ValueError, match='cannot divide a side of 3 pixels into 4 cells'):
        grid_edges(3, 4)


def test_cell_groups_are_distinct_rectangles_of_two_or_more_cells() -> None:
    # A 2x2 grid has 5 rectangles of two or more cells: 2 rows, 2 columns and the whole grid.
    rectangles = {(0, 1), (2, 3), (0, 2), (1, 3), (0, 1, 2, 3)}
    groups = sample_cell_groups((2, 2), 5, np.random.default_rng(0))
    assert {tuple(group) for group in groups} == rectangles and len(groups) == 5
    for group in sample_cell_groups((3, 4), 6, np.random.default_rng(1)):
        rows = sorted({cell // 4 for cell in group})
        cols = sorted({cell % 4 for cell in group})
        # Row-major cells of the full rectangle spanned by the rows and columns it touches.
        assert group == [r * 4 + c for r in range(rows[0], rows[-1] + 1)
                         for c in range(cols[0], cols[-1] + 1)]
        assert len(group) >= 2
    with pytest.raises(ValueError, match='a 2x2 grid has 5 rectangles'):
        sample_cell_groups((2, 2), 6)
