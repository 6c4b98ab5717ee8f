# Copyright (c) mmclim contributors. All rights reserved.
from .cached_mosaic_pseudo_region import CachedMosaicPseudoRegion
from .caption_pseudo_box import CaptionPseudoBox
from .load_panoptic_regions import LoadPanopticRegions
from .mosaic_pseudo_region import MosaicPseudoRegion
from .random_resized_crop import RandomResizedCrop

__all__ = [
    'MosaicPseudoRegion', 'CachedMosaicPseudoRegion', 'CaptionPseudoBox', 'LoadPanopticRegions',
    'RandomResizedCrop'
]
