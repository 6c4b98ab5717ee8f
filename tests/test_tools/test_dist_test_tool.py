# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/dist_test.sh CONFIG CHECKPOINT 2`` evaluates with two processes on a CPU-only machine
and tears both down (dataloader workers, then the gloo process group) before they exit."""
import json
import pickle
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TOY_CONFIG, python_tool, reference_coco_ap, run_tool


@pytest.mark.slow
def test_dist_test_two_processes_on_cpu(toy_workspace: Path, tmp_path: Path) -> None:
    run_tool(python_tool('train.py', str(TOY_CONFIG), '--work-dir', str(tmp_path / 'train'),
                         '--cfg-options', 'train_cfg.max_iters=1'), cwd=toy_workspace)
    work_dir = tmp_path / 'test'
    out = tmp_path / 'predictions.pkl'
    proc = run_tool(['bash', str(REPO_ROOT / 'tools' / 'dist_test.sh'), str(TOY_CONFIG),
                     str(tmp_path / 'train' / 'iter_1.pth'), '2', '--work-dir', str(work_dir),
                     '--out', str(out),
                     '--cfg-options', 'model.test_cfg.score_thr=0.0',
                     # a worker process kept alive between epochs, for the teardown to stop
                     'test_dataloader.num_workers=1', 'test_dataloader.persistent_workers=True',
                     'log_level=DEBUG'],  # DEBUG: every rank logs
                    cwd=toy_workspace)
    assert 'terminate called' not in proc.stderr, proc.stderr[-4000:]
    for rank in (0, 1):
        logs = list(work_dir.glob(f'*/*rank{rank}.log'))
        assert len(logs) == 1, f'expected one rank-{rank} log under {work_dir}, got {logs}'
        log = logs[0].read_text()
        assert 'Distributed training: True' in log and 'GPU number: 2' in log
        assert 'shut down the workers of 1 dataloader iterator(s)' in log
        assert f'destroyed the gloo process group (rank {rank})' in log
    metrics_files = list(work_dir.glob('*/*.json'))
    assert len(metrics_files) == 1  # written by rank 0 only
    # Both ranks' predictions, gathered: every validation scene once, and the logged mAP is the
    # reference COCO API's on them (3 decimals, as mmdet's CocoMetric logs it).
    predictions = pickle.loads(out.read_bytes())
    assert sorted(p['img_id'] for p in predictions) == [1, 2, 3, 4]
    ann_file = toy_workspace / 'data' / 'toy_shapes' / 'annotations' / 'instances_val.json'
    assert json.loads(metrics_files[0].read_text())['coco/bbox_mAP'] == round(
        reference_coco_ap(ann_file, predictions), 3)
