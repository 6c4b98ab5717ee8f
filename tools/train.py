# Copyright (c) mmclim contributors. All rights reserved.
"""Train a model from an mmclim (or any mmdet) config with the MMEngine runner."""
import argparse
import os

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmclim.engine import load_config, setup_cpu_distributed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with mmclim')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--amp', action='store_true', help='enable automatic mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate by total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; with no path, from the latest checkpoint in the '
        'work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, as key=value pairs (e.g. train_cfg.max_iters=100)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise KeyError(f'--auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
