# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/train.py`` and ``tools/test.py`` on the toy detector config: a kill while saving loses
nothing, a diverging run stops naming the iteration and the loss terms, and a corrupted
checkpoint is refused naming the file."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from conftest import REPO_ROOT, TOY_CONFIG, python_tool, run_tool

DIE_EXIT_CODE = 9
DIVERGING_LR = 1e6
DIVERGING_ITERS = 6

# Runs a tool with ``open`` patched so that the process dies (exit code 9, no clean-up, as a
# kill) half-way through writing the file named in $DIE_WHILE_WRITING.
DIE_WHILE_WRITING = '''\
import builtins, os, runpy, sys

real_open = builtins.open


class DyingFile:
    def __init__(self, file):
        self.file = file

    def write(self, data):
        data = memoryview(data).cast('B')
        self.file.write(data[:len(data) // 2])
        self.file.flush()
        os.fsync(self.file.fileno())
        os._exit({code})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def __getattr__(self, name):
        return getattr(self.file, name)


def dying_open(file, mode='r', *args, **kwargs):
    opened = real_open(file, mode, *args, **kwargs)
    base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ''
    if 'b' in mode and set(mode) & set('wxa') and os.environ['DIE_WHILE_WRITING'] in base \\
            and not base.endswith('.sha256'):
        return DyingFile(opened)
    return opened


builtins.open = dying_open
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''.format(code=DIE_EXIT_CODE)


def _run(args: List[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a command as ``run_tool`` does, but return whatever its exit code."""
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS='1', **env)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _train_args(work_dir: Path, max_iters: int, *extra: str) -> List[str]:
    return [str(TOY_CONFIG), '--work-dir', str(work_dir), '--cfg-options',
            f'train_cfg.max_iters={max_iters}', 'default_hooks.checkpoint.interval=1',
            'default_hooks.logger.interval=1', *extra]


def _assert_intact(path: Path) -> Dict[str, Any]:
    """``path`` exists, its ``.sha256`` file (sha256sum format) records its hash, it loads."""
    assert path.is_file(), f'{path} does not exist'
    recorded = (path.parent / f'{path.name}.sha256').read_text().split()
    assert recorded == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]
    return torch.load(path, map_location='cpu', weights_only=True)


def _checkpoint_files(work_dir: Path) -> List[str]:
    return sorted(path.name for path in work_dir.iterdir()
                  if path.is_file() and not path.name.endswith('.py'))


@pytest.mark.slow
def test_a_kill_while_saving_loses_nothing_and_resume_continues(toy_workspace: Path,
                                                                tmp_path: Path) -> None:
    work_dir = tmp_path / 'run'
    wrapper = tmp_path / 'die_while_writing.py'
    wrapper.write_text(DIE_WHILE_WRITING)
    args = _train_args(work_dir, 2, 'default_hooks.checkpoint.max_keep_ckpts=1')
    killed = _run([sys.executable, str(wrapper), *python_tool('train.py', *args)[1:]],
                  toy_workspace, DIE_WHILE_WRITING='iter_2.pth')
    assert killed.returncode == DIE_EXIT_CODE, killed.stderr[-4000:]

    assert _assert_intact(work_dir / 'iter_1.pth')['meta']['iter'] == 1
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_1.pth')
    assert not (work_dir / 'iter_2.pth').exists()

    proc = run_tool(python_tool('train.py', *args, '--resume'), cwd=toy_workspace)
    assert 'resumed epoch: 0, iter: 1' in proc.stdout + proc.stderr
    assert _assert_intact(work_dir / 'iter_2.pth')['meta']['iter'] == 2
    assert _checkpoint_files(work_dir) == ['iter_2.pth', 'iter_2.pth.sha256', 'last_checkpoint']


@pytest.fixture(scope='module')
def diverged_run(toy_workspace: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """``tools/train.py`` on the toy detector with a learning rate of 1e6, saving every step."""
    work_dir = tmp_path_factory.mktemp('diverged')
    proc = _run(python_tool('train.py', *_train_args(
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
        for name, value in _assert_intact(path)['state_dict'].items():
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

    proc = _run(python_tool('test.py', str(TOY_CONFIG), str(flipped), '--work-dir',
                            str(tmp_path / 'test')), toy_workspace)
    assert proc.returncode != 0
    assert f'checkpoint {flipped} is corrupted' in proc.stderr, proc.stderr[-4000:]
