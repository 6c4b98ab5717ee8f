# Copyright (c) mmclim contributors. All rights reserved.
"""The toy RegionCLIP config trains on two gloo processes, its teacher left as it started."""
import re
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, make_caption_workspace, toy_clim_options, train_in_forks

from mmclim.structures import save_class_embeddings

TOY_REGIONCLIP = REPO_ROOT / 'configs' / 'regionclip' / 'toy' / 'regionclip_toy-vit_toy-shapes.py'
TOY_RPN = REPO_ROOT / 'configs' / 'regionclip' / 'toy' / 'rpn_r18-fpn_toy-shapes-base.py'
TOY_BATCH = 64  # the config's images per GPU, 5 proposals each
ITERS = 1


@pytest.mark.slow
def test_toy_regionclip_trains_with_two_processes(tmp_path: Path) -> None:
    workspace = make_caption_workspace(tmp_path / 'workspace', 2 * TOY_BATCH, True)
    torch.manual_seed(0)
    save_class_embeddings(str(workspace / 'concepts.npy'), torch.randn(6, 64), 'mmclim-toy-vit')
    # As shipped but for the data: random baseline and RPN weights, a random concept pool.
    train_in_forks(workspace, [
        str(TOY_REGIONCLIP), '--work-dir', str(tmp_path / 'run'), *toy_clim_options(ITERS),
        'model.concept_pool=concepts.npy', f'model.rpn.config={TOY_RPN}',
        'model.rpn.checkpoint=None'
    ], world_size=2)
    log = sorted((tmp_path / 'run').glob('*/*.log'))[0].read_text()
    # Every rank: 64 images x 5 proposals, all kept (6 concepts: a top probability >= 1/6).
    steps = re.findall(r'Iter\(train\) \[1/1\].*loss_concept: ([0-9.]+).*loss_distill: '
                       r'([0-9.]+).*loss_caption: ([0-9.]+).*num_proposals: 320\.0000\s+'
                       r'num_regions: 320\.0000', log)
    assert len(steps) == ITERS, log[-2000:]
    state = torch.load(tmp_path / 'run' / f'iter_{ITERS}.pth', map_location='cpu',
                       weights_only=True)['state_dict']
    baseline = torch.load(workspace / 'toy_clip.pt', map_location='cpu', weights_only=True)
    assert all(torch.equal(state[f'teacher.clip.{name}'], value)
               for name, value in baseline.items())
    last_block = 'visual.transformer.resblocks.3.mlp.c_fc.weight'
    assert not torch.equal(state[f'clip.clip.{last_block}'], baseline[last_block])
