# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/train.py`` trains the toy config; ``--resume`` continues with identical state."""
from pathlib import Path

import pytest
import torch
from conftest import TOY_CONFIG, python_tool, run_tool

N = 3  # iterations before the interruption; the full run is 2N


def _train(workspace: Path, work_dir: Path, max_iters: int, *extra: str) -> str:
    proc = run_tool(python_tool('train.py', str(TOY_CONFIG), '--work-dir', str(work_dir),
                                '--cfg-options', f'train_cfg.max_iters={max_iters}',
                                f'default_hooks.checkpoint.interval={N}',
                                'default_hooks.logger.interval=1', *extra), cwd=workspace)
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(toy_workspace: Path, tmp_path: Path) -> None:
    _train(toy_workspace, tmp_path / 'full', 2 * N)
    _train(toy_workspace, tmp_path / 'split', N)
    log = _train(toy_workspace, tmp_path / 'split', 2 * N, '--resume')
    assert f'resumed epoch: 0, iter: {N}' in log
    assert f'Iter(train) [{N + 1}/{2 * N}]' in log
    assert f'Iter(train) [1/{2 * N}]' not in log

    full = torch.load(tmp_path / 'full' / f'iter_{2 * N}.pth', weights_only=True)
    split = torch.load(tmp_path / 'split' / f'iter_{2 * N}.pth', weights_only=True)
    assert full['meta']['iter'] == split['meta']['iter'] == 2 * N
    for name, value in full['state_dict'].items():
        torch.testing.assert_close(split['state_dict'][name], value, rtol=0, atol=1e-6, msg=name)
    full_state = full['optimizer']['state']
    split_state = split['optimizer']['state']
    assert full_state.keys() == split_state.keys() and full_state
    for key, state in full_state.items():
        torch.testing.assert_close(split_state[key]['momentum_buffer'], state['momentum_buffer'],
                                   rtol=0, atol=1e-6)
    assert full['optimizer']['param_groups'][0]['lr'] == split['optimizer']['param_groups'][0]['lr']
