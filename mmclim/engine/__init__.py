# Copyright (c) mmclim contributors. All rights reserved.
from .checkpoint_compat import allow_mmengine_checkpoint_types, mmengine_checkpoint_globals
from .default_hooks import install_default_hooks, with_mmclim_default_hooks
from .exact_resume import (RANK_STATES_KEY, ReplayableDataIterator, gather_rank_states,
                           install_exact_resume)
from .hooks import ExactResumeHook, NonFiniteLossError, NonFiniteLossHook, WeightEnsembleHook
from .launcher import (AMP_DTYPES, add_runner_args, amp_dtype, build_runner, enable_amp,
                       load_config, managed_runner, parse_runner_args, setup_cpu_distributed,
                       shutdown_dataloader_workers, teardown_runner)
from .non_finite import NonFiniteTensorError, assert_finite, first_non_finite
from .random_states import (RandomStream, capture_random_states, isolated_random_states,
                            restore_random_states)
from .safe_checkpoint import (ChecksumMismatchError, install_safe_checkpoints, safe_save_checkpoint,
                              verified_load_checkpoint, verify_checksum, write_file_atomically)
from .schedulers import WarmupCosineLR

__all__ = [
    'allow_mmengine_checkpoint_types', 'mmengine_checkpoint_globals', 'install_default_hooks',
    'with_mmclim_default_hooks', 'RANK_STATES_KEY', 'ReplayableDataIterator', 'gather_rank_states',
    'install_exact_resume', 'ExactResumeHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'WeightEnsembleHook',
    'AMP_DTYPES', 'add_runner_args', 'amp_dtype', 'build_runner', 'enable_amp', 'load_config',
    'managed_runner', 'parse_runner_args', 'setup_cpu_distributed', 'shutdown_dataloader_workers',
    'teardown_runner', 'NonFiniteTensorError', 'assert_finite', 'first_non_finite',
    'ChecksumMismatchError', 'install_safe_checkpoints', 'safe_save_checkpoint',
    'verified_load_checkpoint', 'verify_checksum', 'write_file_atomically', 'RandomStream',
    'capture_random_states', 'isolated_random_states', 'restore_random_states', 'WarmupCosineLR'
]
