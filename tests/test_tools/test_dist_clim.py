# Copyright (c) mmclim contributors. All rights reserved.
"""Two CPU processes with gathered negatives log the loss of one process with the global batch."""
import json
import re
from pathlib import Path
from typing import Optional

import pytest
import torch
from conftest import REPO_ROOT, python_tool, run_tool

from mmclim.datasets import generate_shape_captions
from mmclim.models.backbones import OpenCLIPRegion

TOY_CLIM = REPO_ROOT / 'configs' / 'clim' / 'clim_toy-vit_toy-shapes.py'
TOY_IMAGE = REPO_ROOT / 'configs' / 'clim' / 'clip-image_toy-vit_toy-shapes.py'
GLOBAL_BATCH = 8
TOY_BATCH = 64  # the toy CLIM config's images per GPU: two 2x2 + 3x3 + 4x4 groups, 6 singles
NUM_IMAGES = 2 * TOY_BATCH  # one full batch per rank


@pytest.fixture(scope='module')
def caption_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy captioned images with exactly one caption each, so no random caption choice, and
    random toy CLIP weights standing in for the baseline the configs continue."""
    root = tmp_path_factory.mktemp('captions')
    ann_file = generate_shape_captions(str(root / 'data' / 'toy_shapes'), 'caption_train',
                                       NUM_IMAGES, image_size=64, seed=0)
    coco = json.loads(ann_file.read_text())
    first = {}
    for ann in coco['annotations']:
        first.setdefault(ann['image_id'], ann)
    coco['annotations'] = list(first.values())
    ann_file.write_text(json.dumps(coco))
    torch.manual_seed(0)
    torch.save(OpenCLIPRegion('mmclim-toy-vit').clip.state_dict(), root / 'toy_clip.pt')
    return root


def _options(batch_size: Optional[int] = None) -> list:
    batch = [] if batch_size is None else [f'train_dataloader.batch_size={batch_size}']
    return ['--cfg-options', 'model.clip.pretrained=toy_clip.pt', 'model.class_embeddings=None',
            'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None', 'custom_hooks=[]',
            'train_cfg.max_iters=1', *batch, 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1']


def _first_loss(work_dir: Path) -> float:
    logs = sorted(work_dir.glob('*/*.log'))
    text = logs[0].read_text()  # rank 0's log (the only one without log_level=DEBUG)
    return float(re.search(r'Iter\(train\) \[1/1\].*? loss: ([0-9.]+)', text).group(1))


@pytest.mark.slow
def test_rank0_logs_the_global_batch_loss(caption_workspace: Path, tmp_path: Path) -> None:
    # The whole image at every draw (area and ratio 1): the processes' crops cannot differ.
    whole = ['train_dataloader.dataset.pipeline.1.scale=(1.0,1.0)',
             'train_dataloader.dataset.pipeline.1.ratio=(1.0,1.0)']
    run_tool(python_tool('train.py', str(TOY_IMAGE), '--work-dir', str(tmp_path / 'single'),
                         *_options(GLOBAL_BATCH), *whole), cwd=caption_workspace)
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_IMAGE), '2',
              '--work-dir', str(tmp_path / 'dist'), *_options(GLOBAL_BATCH // 2), *whole],
             cwd=caption_workspace)
    single, dist = _first_loss(tmp_path / 'single'), _first_loss(tmp_path / 'dist')
    assert single > 0 and abs(single - dist) < 2e-4, (single, dist)


@pytest.mark.slow
def test_clim_trains_with_two_processes(caption_workspace: Path, tmp_path: Path) -> None:
    """The toy CLIM config as shipped (its own batch and mosaics) on two processes."""
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_CLIM), '2',
              '--work-dir', str(tmp_path / 'clim'), *_options()],
             cwd=caption_workspace)
    log = next((tmp_path / 'clim').glob('*/*.log')).read_text()
    # 64 images per rank: two groups of one 2x2, 3x3 and 4x4 mosaic, 58 pseudo regions
    assert re.search(r'Iter\(train\) \[1/1\].*loss: [0-9.]+.*num_regions: 58\.0000', log)
    assert (tmp_path / 'clim' / 'iter_1.pth').is_file()
