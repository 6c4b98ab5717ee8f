# Copyright (c) mmclim contributors. All rights reserved.
"""mmclim: CLIM (Contrastive Language-Image Mosaic) as an MMDetection 3.x plugin.

Importing the package registers every mmclim component into ``mmdet.registry`` and applies the
compatibility fixes that mmengine 0.10.7 and lvis 0.5.3 need under torch>=2.6 and numpy>=2, and
the torchvision fallback of mmcv's RoIAlign, NMS and focal loss on devices mmcv's ops were not built
for (:mod:`mmclim.models.utils.ops_fallback`).
"""
from . import datasets, engine, evaluation, models, structures
from .version import __version__, version_info

engine.allow_mmengine_checkpoint_types()
evaluation.patch_lvis_numpy_aliases()
models.utils.install_ops_fallback()

__all__ = [
    '__version__', 'version_info', 'datasets', 'engine', 'evaluation', 'models', 'structures'
]
