# Copyright (c) mmclim contributors. All rights reserved.
"""Config and launcher set-up shared by ``tools/train.py`` and ``tools/test.py``."""
import argparse
import datetime
import os
import os.path as osp
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

# Backend used when a distributed launcher is asked for on a machine without CUDA.
CPU_DIST_BACKEND = 'gloo'


LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


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


def build_runner(cfg: Config) -> Runner:
    """The config's runner (``runner_type`` or mmengine's), after :func:`setup_cpu_distributed`."""
    setup_cpu_distributed(cfg)
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
