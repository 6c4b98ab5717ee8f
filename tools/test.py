# Copyright (c) mmclim contributors. All rights reserved.
"""Evaluate a checkpoint with the config's test dataloader and evaluator."""
import argparse
import os

from mmclim.engine import add_runner_args, load_config, managed_runner, parse_runner_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model with mmclim')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', help='checkpoint file; refused when it does not match its .sha256 checksum')
    parser.add_argument(
        '--out', help='dump predictions to this pickle file for offline evaluation')
    parser.add_argument(
        '--amp', action='store_true', help='run the test with automatic mixed precision')
    add_runner_args(parser)
    return parse_runner_args(parser)


def main() -> None:
    args = parse_args()
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out!r}')
        cfg.test_evaluator = [*cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        cfg.test_evaluator.append(dict(type='DumpDetResults', out_file_path=args.out))

    # The teardown stops dataloader workers and destroys the process group before exit.
    with managed_runner(cfg) as runner:
        runner.test()


if __name__ == '__main__':
    main()
