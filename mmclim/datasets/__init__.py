# Copyright (c) mmclim contributors. All rights reserved.
from .toy_shapes import class_names, generate_shape_scenes
from .transforms import CachedMosaicPseudoRegion, MosaicPseudoRegion

__all__ = [
    'class_names', 'generate_shape_scenes', 'MosaicPseudoRegion', 'CachedMosaicPseudoRegion'
]
