# Copyright (c) mmclim contributors. All rights reserved.
import os
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import List

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.runner import BaseLoop
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import mmclim.engine.launcher as launcher
from mmclim.engine import (amp_dtype, enable_amp, load_config, managed_runner,
                           setup_cpu_distributed, shutdown_dataloader_workers, teardown_runner)

# torch names the worker threads of a gloo process group (ProcessGroupGloo::runLoop) so.
GLOO_WORKER_THREAD = 'pt_gloo_runloop'
DIST_TIMEOUT_S = 60


def test_load_config_work_dir_priority(tmp_path: Path) -> None:
    config = tmp_path / 'my_config.py'
    config.write_text("a = 1\nwork_dir = 'from_config'\n")
    assert load_config(str(config)).work_dir == 'from_config'
    assert load_config(str(config), work_dir='cli').work_dir == 'cli'
    config.write_text('a = 1\n')
    cfg = load_config(str(config), cfg_options={'a': 2}, launcher='pytorch')
    assert cfg.work_dir.endswith('work_dirs/my_config')
    assert cfg.a == 2 and cfg.launcher == 'pytorch'


def test_load_config_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_config(str(tmp_path / 'nope.py'))


def test_setup_cpu_distributed_leaves_single_process_alone() -> None:
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg


def _thread_names() -> List[str]:
    names = []
    for task in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{task}/comm') as comm:
                names.append(comm.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


class _Loop(BaseLoop):
    """A built loop around a given dataloader."""

    def run(self) -> None:
        pass


def test_shutdown_dataloader_workers_stops_persistent_workers() -> None:
    dataloader = DataLoader(list(range(4)), batch_size=2, num_workers=1, persistent_workers=True)
    assert len(list(dataloader)) == 2
    workers = dataloader._iterator._workers  # kept alive between epochs
    assert workers and all(worker.is_alive() for worker in workers)
    never_built = dict(type='ValLoop')
    runner = SimpleNamespace(_train_loop=_Loop(None, dataloader), _val_loop=never_built,
                             _test_loop=None)
    assert shutdown_dataloader_workers(runner) == 1
    assert not any(worker.is_alive() for worker in workers)
    assert runner._val_loop is never_built


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason='lists threads from /proc')
def test_teardown_runner_joins_the_gloo_threads(tmp_path: Path) -> None:
    """The process group dies in the teardown, not while the interpreter exits: its worker
    threads, which may still release tensors of finished collectives, are joined by then."""
    gloo_threads = _thread_names().count(GLOO_WORKER_THREAD)  # any left by other tests
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path / "init"}', rank=0,
                                  world_size=1, timeout=timedelta(seconds=DIST_TIMEOUT_S))
    try:
        model = torch.nn.Linear(2, 1)
        runner = SimpleNamespace(model=DistributedDataParallel(model), _train_loop=None,
                                 _val_loop=None, _test_loop=None)
        runner.model(torch.ones(3, 2)).sum().backward()
        tensor = torch.ones(4)
        torch_dist.all_reduce(tensor)
        del tensor
        assert _thread_names().count(GLOO_WORKER_THREAD) > gloo_threads
        teardown_runner(runner)
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    assert not torch_dist.is_initialized()
    assert _thread_names().count(GLOO_WORKER_THREAD) == gloo_threads
    assert runner.model is model  # unwrapped: the DDP wrapper held the process group


def test_managed_runner_tears_down_on_success_and_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    runner = object()
    monkeypatch.setattr(launcher, 'build_runner', lambda cfg: runner)
    monkeypatch.setattr(launcher, 'teardown_runner',
                        lambda built, synchronize=True: calls.append((built, synchronize)))
    with managed_runner(Config()) as built:
        assert built is runner
    assert calls == [(runner, True)]
    with pytest.raises(ValueError, match='in the run'):
        with managed_runner(Config()):
            raise ValueError('in the run')
    assert calls[-1] == (runner, False)  # no barrier: the other ranks may never reach it


def test_managed_runner_keeps_the_run_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_build(cfg: Config) -> None:
        raise KeyError('bad config')

    def failing_teardown(runner: object, synchronize: bool = True) -> None:
        assert runner is None and not synchronize
        raise RuntimeError('teardown failed')

    monkeypatch.setattr(launcher, 'build_runner', failing_build)
    monkeypatch.setattr(launcher, 'teardown_runner', failing_teardown)
    with pytest.raises(KeyError, match='bad config'):
        with managed_runner(Config()):
            pass


@pytest.mark.parametrize('dtype,loss_scale', [('bfloat16', 1.0), ('float16', 'dynamic')])
def test_enable_amp_sets_the_wrapper(dtype, loss_scale):
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4),
                                         clip_grad=dict(max_norm=1.0))))
    enable_amp(cfg, dtype)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == dtype and cfg.optim_wrapper.loss_scale == loss_scale
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=1.0)  # the rest is kept


def test_amp_dtype_auto_follows_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert amp_dtype('auto') == 'float16'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: True)
    assert amp_dtype('auto') == 'bfloat16'
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: False)
    assert amp_dtype('auto') == 'float16'
    with pytest.raises(ValueError, match='--amp-dtype'):
        amp_dtype('fp8')
