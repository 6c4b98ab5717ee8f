# Copyright (c) mmclim contributors. All rights reserved.
from .checkpoint_compat import allow_mmengine_checkpoint_types, mmengine_checkpoint_globals
from .hooks import WeightEnsembleHook
from .launcher import (AMP_DTYPES, add_runner_args, amp_dtype, build_runner, enable_amp,
                       load_config, managed_runner, parse_runner_args, setup_cpu_distributed,
                       shutdown_dataloader_workers, teardown_runner)
from .schedulers import WarmupCosineLR

__all__ = [
    'allow_mmengine_checkpoint_types', 'mmengine_checkpoint_globals', 'WeightEnsembleHook',
    'AMP_DTYPES', 'add_runner_args', 'amp_dtype', 'build_runner', 'enable_amp', 'load_config',
    'managed_runner', 'parse_runner_args', 'setup_cpu_distributed', 'shutdown_dataloader_workers',
    'teardown_runner', 'WarmupCosineLR'
]
