# Copyright (c) mmclim contributors. All rights reserved.
from .batch_mosaic import BatchMosaic, batch_mosaic, sample_mosaic_grids

__all__ = ['BatchMosaic', 'batch_mosaic', 'sample_mosaic_grids']
