# Copyright (c) mmclim contributors. All rights reserved.
"""The toy Detic + CLIM config trains on two CPU processes (gloo) with its three sources."""
import re
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, run_tool

from mmclim.datasets import generate_shape_captions, generate_shape_scenes, write_base_only
from mmclim.datasets.toy_shapes import OBJECT_CENTRIC_FRACTION, OBJECT_CENTRIC_SPLIT, class_names
from mmclim.models.backbones import save_clip_checkpoint
from mmclim.structures import save_class_embeddings

TOY_CLIM = REPO_ROOT / 'configs' / 'detic' / 'toy' / 'detic-clim_r18-fpn_toy-shapes-caption.py'
TOY_MODEL = 'mmclim-toy-vit'


@pytest.fixture(scope='module')
def detic_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy scenes (base boxes only) and captioned images laid out as the toy configs expect,
    random toy CLIP weights and class embeddings of its text tower's size."""
    root = tmp_path_factory.mktemp('detic')
    data = root / 'data' / 'toy_shapes'
    write_base_only(generate_shape_scenes(str(data), 'train', 8, seed=0))
    generate_shape_captions(str(data), OBJECT_CENTRIC_SPLIT, 24, seed=0,
                            object_fraction=OBJECT_CENTRIC_FRACTION)
    torch.manual_seed(0)
    clip = open_clip.create_model(TOY_MODEL, pretrained=None)
    save_clip_checkpoint(clip, str(root / 'toy_clip.pt'), dtype=torch.float32)
    embed_dim = clip.text_projection.shape[1]
    embeddings = F.normalize(torch.randn(len(class_names()), embed_dim), dim=-1)
    save_class_embeddings(str(root / 'classes.npy'), embeddings, TOY_MODEL)
    return root


def train_toy_caption_config(config: Path, workspace: Path, work_dir: Path) -> None:
    """Train a toy caption config for 2 iterations on 2 gloo processes (the workspace's data,
    CLIP and vocabulary), then check that detection and both caption branches logged a loss at
    the last iteration and the checkpoint was written."""
    options = ['model.text_encoder.pretrained=toy_clip.pt',
               'model.roi_head.bbox_head.class_embeddings=classes.npy', 'load_from=None',
               'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',
               'train_cfg.max_iters=2', 'train_dataloader.num_workers=0',
               'default_hooks.logger.interval=1']
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(config), '2',
              '--work-dir', str(work_dir), '--cfg-options', *options], cwd=workspace)
    log = next(work_dir.glob('*/*.log')).read_text()
    line = re.search(r'Iter\(train\) \[2/2\].*', log).group(0)
    for key in ('loss_cls', 'loss_caption_caption_batch', 'loss_caption_mosaic_batch'):
        assert re.search(rf'{key}: [0-9.]+', line), (key, line)
    assert (work_dir / 'iter_2.pth').is_file()


@pytest.mark.slow
def test_toy_detic_clim_trains_with_two_processes(detic_workspace: Path, tmp_path: Path) -> None:
    # Both caption branches train next to detection, on each process's own 4 + 4 + 4 images.
    train_toy_caption_config(TOY_CLIM, detic_workspace, tmp_path / 'run')
