# Copyright (c) mmclim contributors. All rights reserved.
"""Two CPU processes with gathered negatives log the loss of one process with the global batch."""
import json
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, python_tool, run_tool

from mmclim.datasets import generate_shape_captions

TOY_CLIM = REPO_ROOT / 'configs' / 'clim' / 'clim_toy-vit_toy-shapes.py'
TOY_IMAGE = REPO_ROOT / 'configs' / 'clim' / 'clip-image_toy-vit_toy-shapes.py'
GLOBAL_BATCH = 8


@pytest.fixture(scope='module')
def caption_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy captioned images with exactly one caption each, so no random caption choice."""
    root = tmp_path_factory.mktemp('captions')
    ann_file = generate_shape_captions(str(root / 'data' / 'toy_shapes'), 'caption_train', 16,
                                       image_size=64, seed=0)
    coco = json.loads(ann_file.read_text())
    first = {}
    for ann in coco['annotations']:
        first.setdefault(ann['image_id'], ann)
    coco['annotations'] = list(first.values())
    ann_file.write_text(json.dumps(coco))
    return root


def _options(batch_size: int) -> list:
    return ['--cfg-options', 'model.clip.pretrained=None', 'model.class_embeddings=None',
            'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None', 'train_cfg.max_iters=1',
            f'train_dataloader.batch_size={batch_size}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1']


def _first_loss(work_dir: Path) -> float:
    logs = sorted(work_dir.glob('*/*.log'))
    text = logs[0].read_text()  # rank 0's log (the only one without log_level=DEBUG)
    return float(re.search(r'Iter\(train\) \[1/1\].*? loss: ([0-9.]+)', text).group(1))


@pytest.mark.slow
def test_rank0_logs_the_global_batch_loss(caption_workspace: Path, tmp_path: Path) -> None:
    run_tool(python_tool('train.py', str(TOY_IMAGE), '--work-dir', str(tmp_path / 'single'),
                         *_options(GLOBAL_BATCH)), cwd=caption_workspace)
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_IMAGE), '2',
              '--work-dir', str(tmp_path / 'dist'), *_options(GLOBAL_BATCH // 2)],
             cwd=caption_workspace)
    single, dist = _first_loss(tmp_path / 'single'), _first_loss(tmp_path / 'dist')
    assert single > 0 and abs(single - dist) < 2e-4, (single, dist)


@pytest.mark.slow
def test_clim_trains_with_two_processes(caption_workspace: Path, tmp_path: Path) -> None:
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_CLIM), '2',
              '--work-dir', str(tmp_path / 'clim'), *_options(GLOBAL_BATCH)],
             cwd=caption_workspace)
    log = next((tmp_path / 'clim').glob('*/*.log')).read_text()
    # 8 images per rank, half of them (one 2x2 mosaic) as pseudo regions on each rank
    assert re.search(r'Iter\(train\) \[1/1\].*loss: [0-9.]+.*num_regions: 4\.0000', log)
    assert (tmp_path / 'clim' / 'iter_1.pth').is_file()
