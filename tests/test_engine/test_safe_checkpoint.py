# Copyright (c) mmclim contributors. All rights reserved.
"""Checkpoints survive a kill at any moment, carry a checksum and never hold NaN.

The runs train :mod:`toy_regression` in forked processes (a kill must hit a real process; forking
avoids importing mmclim again), saving every iteration with ``max_keep_ckpts=1``: the setting in
which mmengine deleted the old checkpoint before the new one was written.
"""
import hashlib
import os
import random
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import torch
from conftest import JOIN_TIMEOUT_S, fork_process, isolated_runner_globals, join_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from toy_regression import DIE_EXIT_CODE, die_writing, toy_config

import mmclim  # noqa: F401  (installs the safe checkpoints)
from mmclim.engine import ChecksumMismatchError, NonFiniteTensorError

BALLAST = 4_000_000  # float32s: 16 MB checkpoints, so that saving is most of an iteration
KILLS = 3


@pytest.fixture(autouse=True)
def _isolated_runner_globals() -> Iterator[None]:
    with isolated_runner_globals():
        yield


def _train(work_dir: Path, resume: bool = False, **kwargs: Any) -> Runner:
    cfg = toy_config(str(work_dir), f'safe_ckpt_{uuid.uuid4().hex}', **kwargs)
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_intact(path: Path) -> Dict[str, Any]:
    """``path`` exists, its ``.sha256`` file (sha256sum format) records its hash, it loads."""
    assert path.is_file(), f'{path} does not exist'
    recorded = (path.parent / f'{path.name}.sha256').read_text().split()
    assert recorded == [_sha256(path), path.name]
    return torch.load(path, map_location='cpu', weights_only=True)


def _last_checkpoint(work_dir: Path) -> Path:
    return Path((work_dir / 'last_checkpoint').read_text())


def _checkpoint_files(work_dir: Path) -> List[str]:
    """The files of a work dir but the config dumps (``<timestamp>.py``) and log folders."""
    return sorted(path.name for path in work_dir.iterdir()
                  if path.is_file() and not path.name.endswith('.py'))


def _log_text(work_dir: Path) -> str:
    return '\n'.join(log.read_text() for log in sorted(work_dir.glob('*/*.log')))


def _train_and_die_writing(work_dir: Path, name: str, occurrence: int) -> None:
    """Train, and die half-way through the ``occurrence``-th write of a file whose name contains
    ``name`` (checksum files aside)."""
    die_writing(name, occurrence)
    _train(work_dir, max_iters=3, max_keep_ckpts=1, ballast=1000)


@pytest.mark.parametrize('name, occurrence', [('iter_2.pth', 1), ('last_checkpoint', 2)])
def test_a_kill_while_saving_keeps_the_previous_checkpoint_and_resume_continues(
        tmp_path: Path, name: str, occurrence: int) -> None:
    """Killed while writing the second checkpoint, or ``last_checkpoint`` after it."""
    work_dir = tmp_path / 'run'
    assert join_process(fork_process(_train_and_die_writing, work_dir, name,
                                     occurrence)) == DIE_EXIT_CODE

    checkpoint = _assert_intact(work_dir / 'iter_1.pth')
    assert checkpoint['meta']['iter'] == 1
    assert _last_checkpoint(work_dir) == work_dir / 'iter_1.pth'
    if name == 'iter_2.pth':
        assert not (work_dir / 'iter_2.pth').exists()
    else:  # written completely before last_checkpoint
        assert _assert_intact(work_dir / 'iter_2.pth')['meta']['iter'] == 2

    assert join_process(
        fork_process(_train, work_dir, True, max_iters=3, max_keep_ckpts=1, ballast=1000)) == 0
    assert 'resumed epoch: 0, iter: 1' in _log_text(work_dir)
    assert _assert_intact(work_dir / 'iter_3.pth')['meta']['iter'] == 3
    assert _last_checkpoint(work_dir) == work_dir / 'iter_3.pth'
    # max_keep_ckpts=1 removed the others, with their checksums; the killed save's
    # temporary file is gone too.
    assert _checkpoint_files(work_dir) == ['iter_3.pth', 'iter_3.pth.sha256', 'last_checkpoint']


def _train_until_killed(work_dir: Path, resume: bool) -> None:
    _train(work_dir, resume, max_iters=100_000, max_keep_ckpts=1, ballast=BALLAST)


def test_kill_9_at_random_moments_never_loses_the_run(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    work_dir = tmp_path / 'run'
    last = work_dir / 'last_checkpoint'
    iters: List[int] = []
    for kill in range(KILLS):
        before = last.read_text() if last.exists() else None
        process = fork_process(_train_until_killed, work_dir, kill > 0)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        # Wait for this process's first checkpoint, then kill it somewhere in the next ones.
        while not last.exists() or last.read_text() == before:
            assert process.is_alive(), f'training {kill} died on its own (seed {seed})'
            assert time.monotonic() < deadline, f'training {kill} saved nothing (seed {seed})'
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(process.pid, signal.SIGKILL)
        assert join_process(process) == -signal.SIGKILL
        iters.append(_assert_intact(_last_checkpoint(work_dir))['meta']['iter'])
    assert iters == sorted(iters) and iters[0] >= 1, f'seed {seed}'

    assert join_process(
        fork_process(
            _train, work_dir, True, max_iters=iters[-1] + 1, max_keep_ckpts=1,
            ballast=BALLAST)) == 0, f'seed {seed}'
    assert f'resumed epoch: 0, iter: {iters[-1]}' in _log_text(work_dir)
    assert _assert_intact(work_dir / f'iter_{iters[-1] + 1}.pth')['meta']['iter'] == iters[-1] + 1
    # No temporary file of a killed save nor checksum of a removed checkpoint is left. (A kill
    # between writing last_checkpoint and removing the dropped checkpoint may leave the latter.)
    files = _checkpoint_files(work_dir)
    assert f'iter_{iters[-1] + 1}.pth' in files and not [
        name for name in files
        if name.startswith('.') or name.endswith('.sha256') and name[:-len('.sha256')] not in files
    ], files


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def flipped_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint with one byte of its tensor data flipped, which ``torch.load`` reads."""
    _train(tmp_path / 'run', max_iters=1, ballast=10_000)
    path = tmp_path / 'run' / 'iter_1.pth'
    original = torch.load(path, weights_only=True)
    _flip_middle_byte(path)
    corrupted = torch.load(path, weights_only=True)  # the corruption is silent to torch
    changed = [
        key for key, value in original['state_dict'].items()
        if not torch.equal(value, corrupted['state_dict'][key])
    ]
    assert changed == ['ballast'], 'the flipped byte should lie in the tensor data'
    return path


@pytest.mark.parametrize('resume', [True, False], ids=['resume', 'load_from'])
def test_a_corrupted_checkpoint_is_refused_naming_the_file(flipped_checkpoint: Path,
                                                           resume: bool) -> None:
    cfg = toy_config(str(flipped_checkpoint.parent.parent / 'next'), f'flip_{uuid.uuid4().hex}')
    cfg.load_from, cfg.resume = str(flipped_checkpoint), resume
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ChecksumMismatchError, match=re.escape(str(flipped_checkpoint))):
        runner.train()


def test_a_checkpoint_without_checksum_loads_with_a_warning(tmp_path: Path) -> None:
    _train(tmp_path / 'run', max_iters=1)
    path = tmp_path / 'run' / 'iter_1.pth'
    (tmp_path / 'run' / 'iter_1.pth.sha256').unlink()
    cfg = toy_config(str(tmp_path / 'next'), f'nosum_{uuid.uuid4().hex}', max_iters=1)
    cfg.load_from = str(path)
    Runner.from_cfg(cfg).train()
    assert f'checkpoint {path} has no checksum file' in _log_text(tmp_path / 'next')


@HOOKS.register_module(force=True)
class PoisonAfterIteration(Hook):
    """Writes NaN into the model's weight after iteration ``iteration``."""

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW) saves that iteration

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch: Any = None,
                         outputs: Any = None) -> None:
        if runner.iter + 1 == self.iteration:
            with torch.no_grad():
                runner.model.linear.weight[0, 1] = float('nan')


def test_a_non_finite_state_is_never_written_and_the_previous_checkpoint_stays(
        tmp_path: Path) -> None:
    cfg = toy_config(str(tmp_path), f'poison_{uuid.uuid4().hex}', max_iters=4, max_keep_ckpts=1)
    cfg.custom_hooks = [dict(type='PoisonAfterIteration', iteration=2)]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(
            NonFiniteTensorError,
            match=re.escape(f"checkpoint {tmp_path / 'iter_2.pth'}: tensor "
                            "'state_dict/linear.weight' holds 1 NaN")):
        runner.train()
    assert _checkpoint_files(tmp_path) == ['iter_1.pth', 'iter_1.pth.sha256', 'last_checkpoint']
    assert _last_checkpoint(tmp_path) == tmp_path / 'iter_1.pth'
    state = _assert_intact(tmp_path / 'iter_1.pth')['state_dict']
    assert all(bool(torch.isfinite(value).all()) for value in state.values())


def test_a_new_best_checkpoint_replaces_the_previous_one_and_its_checksum(tmp_path: Path) -> None:
    cfg = toy_config(str(tmp_path), f'best_{uuid.uuid4().hex}', max_iters=3, interval=100, lr=0.001)
    cfg.merge_from_dict(
        dict(
            val_dataloader=cfg.test_dataloader,
            val_evaluator=cfg.test_evaluator,
            val_cfg=dict(),
            train_cfg=dict(val_interval=1),
            default_hooks=dict(checkpoint=dict(save_best='mse', rule='less', save_last=False))))
    Runner.from_cfg(cfg).train()
    val_lines = re.findall(r'Iter\(val\) \[\d+/\d+\] +mse: ([0-9.]+)', _log_text(tmp_path))
    mse = [float(value) for value in val_lines]
    assert len(mse) == 3 and mse == sorted(mse, reverse=True), mse  # each is a new best
    assert _checkpoint_files(tmp_path) == ['best_mse_iter_3.pth', 'best_mse_iter_3.pth.sha256']
    _assert_intact(tmp_path / 'best_mse_iter_3.pth')
