# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/train.py --resume`` continues the shipped toy CLIM config exactly: resumed from a
checkpoint, the run ends with the uninterrupted run's weights and optimizer state, bitwise.

The step draws from every generator (the batch order, each image's caption among several, the
crops, the mosaic grids and cells, the caption fed to the text tower), so a resume that does not
restore them or replays the data with other draws differs (mmclim before its exact resume: by
1.2e-3 after 30 iterations). Killed runs are tested on a toy model in
``tests/test_engine/test_exact_resume.py``.
"""
import shutil
from pathlib import Path

import pytest
import torch
from conftest import (REPO_ROOT, assert_same_checkpoints, make_caption_workspace, python_tool,
                      run_tool, toy_clim_options)

from mmclim.engine import RANK_STATES_KEY

TOY_CLIM = REPO_ROOT / 'configs' / 'clim' / 'clim_toy-vit_toy-shapes.py'
NUM_IMAGES = 96  # with the config's 64 images a batch, the sampler's passes end mid-batch
MAX_ITERS = 4
RESUME_AT = 2


@pytest.fixture(scope='module')
def caption_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy captioned images with two captions each."""
    return make_caption_workspace(tmp_path_factory.mktemp('captions'), NUM_IMAGES, False)


def _train(workspace: Path, work_dir: Path, *extra: str) -> str:
    proc = run_tool(python_tool('train.py', str(TOY_CLIM), '--work-dir', str(work_dir),
                                *toy_clim_options(MAX_ITERS), 'default_hooks.checkpoint.interval=1',
                                *extra), cwd=workspace)
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_resume_equals_the_uninterrupted_run_bitwise(caption_workspace: Path,
                                                     tmp_path: Path) -> None:
    full = tmp_path / 'full'
    _train(caption_workspace, full, 'default_hooks.checkpoint.max_keep_ckpts=-1')
    saved = torch.load(full / f'iter_{RESUME_AT}.pth', map_location='cpu', weights_only=True)
    assert len(saved['meta'][RANK_STATES_KEY]) == 1

    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    for name in (f'iter_{RESUME_AT}.pth', f'iter_{RESUME_AT}.pth.sha256'):
        shutil.copy(full / name, resumed / name)
    log = _train(caption_workspace, resumed, '--resume', str(resumed / f'iter_{RESUME_AT}.pth'))
    assert f'resumed epoch: 0, iter: {RESUME_AT}' in log
    assert f'Restored the random generators and per-rank module states (0) saved at iteration ' \
           f'{RESUME_AT}' in log
    assert 'Resume is not exact' not in log
    assert f'Iter(train) [{RESUME_AT + 1}/{MAX_ITERS}]' in log
    assert f'Iter(train) [1/{MAX_ITERS}]' not in log
    assert_same_checkpoints(full / f'iter_{MAX_ITERS}.pth', resumed / f'iter_{MAX_ITERS}.pth')
