# Copyright (c) mmclim contributors. All rights reserved.
"""``FastLVISMetric`` gives mmdet's ``LVISMetric`` results through mmdet's metric interface."""
import json
import math
from pathlib import Path
from typing import List

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmclim  # noqa: F401  (patches lvis.eval for numpy>=2)
from mmclim.evaluation.metrics.fast_lvis_metric import FastLVISMetric

# lvis 0.5.3 logs with the deprecated Logger.warn.
pytestmark = pytest.mark.filterwarnings('ignore:The .warn. method is deprecated')

IMAGE_SIZE = 128
# Ground truth sides in [4, 64): small and medium objects.
MIN_SIDE, MAX_SIDE = 4, 64
NUM_IMAGES = 4
# Category 4 is never annotated: its classwise AP is NaN, its results only count where negative.
CATEGORIES = [dict(id=1, name='rare_thing', frequency='r'),
              dict(id=2, name='common_thing', frequency='c'),
              dict(id=3, name='frequent_thing', frequency='f'),
              dict(id=4, name='unseen_thing', frequency='r')]
CLASSES = tuple(cat['name'] for cat in CATEGORIES)
DETS_PER_IMAGE = 12


def _write_ground_truth(path: Path, rng: np.random.Generator) -> None:
    images, annotations = [], []
    for img_id in range(1, NUM_IMAGES + 1):
        present = sorted(rng.choice([1, 2, 3], rng.integers(1, 3), replace=False).tolist())
        images.append(dict(id=img_id, height=IMAGE_SIZE, width=IMAGE_SIZE,
                           neg_category_ids=[c for c in (2, 3, 4) if c not in present][:2],
                           not_exhaustive_category_ids=present[:1] if img_id == 2 else []))
        for cat_id in present:
            x, y = rng.integers(0, IMAGE_SIZE // 2, 2).tolist()
            w, h = rng.integers(MIN_SIDE, MAX_SIDE, 2).tolist()
            polygon = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            rle = mask_utils.merge(mask_utils.frPyObjects(polygon, IMAGE_SIZE, IMAGE_SIZE))
            annotations.append(dict(id=len(annotations) + 1, image_id=img_id,
                                    category_id=cat_id, bbox=[x, y, w, h],
                                    area=float(mask_utils.area(rle)), segmentation=polygon))
    path.write_text(json.dumps(dict(images=images, annotations=annotations,
                                    categories=CATEGORIES)))


def _samples(annotations: List[dict], rng: np.random.Generator) -> List[dict]:
    """Predictions near the ground truth and at random; masks are the top 3/4 of the boxes."""
    samples = []
    for img_id in range(1, NUM_IMAGES + 1):
        gts = [ann for ann in annotations if ann['image_id'] == img_id]
        boxes, labels = [], []
        for i in range(DETS_PER_IMAGE):
            if i < 2 * len(gts):
                x, y, w, h = gts[i % len(gts)]['bbox']
                box = np.array([x, y, x + w, y + h]) + rng.integers(-2, 3, 4)
                label = gts[i % len(gts)]['category_id'] - 1
            else:
                x1, y1 = rng.integers(0, IMAGE_SIZE // 2, 2)
                box = np.array([x1, y1, x1 + rng.integers(MIN_SIDE, MAX_SIDE),
                                y1 + rng.integers(MIN_SIDE, MAX_SIDE)])
                label = rng.integers(0, len(CATEGORIES))
            boxes.append(np.clip(box, 0, IMAGE_SIZE))
            labels.append(label)
        masks = torch.zeros(DETS_PER_IMAGE, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes):
            mask[y1:y1 + 3 * (y2 - y1) // 4, x1:x2] = True
        sample = DetDataSample(metainfo=dict(img_id=img_id, ori_shape=(IMAGE_SIZE, IMAGE_SIZE)))
        sample.pred_instances = InstanceData(
            bboxes=torch.tensor(np.array(boxes), dtype=torch.float32),
            scores=torch.tensor(rng.integers(1, 10, DETS_PER_IMAGE) / 10, dtype=torch.float32),
            labels=torch.tensor(labels, dtype=torch.long), masks=masks)
        samples.append(sample.to_dict())
    return samples


@pytest.fixture
def lvis_fixture(tmp_path: Path) -> tuple:
    rng = np.random.default_rng(0)
    ann_file = tmp_path / 'lvis_fixture.json'
    _write_ground_truth(ann_file, rng)
    samples = _samples(json.loads(ann_file.read_text())['annotations'], rng)
    return str(ann_file), samples


def _evaluate(metric_type: str, ann_file: str, samples: List[dict], **kwargs) -> dict:
    init_default_scope('mmdet')
    metric = METRICS.build(dict(type=metric_type, ann_file=ann_file, **kwargs))
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def _assert_same(ours: dict, expected: dict) -> None:
    assert list(ours) == list(expected)
    for key, value in expected.items():
        assert ours[key] == value or (math.isnan(ours[key]) and math.isnan(value)), key


@pytest.mark.parametrize('kwargs', [
    dict(metric=['bbox', 'segm']),
    dict(metric=['bbox', 'segm'], classwise=True),
    dict(metric='proposal'),
    dict(metric='bbox', metric_items=['APr', 'AP50']),
])
def test_same_results_as_lvis_metric(lvis_fixture: tuple, kwargs: dict) -> None:
    ann_file, samples = lvis_fixture
    expected = _evaluate('LVISMetric', ann_file, samples, **kwargs)
    ours = _evaluate('FastLVISMetric', ann_file, samples, **kwargs)
    assert expected, 'the fixture must give results'
    _assert_same(ours, expected)


def test_detections_change_the_results(lvis_fixture: tuple) -> None:
    ann_file, samples = lvis_fixture
    full = _evaluate('FastLVISMetric', ann_file, samples)
    half = _evaluate('FastLVISMetric', ann_file, samples[:NUM_IMAGES // 2])
    assert full['lvis/bbox_AP'] > 0
    assert half['lvis/bbox_AP'] != full['lvis/bbox_AP']


def test_no_detections_report_nothing_like_lvis_metric(lvis_fixture: tuple) -> None:
    ann_file, samples = lvis_fixture
    for sample in samples:
        sample['pred_instances'] = {k: v[:0] for k, v in sample['pred_instances'].items()}
    assert _evaluate('FastLVISMetric', ann_file, samples, metric='bbox') == \
        _evaluate('LVISMetric', ann_file, samples, metric='bbox') == {}


def test_eval_cat_ids_restrict_the_categories(lvis_fixture: tuple) -> None:
    ann_file, samples = lvis_fixture
    results = _evaluate('FastLVISMetric', ann_file, samples, eval_cat_ids=[2, 3])
    assert results['lvis/bbox_APr'] == -1.0  # no rare category among them
    assert results['lvis/bbox_APc'] == _evaluate('FastLVISMetric', ann_file,
                                                 samples)['lvis/bbox_APc']
    assert isinstance(METRICS.build(dict(type='FastLVISMetric', ann_file=ann_file)),
                      FastLVISMetric)
