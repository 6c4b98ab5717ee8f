# Copyright (c) mmclim contributors. All rights reserved.
from .mosaic_grid import (DEFAULT_GRID_CHOICES, Grid, grid_cells, grid_edges, normalize_boxes,
                          to_grid, to_grid_choices)

__all__ = [
    'DEFAULT_GRID_CHOICES', 'Grid', 'grid_cells', 'grid_edges', 'normalize_boxes', 'to_grid',
    'to_grid_choices'
]
