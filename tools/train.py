# Copyright (c) mmclim contributors. All rights reserved.
"""Train a model from an mmclim (or any mmdet) config with the MMEngine runner.

With ``import mmclim`` (every mmclim config imports it) checkpoints are written atomically with a
``.sha256`` checksum that ``--resume`` and ``load_from`` verify, a run killed at any moment resumes
from its last complete checkpoint exactly (every rank's random generators are restored; a config
without ``randomness.seed`` takes the checkpoint's), and a non-finite loss stops the run (see
:mod:`mmclim`).
"""
import argparse

from mmclim.engine import (AMP_DTYPES, add_runner_args, enable_amp, load_config, managed_runner,
                           parse_runner_args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with mmclim')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed-precision training (autocast; bfloat16 on GPUs that have it, see --amp-dtype)')
    parser.add_argument(
        '--amp-dtype', choices=AMP_DTYPES, default='auto',
        help="autocast dtype of --amp: 'auto' (bfloat16 where the GPU has it, else float16)")
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate by total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; with no path, from the latest checkpoint in the '
        'work dir (its .sha256 checksum is verified when present)')
    add_runner_args(parser)
    return parse_runner_args(parser)


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)

    if args.amp:
        enable_amp(cfg, args.amp_dtype)
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

    # The teardown stops dataloader workers and destroys the process group before exit.
    with managed_runner(cfg) as runner:
        runner.train()


if __name__ == '__main__':
    main()
