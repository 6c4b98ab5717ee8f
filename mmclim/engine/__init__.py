# Copyright (c) mmclim contributors. All rights reserved.
from .checkpoint_compat import allow_mmengine_checkpoint_types, mmengine_checkpoint_globals
from .launcher import load_config, setup_cpu_distributed

__all__ = [
    'allow_mmengine_checkpoint_types', 'mmengine_checkpoint_globals', 'load_config',
    'setup_cpu_distributed'
]
