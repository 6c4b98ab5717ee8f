# Copyright (c) mmclim contributors. All rights reserved.
"""Config, launcher set-up and teardown shared by ``tools/train.py`` and ``tools/test.py``."""
import argparse
import contextlib
import datetime
import gc
import logging
import os
import os.path as osp
from typing import Iterator, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import BaseLoop, Runner
from mmengine.runner.checkpoint import find_latest_checkpoint

# Backend used when a distributed launcher is asked for on a machine without CUDA.
CPU_DIST_BACKEND = 'gloo'

# The runner's loops: each attribute holds a built loop, or the config of a loop never built.
RUNNER_LOOP_ATTRS = ('_train_loop', '_val_loop', '_test_loop')

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
AMP_DTYPES = ('auto', 'bfloat16', 'float16')


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """Add the options both tools take: ``--work-dir``, ``--cfg-options``, ``--launcher`` and
    ``--local-rank`` (passed by ``torch.distributed.launch``; torchrun sets ``LOCAL_RANK``)."""
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and metrics')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, as key=value pairs (e.g. train_cfg.max_iters=100)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and export ``LOCAL_RANK`` when the launcher did not."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def adopt_resumed_seed(cfg: Config) -> None:
    """A resumed run whose config sets no ``randomness.seed`` takes the checkpoint's.

    mmengine restores the checkpoint's seed only after the data loaders and samplers were built
    with one drawn anew, so the resumed data order would differ. The checkpoint resumed
    (``load_from`` with ``resume``, else the work dir's latest) is read on the CPU with its
    tensors memory-mapped; other storage is left as it is.

    Args:
        cfg (Config): The run's config; its ``randomness`` is updated in place.
    """
    randomness = dict(cfg.get('randomness') or {})
    if not cfg.get('resume') or randomness.get('seed') is not None:
        return
    path = cfg.get('load_from') or find_latest_checkpoint(cfg.work_dir)
    if not path or not osp.isfile(path):
        return
    seed = torch.load(path, map_location='cpu', mmap=True, weights_only=True)['meta'].get('seed')
    if seed is not None:
        cfg.randomness = dict(randomness, seed=seed)
        print_log(f'randomness.seed is not set: using the resumed checkpoint\'s seed {seed}',
                  logger='current')


def build_runner(cfg: Config) -> Runner:
    """The config's runner (``runner_type`` or mmengine's), after :func:`setup_cpu_distributed`
    and :func:`adopt_resumed_seed`."""
    setup_cpu_distributed(cfg)
    adopt_resumed_seed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def load_config(config: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Load a config, merge command-line overrides and fill in ``work_dir`` and ``launcher``.

    Args:
        config (str): Path of the config file.
        cfg_options (dict, optional): ``--cfg-options`` overrides. Defaults to None.
        work_dir (str, optional): ``--work-dir``; it wins over the config's own ``work_dir``,
            which wins over ``./work_dirs/<config name>``. Defaults to None.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``. Defaults to
            ``'none'``.

    Returns:
        Config: The merged config.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} does not exist')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def amp_dtype(requested: str = 'auto') -> str:
    """The autocast dtype of ``--amp``: ``'auto'`` is bfloat16 on a CUDA device that has it
    (Ampere and later), else float16."""
    if requested not in AMP_DTYPES:
        raise ValueError(f'--amp-dtype: expected one of {AMP_DTYPES}, got {requested!r}')
    if requested != 'auto':
        return requested
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return 'bfloat16' if bf16 else 'float16'


def enable_amp(cfg: Config, dtype: str = 'auto') -> None:
    """Train under autocast: mmengine's ``AmpOptimWrapper`` with :func:`amp_dtype`'s dtype.

    float16 gets a dynamic loss scale; bfloat16, whose range is float32's, none (a fixed scale of
    1, so the scaler still skips a step whose gradients are not finite). mmclim's contrastive
    loss and RoIAlign run in float32 whatever the autocast.

    Args:
        cfg (Config): The config; its ``optim_wrapper`` is changed in place.
        dtype (str): ``'auto'``, ``'bfloat16'`` or ``'float16'``. Defaults to ``'auto'``.
    """
    dtype = amp_dtype(dtype)
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.dtype = dtype
    cfg.optim_wrapper.loss_scale = 'dynamic' if dtype == 'float16' else 1.0


def setup_cpu_distributed(cfg: Config) -> None:
    """Let a distributed launcher run on a machine without CUDA, with the gloo backend.

    mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and mmengine wraps the model
    in DDP with ``device_ids=[LOCAL_RANK]``; both fail without a GPU. When ``cfg.launcher`` is
    not ``'none'`` and CUDA is unavailable, this initialises the process group with gloo (so the
    runner's own ``init_dist`` is skipped) and sets ``device_ids=None`` for the DDP wrapper, as
    CPU modules need. With CUDA, or without a launcher, the config is left unchanged.

    Args:
        cfg (Config): The config; ``env_cfg.dist_cfg.backend`` and ``model_wrapper_cfg`` are
            updated in place.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(
            f'launcher={cfg.launcher!r} on a machine without CUDA is not supported; '
            f"use launcher='pytorch' (tools/dist_train.sh), which falls back to gloo")
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', CPU_DIST_BACKEND) != CPU_DIST_BACKEND:
        print_log(f"no CUDA device: using the {CPU_DIST_BACKEND} backend instead of "
                  f"env_cfg.dist_cfg.backend={dist_cfg['backend']!r}", logger='current')
    dist_cfg['backend'] = CPU_DIST_BACKEND
    if not torch_dist.is_initialized():
        timeout = dist_cfg.get('timeout')
        kwargs = {} if timeout is None else dict(timeout=datetime.timedelta(seconds=timeout))
        torch_dist.init_process_group(
            backend=CPU_DIST_BACKEND,
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg


def shutdown_dataloader_workers(runner: Runner) -> int:
    """Stop the worker processes of the dataloaders the runner's loops have started.

    A dataloader with ``num_workers > 0`` keeps its workers in its iterator: with
    ``persistent_workers=True`` for the whole run (``DataLoader._iterator``), and in an
    ``IterBasedTrainLoop`` also whenever ``max_iters`` ends an epoch early (the loop's own
    ``dataloader_iterator``). Left alone, they are shut down by the iterators' finalizers while
    the interpreter exits. Loops never built are skipped: building one now would build its
    dataloader.

    Args:
        runner (Runner): The runner, after ``train()``, ``val()`` or ``test()``.

    Returns:
        int: How many iterators with worker processes were shut down.
    """
    iterators = []
    for name in RUNNER_LOOP_ATTRS:
        loop = getattr(runner, name, None)
        if not isinstance(loop, BaseLoop):
            continue
        iterators.append(getattr(loop.dataloader, '_iterator', None))
        iterators.append(getattr(getattr(loop, 'dataloader_iterator', None), '_iterator', None))
    shut_down = set()
    for iterator in iterators:
        # Only the multi-process iterator has workers (torch's _MultiProcessingDataLoaderIter);
        # its _shutdown_workers is what its __del__ calls, and is a no-op the second time.
        shutdown = getattr(iterator, '_shutdown_workers', None)
        if callable(shutdown) and id(iterator) not in shut_down:
            shutdown()
            shut_down.add(id(iterator))
    return len(shut_down)


def teardown_runner(runner: Optional[Runner] = None, synchronize: bool = True) -> None:
    """Release what a run holds outside the main thread, while the interpreter is still whole.

    In this order: the dataloader worker processes (:func:`shutdown_dataloader_workers`), then,
    when a process group is initialised, a barrier (``synchronize`` only), the runner's model
    wrapper (DDP holds a reference to the process group; the runner keeps the wrapped model) and
    the process group itself, destroyed and collected so that its C++ destructor runs now.

    Without this, the gloo process group was destroyed only during interpreter shutdown. Its
    worker threads release each finished collective (and the tensors it used) shortly after the
    caller's ``wait()`` returns; when a tensor's Python object had been freed meanwhile, that
    release takes the GIL. A worker that got there after finalisation had begun was ended by
    Python with ``pthread_exit`` inside a ``noexcept`` destructor, so the process aborted
    (SIGABRT, "terminate called without an active exception") after a run that had finished.
    The destructor joins the worker threads: none is left after this function unless something
    other than the runner's model wrapper still holds the process group.

    Args:
        runner (Runner, optional): The runner; None when building it failed. Defaults to None.
        synchronize (bool): Wait for every rank at a barrier before destroying the process
            group, so that no rank closes its connections while another still communicates.
            Pass False on error paths: the other ranks may never reach the barrier. Defaults
            to True.
    """
    if runner is not None:
        num_iterators = shutdown_dataloader_workers(runner)
        if num_iterators:
            print_log(f'shut down the workers of {num_iterators} dataloader iterator(s)',
                      logger='current', level=logging.DEBUG)
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    backend, rank = torch_dist.get_backend(), torch_dist.get_rank()
    if synchronize:
        torch_dist.barrier()
    if runner is not None and is_model_wrapper(getattr(runner, 'model', None)):
        runner.model = runner.model.module
    torch_dist.destroy_process_group()
    gc.collect()  # the group dies with its last reference: also any held in reference cycles
    print_log(f'destroyed the {backend} process group (rank {rank})', logger='current',
              level=logging.DEBUG)


@contextlib.contextmanager
def managed_runner(cfg: Config) -> Iterator[Runner]:
    """:func:`build_runner` for a ``with`` block that ends with :func:`teardown_runner`.

    On an exception (building the runner included) the teardown skips the barrier and logs its
    own errors instead of raising them, so the original exception is the one reported.

    Args:
        cfg (Config): The config, as for :func:`build_runner`.

    Yields:
        Runner: The runner.
    """
    runner = None
    try:
        runner = build_runner(cfg)
        yield runner
    except BaseException:
        try:
            teardown_runner(runner, synchronize=False)
        except Exception as error:  # keep the run's own error as the one raised
            print_log(f'teardown after a failed run failed too: {error!r}', logger='current',
                      level=logging.WARNING)
        raise
    teardown_runner(runner)
