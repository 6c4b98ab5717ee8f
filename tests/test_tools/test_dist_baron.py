# Copyright (c) mmclim contributors. All rights reserved.
"""The toy BARON + CLIM config trains on two CPU processes (gloo) with its three sources."""
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_dist_detic import detic_workspace  # noqa: F401 (the toy data, CLIP and vocabulary)
from test_dist_detic import train_toy_caption_config

TOY_BARON_CLIM = (REPO_ROOT / 'configs' / 'baron' / 'toy' /
                  'baron-clim_r18-fpn_toy-shapes-caption.py')


@pytest.mark.slow
def test_toy_baron_clim_trains_with_two_processes(
        detic_workspace: Path, tmp_path: Path) -> None:  # noqa: F811
    # Both caption branches train next to detection, on each process's own 4 + 2 + 2 images.
    train_toy_caption_config(TOY_BARON_CLIM, detic_workspace, tmp_path / 'run')
