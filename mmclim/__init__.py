# Copyright (c) mmclim contributors. All rights reserved.
"""mmclim: CLIM (Contrastive Language-Image Mosaic) as an MMDetection 3.x plugin.

Importing the package registers every mmclim component into ``mmdet.registry`` and applies the
compatibility fixes that mmengine 0.10.7 and lvis 0.5.3 need under torch>=2.6 and numpy>=2, and
the torchvision fallback of mmcv's RoIAlign, NMS and focal loss on devices mmcv's ops were not built
for (:mod:`mmclim.models.utils.ops_fallback`).

It also makes training runs safe to kill and refuses to keep training on NaN, for every config
that imports it (``custom_imports = dict(imports=['mmclim'])``):

* checkpoints are written atomically, with a ``<checkpoint>.sha256`` checksum verified on
  ``--resume``, ``load_from`` and ``tools/test.py``; a checkpoint holding NaN or infinity is
  never written, and ``max_keep_ckpts`` removes an old checkpoint only after the new one and
  ``last_checkpoint`` are complete (:mod:`mmclim.engine.safe_checkpoint`);
* every runner gets the default hook ``non_finite_loss`` (:class:`mmclim.engine.NonFiniteLossHook`):
  a non-finite loss stops the run naming the iteration and the loss terms, or, with
  ``default_hooks = dict(non_finite_loss=dict(action='skip'))``, skips the optimizer step
  (:mod:`mmclim.engine.default_hooks`);
* ``--resume`` is exact: checkpoints carry every rank's random generators and per-rank state,
  and the default hook ``exact_resume`` (:class:`mmclim.engine.ExactResumeHook`) restores them
  and replays the data stream from its own generators (:mod:`mmclim.engine.exact_resume`).

Weights are read as data: checkpoints through ``torch.load(weights_only=True)`` with an
allow-list of mmengine's own types (downloads included, :mod:`mmclim.engine.checkpoint_compat`),
OpenAI's TorchScript archives by reading their tensors from the zip without running their code
(:mod:`mmclim.models.backbones.torchscript_archive`).
"""
from . import apis, datasets, engine, evaluation, models, structures, visualization
from .version import __version__, version_info

engine.allow_mmengine_checkpoint_types()
engine.checkpoint_compat.load_url_checkpoints_as_data()
engine.install_safe_checkpoints()
engine.install_exact_resume()
engine.install_default_hooks()
evaluation.patch_lvis_numpy_aliases()
models.utils.install_ops_fallback()

__all__ = [
    '__version__', 'version_info', 'apis', 'datasets', 'engine', 'evaluation', 'models',
    'structures', 'visualization'
]
