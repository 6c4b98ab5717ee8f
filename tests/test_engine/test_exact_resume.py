# Copyright (c) mmclim contributors. All rights reserved.
"""A run killed at any moment and resumed gives the uninterrupted run's weights bitwise.

The toy regression of :mod:`toy_regression` with ``noise``: its model and its data pipeline draw
from Python's, numpy's and torch's generators, its loss reads a per-rank queue of past outputs,
and a validation runs every ``VAL_INTERVAL`` iterations (its data loader draws a seed from
torch's generator). Runs are forked processes, killed with SIGKILL (a kill must hit a real
process), on one process and on two gloo ranks.
"""
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import torch
from conftest import (JOIN_TIMEOUT_S, assert_same_checkpoints, fork_process, free_port,
                      isolated_runner_globals, join_process)
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from toy_regression import DIE_EXIT_CODE, die_writing, toy_config

import mmclim  # noqa: F401  (installs the rank states and the default hooks)
from mmclim.engine import (RANK_STATES_KEY, build_runner, safe_save_checkpoint,
                           verified_load_checkpoint)
from mmclim.engine.launcher import adopt_resumed_seed

MAX_ITERS = 12
VAL_INTERVAL = 5
BALLAST = 100_000  # float32s: 400 kB checkpoints
# The kill comes within this many iterations of the first checkpoint, leaving at least as many
# more to run: a slow machine cannot finish the run before the kill arrives.
KILL_WITHIN = MAX_ITERS // 2
WORLD_SIZE = 2
# How the other ranks of a killed run end: killed, or failing first on the closed connection.
PEER_DIED = (-signal.SIGKILL, 1)
EPOCHS = 4  # of the epoch-based run


@pytest.fixture(autouse=True)
def _isolated_runner_globals() -> Iterator[None]:
    with isolated_runner_globals():
        yield


def _config(work_dir: Path, resume: bool, **kwargs: Any) -> Any:
    settings = dict(max_iters=MAX_ITERS, noise=True, val_interval=VAL_INTERVAL, max_keep_ckpts=1,
                    ballast=BALLAST)
    cfg = toy_config(str(work_dir), f'exact_{uuid.uuid4().hex}', **dict(settings, **kwargs))
    cfg.resume = resume
    return cfg


def _train(work_dir: Path, resume: bool, die_writing_iter: Optional[int] = None) -> None:
    """One process; with ``die_writing_iter``, it dies half-way through writing that iteration's
    checkpoint."""
    if die_writing_iter is not None:
        die_writing(f'iter_{die_writing_iter}.pth', 1)
    Runner.from_cfg(_config(work_dir, resume)).train()


def _train_rank(rank: int, port: int, work_dir: Path, resume: bool,
                die_writing_iter: Optional[int] = None) -> None:
    """One of ``WORLD_SIZE`` gloo ranks; rank 0 (which writes) may die as :func:`_train`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    if die_writing_iter is not None and rank == 0:
        die_writing(f'iter_{die_writing_iter}.pth', 1)
    cfg = _config(work_dir, resume)
    cfg.launcher = 'pytorch'
    cfg.env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=JOIN_TIMEOUT_S))
    build_runner(cfg).train()


def _start(work_dir: Path, resume: bool, world_size: int,
           die_writing_iter: Optional[int] = None) -> List[Any]:
    """The processes of one run: a single one, or ``world_size`` gloo ranks."""
    if world_size == 1:
        return [fork_process(_train, work_dir, resume, die_writing_iter)]
    port = free_port()
    return [fork_process(_train_rank, rank, port, work_dir, resume, die_writing_iter)
            for rank in range(world_size)]


def _run(work_dir: Path, resume: bool, world_size: int) -> None:
    assert [join_process(p) for p in _start(work_dir, resume, world_size)] == [0] * world_size


def _saved_iter(work_dir: Path) -> int:
    last = work_dir / 'last_checkpoint'
    return int(Path(last.read_text()).stem.split('_')[1]) if last.exists() else 0


def _kill_at_random_moment(work_dir: Path, world_size: int, rng: random.Random) -> int:
    """Start a run and SIGKILL all its processes at a random moment after its checkpoint of a
    random iteration; returns that iteration."""
    target = rng.randint(1, KILL_WITHIN)
    processes = _start(work_dir, False, world_size)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while _saved_iter(work_dir) < target:
        assert all(p.is_alive() for p in processes), 'a training died on its own'
        assert time.monotonic() < deadline, f'no checkpoint of iteration {target}'
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.05))  # into the next iteration, or its save
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    codes = [join_process(p) for p in processes]
    # A rank may see its peer's connection close and exit on its own before its signal lands.
    assert codes[0] == -signal.SIGKILL and all(code in PEER_DIED for code in codes[1:]), codes
    return target


def _final(work_dir: Path) -> Path:
    return work_dir / f'iter_{MAX_ITERS}.pth'


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Dict[int, Path]:
    """The final checkpoints of uninterrupted runs, by number of processes."""
    finals = {}
    for world_size in (1, WORLD_SIZE):
        work_dir = tmp_path_factory.mktemp(f'uninterrupted{world_size}')
        _run(work_dir, False, world_size)
        finals[world_size] = _final(work_dir)
    return finals


@pytest.mark.parametrize('world_size', [1, WORLD_SIZE], ids=['one process', 'two processes'])
def test_kill_9_at_a_random_moment_then_resume_equals_the_uninterrupted_run(
        uninterrupted: Dict[int, Path], tmp_path: Path, world_size: int) -> None:
    seed = random.randrange(2**32)
    iteration = _kill_at_random_moment(tmp_path, world_size, random.Random(seed))
    resumed_from = _saved_iter(tmp_path)
    assert iteration <= resumed_from < MAX_ITERS, f'seed {seed}'
    _run(tmp_path, True, world_size)
    log = '\n'.join(path.read_text() for path in sorted(tmp_path.glob('*/*.log')))
    assert f'resumed epoch: 0, iter: {resumed_from}' in log, f'seed {seed}'
    assert 'Resume is not exact' not in log, f'seed {seed}'
    assert_same_checkpoints(uninterrupted[world_size], _final(tmp_path))


@pytest.mark.parametrize('world_size', [1, WORLD_SIZE], ids=['one process', 'two processes'])
def test_a_kill_inside_a_save_then_resume_equals_the_uninterrupted_run(
        uninterrupted: Dict[int, Path], tmp_path: Path, world_size: int) -> None:
    """Killed writing the checkpoint after a validation's: the resume starts from the state
    saved before the validation ran, which the uninterrupted run continued after it. With two
    processes rank 0 dies and the other is killed, as a launcher does."""
    iteration = VAL_INTERVAL + 1
    processes = _start(tmp_path, False, world_size, iteration)
    assert join_process(processes[0]) == DIE_EXIT_CODE
    for process in processes[1:]:
        os.kill(process.pid, signal.SIGKILL)
        assert join_process(process) in PEER_DIED
    assert _saved_iter(tmp_path) == iteration - 1, f'killed writing iter_{iteration}.pth'
    _run(tmp_path, True, world_size)
    assert_same_checkpoints(uninterrupted[world_size], _final(tmp_path))


def test_every_rank_state_is_in_the_checkpoint(uninterrupted: Dict[int, Path]) -> None:
    metas = {world_size: torch.load(path, weights_only=True)['meta']
             for world_size, path in uninterrupted.items()}
    states = metas[WORLD_SIZE][RANK_STATES_KEY]
    assert len(states) == WORLD_SIZE and len(metas[1][RANK_STATES_KEY]) == 1
    # Each rank's data stream is its own, and so is its queue of past outputs.
    assert states[0]['data'] != states[1]['data']
    queues = [state['modules']['queue']['feats'] for state in states]
    assert queues[0].shape == queues[1].shape == (8, 1) and not torch.equal(*queues)


class _Stop(Exception):
    """Raised by ``_StopAfterEpoch``."""


@HOOKS.register_module(force=True)
class _StopAfterEpoch(Hook):
    """Stops a run after the checkpoint of an epoch (the run's last hook)."""

    priority = 'LOWEST'

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner: Runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise _Stop


def _train_epochs(work_dir: Path, resume: bool, stop_after: Optional[int] = None) -> Runner:
    """An epoch-based run of the noisy toy: 4 epochs of 4 iterations, each followed by its
    checkpoint and a validation."""
    cfg = _config(work_dir, resume, ballast=0, val_interval=1)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=EPOCHS, val_interval=1)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=True, interval=1)
    cfg.log_processor = dict(by_epoch=True)
    if stop_after is not None:
        cfg.custom_hooks = [dict(type='_StopAfterEpoch', epoch=stop_after)]
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    except _Stop:
        pass
    return runner


def test_an_epoch_based_run_resumes_exactly_from_an_epoch_checkpoint(tmp_path: Path) -> None:
    """Nothing is replayed: the data of the main process draws from the restored generators."""
    _train_epochs(tmp_path / 'full', False)
    _train_epochs(tmp_path / 'split', False, stop_after=2)
    assert Path((tmp_path / 'split' / 'last_checkpoint').read_text()).name == 'epoch_2.pth'
    runner = _train_epochs(tmp_path / 'split', True)
    assert runner.epoch == EPOCHS
    assert_same_checkpoints(tmp_path / 'full' / f'epoch_{EPOCHS}.pth',
                            tmp_path / 'split' / f'epoch_{EPOCHS}.pth')


def _rewrite(path: Path, edit: Any) -> None:
    checkpoint = verified_load_checkpoint(str(path), map_location='cpu')
    edit(checkpoint['meta'])
    safe_save_checkpoint(checkpoint, str(path))


@pytest.mark.parametrize('edit, overrides, message', [
    (lambda meta: meta.pop(RANK_STATES_KEY), {}, 'the checkpoint holds no random-generator'),
    (lambda meta: meta[RANK_STATES_KEY].append(meta[RANK_STATES_KEY][0]), {},
     'the checkpoint was saved by 2 processes, this run has 1'),
    (None, dict(train_dataloader=dict(batch_size=3)),
     "after replaying 3 batches, rank 0's data stream is not the saved run's"),
],
                         ids=['no states', 'other world size', 'other batch size'])
def test_what_cannot_be_restored_is_a_warning(tmp_path: Path, edit: Any, overrides: dict,
                                              message: str) -> None:
    Runner.from_cfg(_config(tmp_path, False, max_iters=3, ballast=0)).train()
    if edit is not None:
        _rewrite(tmp_path / 'iter_3.pth', edit)
    cfg = _config(tmp_path, True, max_iters=4, ballast=0)
    cfg.merge_from_dict(overrides)
    Runner.from_cfg(cfg).train()
    log = '\n'.join(path.read_text() for path in sorted(tmp_path.glob('*/*.log')))
    assert f'Resume is not exact: {message}' in log
    assert (tmp_path / 'iter_4.pth').is_file()


def test_a_resume_without_a_configured_seed_takes_the_checkpoints(tmp_path: Path) -> None:
    safe_save_checkpoint(dict(meta=dict(seed=1234, iter=2), state_dict={}),
                         str(tmp_path / 'iter_2.pth'))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    cfg = _config(tmp_path, True)
    cfg.randomness = dict(seed=None, deterministic=False)
    adopt_resumed_seed(cfg)
    assert cfg.randomness == dict(seed=1234, deterministic=False)
    fresh = _config(tmp_path, False)
    fresh.randomness = dict(seed=None)
    adopt_resumed_seed(fresh)  # not a resume: a seed of its own
    assert fresh.randomness == dict(seed=None)
