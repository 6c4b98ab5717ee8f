# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/dist_train.sh CONFIG 2`` runs two processes on a CPU-only machine (gloo)."""
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TOY_CONFIG, run_tool

MAX_ITERS = 2


@pytest.mark.slow
def test_dist_train_two_processes_on_cpu(toy_workspace: Path, tmp_path: Path) -> None:
    work_dir = tmp_path / 'dist'
    proc = run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_CONFIG), '2',
                     '--work-dir', str(work_dir), '--cfg-options',
                     f'train_cfg.max_iters={MAX_ITERS}', 'default_hooks.logger.interval=1',
                     'log_level=DEBUG'],  # DEBUG: every rank logs
                    cwd=toy_workspace)
    # A rank that finished and then aborted at exit (SIGABRT) fails torchrun, hence run_tool;
    # the abort's message is checked too.
    assert 'terminate called' not in proc.stderr, proc.stderr[-4000:]
    grad_norms = []
    for rank in (0, 1):
        logs = list(work_dir.glob(f'*/*rank{rank}.log'))
        assert len(logs) == 1, f'expected one rank-{rank} log under {work_dir}, got {logs}'
        log = logs[0].read_text()
        assert 'Distributed training: True' in log and 'GPU number: 2' in log
        assert f'Iter(train) [{MAX_ITERS}/{MAX_ITERS}]' in log, f'rank {rank} did not train'
        grad_norms.append(re.findall(r'grad_norm: ([0-9.]+)', log))
        # the teardown of tools/train.py, before the interpreter exits
        assert f'destroyed the gloo process group (rank {rank})' in log
    # Each rank sees different images but DDP averages the gradients before clipping.
    assert len(grad_norms[0]) == MAX_ITERS and grad_norms[0] == grad_norms[1]
    assert (work_dir / f'iter_{MAX_ITERS}.pth').is_file()
