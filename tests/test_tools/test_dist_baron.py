# Copyright (c) mmclim contributors. All rights reserved.
"""The toy BARON + CLIM config trains on two CPU processes (gloo) with its three sources."""
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_tool
from test_dist_detic import detic_workspace  # noqa: F401 (the toy data, CLIP and vocabulary)

TOY_BARON_CLIM = (REPO_ROOT / 'configs' / 'baron' / 'toy' /
                  'baron-clim_r18-fpn_toy-shapes-caption.py')


@pytest.mark.slow
def test_toy_baron_clim_trains_with_two_processes(
        detic_workspace: Path, tmp_path: Path) -> None:  # noqa: F811
    options = ['model.text_encoder.pretrained=toy_clip.pt',
               'model.roi_head.bbox_head.class_embeddings=classes.npy', 'load_from=None',
               'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',
               'train_cfg.max_iters=2', 'train_dataloader.num_workers=0',
               'default_hooks.logger.interval=1']
    run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_BARON_CLIM), '2',
              '--work-dir', str(tmp_path / 'run'), '--cfg-options', *options],
             cwd=detic_workspace)
    log = next((tmp_path / 'run').glob('*/*.log')).read_text()
    # Both caption branches train next to detection, on each process's own 4 + 2 + 2 images.
    line = re.search(r'Iter\(train\) \[2/2\].*', log).group(0)
    for key in ('loss_cls', 'loss_caption_caption_batch', 'loss_caption_mosaic_batch'):
        assert re.search(rf'{key}: [0-9.]+', line), (key, line)
    assert (tmp_path / 'run' / 'iter_2.pth').is_file()
