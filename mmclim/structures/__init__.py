# Copyright (c) mmclim contributors. All rights reserved.
from .mosaic_grid import (DEFAULT_GRID_CHOICES, Grid, grid_cells, grid_edges, normalize_boxes,
                          sample_cell_groups, to_grid, to_grid_choices)
from .mosaic_policy import COMPOSITIONS, MosaicDraw, MosaicPolicy, grid_size
from .vocabulary import (OVSplit, load_class_embeddings, load_vocabulary, read_embedding_sidecar,
                         read_split_file, save_class_embeddings, sidecar_path, split_record,
                         write_split_file)

__all__ = [
    'DEFAULT_GRID_CHOICES', 'Grid', 'grid_cells', 'grid_edges', 'normalize_boxes',
    'sample_cell_groups', 'to_grid', 'to_grid_choices', 'COMPOSITIONS', 'MosaicDraw',
    'MosaicPolicy', 'grid_size', 'OVSplit', 'load_class_embeddings', 'load_vocabulary',
    'read_embedding_sidecar',
    'read_split_file', 'save_class_embeddings', 'sidecar_path', 'split_record', 'write_split_file'
]
