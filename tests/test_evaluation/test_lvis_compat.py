# Copyright (c) mmclim contributors. All rights reserved.
"""mmdet's ``LVISMetric`` under numpy>=2 on a fixture whose AP is worked out by hand.

Fixture: two 100x100 images, three categories (one rare, one common, one frequent), one ground
truth box each. Every matching detection is exact (IoU 1 at every threshold), so per category:

- rare (id 1): one exact detection -> precision 1 at recall 1 -> AP 1.
- common (id 2): a false positive scored 0.9 on image 2 (where category 2 is a verified
  negative, so it counts) ranks above the exact detection scored 0.8 -> precision 1/2 at recall
  1, and the interpolated precision is 1/2 at every recall threshold -> AP 0.5.
- frequent (id 3): no detection -> AP 0.

So APr = 1, APc = 0.5, APf = 0, AP = mean(1, 0.5, 0) = 0.5, AP50 = AP75 = 0.5.
"""
import json
from pathlib import Path

import numpy as np
import torch
from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmclim  # noqa: F401  (applies the lvis fix on import)


def _write_lvis_fixture(path: Path) -> None:
    images = [
        dict(id=1, width=100, height=100, neg_category_ids=[], not_exhaustive_category_ids=[]),
        dict(id=2, width=100, height=100, neg_category_ids=[2], not_exhaustive_category_ids=[]),
    ]
    boxes = {1: [10, 10, 30, 30], 2: [50, 50, 20, 40], 3: [5, 60, 30, 30]}
    annotations = [
        dict(id=cat_id, image_id=1, category_id=cat_id, bbox=bbox, area=bbox[2] * bbox[3],
             segmentation=[[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0] + bbox[2],
                            bbox[1] + bbox[3], bbox[0], bbox[1] + bbox[3]]])
        for cat_id, bbox in boxes.items()
    ]
    categories = [dict(id=1, name='rare_thing', frequency='r'),
                  dict(id=2, name='common_thing', frequency='c'),
                  dict(id=3, name='frequent_thing', frequency='f')]
    path.write_text(json.dumps(dict(images=images, annotations=annotations,
                                    categories=categories)))


def _sample(img_id: int, boxes_xyxy: list, scores: list, labels: list) -> dict:
    sample = DetDataSample(metainfo=dict(img_id=img_id, ori_shape=(100, 100)))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.long))
    return sample.to_dict()


def test_lvis_metric_numpy2_matches_hand_computed_ap(tmp_path: Path) -> None:
    assert not hasattr(np, 'float'), 'the fix must not restore aliases in numpy itself'
    ann_file = tmp_path / 'lvis_fixture.json'
    _write_lvis_fixture(ann_file)
    init_default_scope('mmdet')
    metric = METRICS.build(dict(type='LVISMetric', ann_file=str(ann_file), metric='bbox'))
    metric.dataset_meta = dict(classes=('rare_thing', 'common_thing', 'frequent_thing'))
    # labels index the sorted category ids: 0 -> rare (1), 1 -> common (2)
    metric.process({}, [
        _sample(1, [[10, 10, 40, 40], [50, 50, 70, 90]], [0.95, 0.8], [0, 1]),
        _sample(2, [[0, 0, 20, 20]], [0.9], [1]),
    ])
    results = metric.evaluate(size=2)
    assert results['lvis/bbox_APr'] == 1.0
    assert results['lvis/bbox_APc'] == 0.5
    assert results['lvis/bbox_APf'] == 0.0
    assert results['lvis/bbox_AP'] == 0.5
    assert results['lvis/bbox_AP50'] == 0.5
    assert results['lvis/bbox_AP75'] == 0.5
