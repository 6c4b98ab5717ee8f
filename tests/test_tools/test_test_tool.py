# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/test.py`` evaluates a checkpoint, writes the metrics and dumps predictions."""
import json
import pickle
import subprocess
from pathlib import Path

import pytest
from conftest import TOY_CONFIG, python_tool, reference_coco_ap, run_tool


@pytest.mark.slow
def test_test_tool_writes_metrics_and_predictions(toy_workspace: Path, tmp_path: Path) -> None:
    train_dir = tmp_path / 'train'
    run_tool(python_tool('train.py', str(TOY_CONFIG), '--work-dir', str(train_dir),
                         '--cfg-options', 'train_cfg.max_iters=2'), cwd=toy_workspace)
    checkpoint = train_dir / 'iter_2.pth'
    out = tmp_path / 'predictions.pkl'
    run_tool(python_tool('test.py', str(TOY_CONFIG), str(checkpoint), '--work-dir',
                         str(tmp_path / 'test'), '--out', str(out),
                         # two iterations leave every score low: keep them, so mAP is computed
                         '--cfg-options', 'model.test_cfg.score_thr=0.0'), cwd=toy_workspace)
    metrics_files = list((tmp_path / 'test').glob('*/*.json'))
    assert len(metrics_files) == 1
    metrics = json.loads(metrics_files[0].read_text())
    predictions = pickle.loads(out.read_bytes())
    assert len(predictions) == 4  # the 4 validation scenes
    assert {'img_id', 'pred_instances'} <= set(predictions[0])
    # The logged mAP is the reference COCO API's on the dumped predictions (3 decimals, as
    # mmdet's CocoMetric logs it).
    ann_file = toy_workspace / 'data' / 'toy_shapes' / 'annotations' / 'instances_val.json'
    assert metrics['coco/bbox_mAP'] == round(reference_coco_ap(ann_file, predictions), 3)


def test_test_tool_missing_checkpoint_is_named(toy_workspace: Path, tmp_path: Path) -> None:
    missing = tmp_path / 'nothing_here.pth'
    proc = subprocess.run(python_tool('test.py', str(TOY_CONFIG), str(missing)),
                          cwd=toy_workspace, capture_output=True, text=True)
    assert proc.returncode != 0
    assert 'nothing_here.pth' in proc.stderr and 'does not exist' in proc.stderr
