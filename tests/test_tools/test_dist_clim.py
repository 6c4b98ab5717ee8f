# Copyright (c) mmclim contributors. All rights reserved.
"""Two CPU processes with gathered negatives log the loss of one process with the global batch,
and resume the toy CLIM config exactly."""
import re
import shutil
from pathlib import Path
from typing import Optional

import pytest
from conftest import (REPO_ROOT, assert_same_checkpoints, make_caption_workspace, run_tool,
                      toy_clim_options, train_in_forks)

TOY_CLIM = REPO_ROOT / 'configs' / 'clim' / 'clim_toy-vit_toy-shapes.py'
TOY_IMAGE = REPO_ROOT / 'configs' / 'clim' / 'clip-image_toy-vit_toy-shapes.py'
GLOBAL_BATCH = 8
TOY_BATCH = 64  # the toy CLIM config's images per GPU: two 2x2 + 3x3 + 4x4 groups, 6 singles
NUM_IMAGES = 2 * TOY_BATCH  # one full batch per rank
RESUME_ITERS = 3  # the two-process run resumed from its first checkpoint


@pytest.fixture(scope='module')
def caption_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy captioned images with exactly one caption each, so no random caption choice, and
    random toy CLIP weights standing in for the baseline the configs continue."""
    return make_caption_workspace(tmp_path_factory.mktemp('captions'), NUM_IMAGES, True)


def _options(max_iters: int = 1, batch_size: Optional[int] = None) -> list:
    batch = [] if batch_size is None else [f'train_dataloader.batch_size={batch_size}']
    return [*toy_clim_options(max_iters), *batch]


def _first_loss(work_dir: Path) -> float:
    logs = sorted(work_dir.glob('*/*.log'))
    text = logs[0].read_text()  # rank 0's log (the only one without log_level=DEBUG)
    return float(re.search(r'Iter\(train\) \[1/1\].*? loss: ([0-9.]+)', text).group(1))


def _dist_train(config: Path, workspace: Path, work_dir: Path, *options: str) -> None:
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(config), '2',
              '--work-dir', str(work_dir), *options], cwd=workspace)


@pytest.mark.slow
def test_rank0_logs_the_global_batch_loss(caption_workspace: Path, tmp_path: Path) -> None:
    """The tool's steps on one process with the global batch and on two with half each, forked
    from this process (tools/dist_train.sh itself is tested in test_dist_train.py)."""
    # The whole image at every draw (area and ratio 1): the processes' crops cannot differ.
    whole = ['train_dataloader.dataset.pipeline.1.scale=(1.0,1.0)',
             'train_dataloader.dataset.pipeline.1.ratio=(1.0,1.0)']
    train_in_forks(caption_workspace, [str(TOY_IMAGE), '--work-dir', str(tmp_path / 'single'),
                                       *_options(batch_size=GLOBAL_BATCH), *whole])
    train_in_forks(caption_workspace, [str(TOY_IMAGE), '--work-dir', str(tmp_path / 'dist'),
                                       *_options(batch_size=GLOBAL_BATCH // 2), *whole],
                   world_size=2)
    single, dist = _first_loss(tmp_path / 'single'), _first_loss(tmp_path / 'dist')
    assert single > 0 and abs(single - dist) < 2e-4, (single, dist)


@pytest.mark.slow
def test_clim_trains_and_resumes_exactly_with_two_processes(caption_workspace: Path,
                                                            tmp_path: Path) -> None:
    """The toy CLIM config as shipped (its own batch and mosaics) on two processes; resumed from
    its first checkpoint, it ends with the uninterrupted run's weights, bitwise."""
    options = [*_options(RESUME_ITERS), 'default_hooks.checkpoint.interval=1']
    # The reference: the tool's steps on two ranks forked from this process.
    train_in_forks(caption_workspace, [str(TOY_CLIM), '--work-dir', str(tmp_path / 'clim'),
                                       *options, 'default_hooks.checkpoint.max_keep_ckpts=-1'],
                   world_size=2)
    log = sorted((tmp_path / 'clim').glob('*/*.log'))[0].read_text()
    # 64 images per rank: two groups of one 2x2, 3x3 and 4x4 mosaic, 58 pseudo regions
    assert re.search(r'Iter\(train\) \[1/3\].*loss: [0-9.]+.*num_regions: 58\.0000', log)

    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    for name in ('iter_1.pth', 'iter_1.pth.sha256'):
        shutil.copy(tmp_path / 'clim' / name, resumed / name)
    _dist_train(TOY_CLIM, caption_workspace, resumed, *options, '--resume',
                str(resumed / 'iter_1.pth'))
    log = next(resumed.glob('*/*.log')).read_text()
    assert 'resumed epoch: 0, iter: 1' in log and 'Resume is not exact' not in log
    assert_same_checkpoints(tmp_path / 'clim' / f'iter_{RESUME_ITERS}.pth',
                            resumed / f'iter_{RESUME_ITERS}.pth')
