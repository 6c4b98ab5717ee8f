# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/train.py`` and ``tools/test.py`` on the toy detector config: a diverging run stops
naming the iteration and the loss terms, and a corrupted checkpoint is refused naming the file.
(A kill while saving: ``test_train_resume.py``.)"""
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest
import torch
from conftest import TOY_CONFIG, assert_intact, python_tool, run_subprocess

DIVERGING_LR = 1e6
DIVERGING_ITERS = 6


def _train_args(work_dir: Path, max_iters: int, *extra: str) -> List[str]:
    return [str(TOY_CONFIG), '--work-dir', str(work_dir), '--cfg-options',
            f'train_cfg.max_iters={max_iters}', 'default_hooks.checkpoint.interval=1',
            'default_hooks.logger.interval=1', *extra]


@pytest.fixture(scope='module')
def diverged_run(toy_workspace: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """``tools/train.py`` on the toy detector with a learning rate of 1e6, saving every step."""
    work_dir = tmp_path_factory.mktemp('diverged')
    proc = run_subprocess(python_tool('train.py', *_train_args(
        work_dir, DIVERGING_ITERS, f'optim_wrapper.optimizer.lr={DIVERGING_LR}')), toy_workspace)
    proc.work_dir = work_dir
    return proc


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_iteration_and_the_loss_terms(
        diverged_run: subprocess.CompletedProcess) -> None:
    output = diverged_run.stdout + diverged_run.stderr
    assert diverged_run.returncode != 0, output[-4000:]
    found = re.search(r'non-finite loss at iteration (\d+) \(epoch 1\): (.*?); stopping', output)
    assert found, output[-4000:]
    iteration = int(found.group(1))
    logged = [int(k) for k in re.findall(rf'Iter\(train\) \[(\d+)/{DIVERGING_ITERS}\]', output)]
    assert logged == list(range(1, iteration)), 'the step before the stop is the last one logged'
    terms = dict(term.split('=') for term in found.group(2).split(', '))
    assert terms and {'loss_cls', 'loss_bbox'} & set(terms), terms
    assert all(not torch.isfinite(torch.tensor(float(value))) for value in terms.values()), terms

    saved = sorted(diverged_run.work_dir.glob('iter_*.pth'))
    assert [path.name for path in saved] == [f'iter_{k}.pth' for k in range(1, iteration)]
    for path in saved:
        for name, value in assert_intact(path)['state_dict'].items():
            assert bool(torch.isfinite(value).all()), f'{path.name}: {name}'


@pytest.mark.slow
def test_the_test_tool_refuses_a_corrupted_checkpoint_naming_it(
        toy_workspace: Path, tmp_path: Path, diverged_run: subprocess.CompletedProcess) -> None:
    source = diverged_run.work_dir / 'iter_1.pth'
    flipped = tmp_path / 'iter_1.pth'
    shutil.copy(source, flipped)
    shutil.copy(f'{source}.sha256', f'{flipped}.sha256')
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    # The flipped byte lies in the weights: torch reads the file without noticing.
    original = torch.load(source, weights_only=True)
    corrupted = torch.load(flipped, weights_only=True)
    changed = [name for name, value in original['state_dict'].items()
               if not torch.equal(value, corrupted['state_dict'][name])]
    assert len(changed) == 1, changed

    proc = run_subprocess(python_tool('test.py', str(TOY_CONFIG), str(flipped), '--work-dir',
                                      str(tmp_path / 'test')), toy_workspace)
    assert proc.returncode != 0
    assert f'checkpoint {flipped} is corrupted' in proc.stderr, proc.stderr[-4000:]
