# Copyright (c) mmclim contributors. All rights reserved.
from .bad_image import BadImageError
from .caption_dataset import CaptionDataset
from .cc3m_caption import CC3MCaptionDataset
from .coco_caption_pair import CocoCaptionPairDataset
from .concept_pool import (build_concept_pool, count_concepts, extract_concepts, select_concepts,
                           write_concept_pool)
from .ov_splits import OV_COCO_BASE_CLASSES, OV_COCO_CLASSES, OV_COCO_NOVEL_CLASSES
from .samplers import ExactMultiSourceSampler
from .toy_shapes import (TOY_NOVEL_CLASSES, TOY_UNSEEN_PROMPT_TEMPLATES, class_names,
                         generate_shape_captions, generate_shape_scenes, write_base_only)
from .transforms import (CachedMosaicPseudoRegion, CaptionPseudoBox, LoadPanopticRegions,
                         MosaicPseudoRegion, RandomResizedCrop)
from .webdataset_captions import WebDatasetCaptions

__all__ = [
    'BadImageError', 'build_concept_pool', 'CaptionDataset', 'CaptionPseudoBox',
    'CC3MCaptionDataset', 'CocoCaptionPairDataset', 'count_concepts', 'extract_concepts',
    'class_names', 'ExactMultiSourceSampler', 'generate_shape_captions', 'generate_shape_scenes',
    'MosaicPseudoRegion', 'CachedMosaicPseudoRegion', 'LoadPanopticRegions', 'OV_COCO_BASE_CLASSES',
    'OV_COCO_CLASSES', 'OV_COCO_NOVEL_CLASSES', 'RandomResizedCrop', 'select_concepts',
    'TOY_NOVEL_CLASSES', 'TOY_UNSEEN_PROMPT_TEMPLATES', 'WebDatasetCaptions', 'write_base_only',
    'write_concept_pool'
]
