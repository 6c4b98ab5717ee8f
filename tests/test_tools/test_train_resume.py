# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/train.py`` killed inside a save loses nothing, and ``--resume`` continues the shipped toy
CLIM config exactly: the run ends with the uninterrupted run's weights and optimizer state,
bitwise.

The step draws from every generator (the batch order, each image's caption among several, the
crops, the mosaic grids and cells, the caption fed to the text tower), so a resume that does not
restore them or replays the data with other draws differs (mmclim before its exact resume: by
1.2e-3 after 30 iterations). Kills at random moments are tested on a toy model in
``tests/test_engine/test_exact_resume.py``.
"""
from pathlib import Path
from typing import List

import pytest
from conftest import (DIE_EXIT_CODE, REPO_ROOT, assert_intact, assert_same_checkpoints,
                      make_caption_workspace, python_tool, run_dying_while_writing, run_tool,
                      toy_clim_options, train_in_forks)

from mmclim.engine import RANK_STATES_KEY

TOY_CLIM = REPO_ROOT / 'configs' / 'clim' / 'clim_toy-vit_toy-shapes.py'
NUM_IMAGES = 96  # with the config's 64 images a batch, the sampler's passes end mid-batch
MAX_ITERS = 4
KILLED_AT = 3  # the run dies writing this iteration's checkpoint


@pytest.fixture(scope='module')
def caption_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy captioned images with two captions each."""
    return make_caption_workspace(tmp_path_factory.mktemp('captions'), NUM_IMAGES, False)


def _train_args(work_dir: Path, *extra: str) -> List[str]:
    return [str(TOY_CLIM), '--work-dir', str(work_dir), *toy_clim_options(MAX_ITERS),
            'default_hooks.checkpoint.interval=1', *extra]


def _train(workspace: Path, work_dir: Path, *extra: str) -> str:
    proc = run_tool(python_tool('train.py', *_train_args(work_dir, *extra)), cwd=workspace)
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_kill_inside_a_save_then_resume_equals_the_uninterrupted_run_bitwise(
        caption_workspace: Path, tmp_path: Path) -> None:
    full = tmp_path / 'full'
    # The reference: the same tool steps, forked from this process (bitwise the tool's run).
    train_in_forks(caption_workspace,
                   _train_args(full, 'default_hooks.checkpoint.max_keep_ckpts=-1'))
    assert len(assert_intact(full / f'iter_{MAX_ITERS}.pth')['meta'][RANK_STATES_KEY]) == 1

    # The shipped max_keep_ckpts=1: the save that dies is the one that would drop the previous.
    run = tmp_path / 'run'
    killed = run_dying_while_writing('train.py', _train_args(run), caption_workspace,
                                     f'iter_{KILLED_AT}.pth')
    assert killed.returncode == DIE_EXIT_CODE, killed.stderr[-4000:]
    assert assert_intact(run / f'iter_{KILLED_AT - 1}.pth')['meta']['iter'] == KILLED_AT - 1
    assert (run / 'last_checkpoint').read_text() == str(run / f'iter_{KILLED_AT - 1}.pth')
    assert not (run / f'iter_{KILLED_AT}.pth').exists()

    log = _train(caption_workspace, run, '--resume')
    assert f'resumed epoch: 0, iter: {KILLED_AT - 1}' in log
    assert f'Restored the random generators and per-rank module states (0) saved at iteration ' \
           f'{KILLED_AT - 1}' in log
    assert 'Resume is not exact' not in log
    assert f'Iter(train) [{KILLED_AT}/{MAX_ITERS}]' in log
    assert f'Iter(train) [1/{MAX_ITERS}]' not in log
    files = sorted(path.name for path in run.iterdir() if path.is_file())
    assert [name for name in files if not name.endswith('.py')] == [
        f'iter_{MAX_ITERS}.pth', f'iter_{MAX_ITERS}.pth.sha256', 'last_checkpoint']
    assert_same_checkpoints(full / f'iter_{MAX_ITERS}.pth', run / f'iter_{MAX_ITERS}.pth')
