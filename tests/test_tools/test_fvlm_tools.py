# Copyright (c) mmclim contributors. All rights reserved.
"""The toy F-VLM config through tools/train.py and tools/test.py: metrics with AP50 base/novel."""
import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, python_tool, reference_coco_ap, run_tool

from mmclim.datasets import TOY_NOVEL_CLASSES, class_names, generate_shape_scenes, write_base_only
from mmclim.structures import save_class_embeddings

TOY_FVLM = REPO_ROOT / 'configs' / 'fvlm' / 'fvlm_toy-vit_toy-shapes.py'
TOY_CLIP = 'mmclim-toy-vit'
EMBED_DIM = 64  # of mmclim-toy-vit


@pytest.mark.slow
def test_test_tool_writes_ov_metrics(tmp_path: Path) -> None:
    data = tmp_path / 'data' / 'toy_shapes'
    train = generate_shape_scenes(str(data), 'train', 8, image_size=128, seed=0)
    write_base_only(train)
    generate_shape_scenes(str(data), 'val', 4, image_size=128, seed=1)
    rows = torch.randn(len(class_names()), EMBED_DIM, generator=torch.Generator().manual_seed(0))
    embeddings = tmp_path / 'work_dirs' / 'demo' / 'embeddings' / 'toy_classes_seen.npy'
    save_class_embeddings(str(embeddings), F.normalize(rows, dim=-1), TOY_CLIP)
    options = ['--cfg-options', 'model.backbone.pretrained=None',  # random frozen toy CLIP
               'model.test_cfg.rcnn.score_thr=0.0']
    run_tool(python_tool('train.py', str(TOY_FVLM), '--work-dir', str(tmp_path / 'train'),
                         *options, 'train_cfg.max_iters=2', 'train_cfg.val_interval=100'),
             cwd=tmp_path)
    out = tmp_path / 'predictions.pkl'
    run_tool(python_tool('test.py', str(TOY_FVLM), str(tmp_path / 'train' / 'iter_2.pth'),
                         '--work-dir', str(tmp_path / 'test'), '--out', str(out), *options),
             cwd=tmp_path)
    metrics = json.loads(next((tmp_path / 'test').glob('*/*.json')).read_text())
    # Each split's AP50 is the reference COCO API's on the dumped detections, restricted to the
    # split's categories (the novel ones: mmclim.datasets.TOY_NOVEL_CLASSES).
    ann_file = data / 'annotations' / 'instances_val.json'
    names = {c['id']: c['name'] for c in json.loads(ann_file.read_text())['categories']}
    novel = [cat_id for cat_id, name in names.items() if name in TOY_NOVEL_CLASSES]
    splits = dict(base=[cat_id for cat_id in names if cat_id not in novel], novel=novel,
                  all=list(names))
    predictions = pickle.loads(out.read_bytes())
    for split, cat_ids in splits.items():
        assert metrics[f'coco/bbox_AP50_{split}'] == pytest.approx(
            reference_coco_ap(ann_file, predictions, 1, cat_ids), abs=1e-3), split
