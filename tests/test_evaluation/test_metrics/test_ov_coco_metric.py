# Copyright (c) mmclim contributors. All rights reserved.
"""``OVCocoSplitMetric`` on hand-made detections whose base/novel AP50 is known, and against
pycocotools' ``COCOeval`` run on each subset of categories."""
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.registry import METRICS
from mmengine.registry import init_default_scope

from mmclim.datasets.ov_splits import (OV_COCO_CLASSES, OV_COCO_NOVEL_CLASSES, category_names,
                                       coco_category_split)
from mmclim.evaluation.metrics.ov_coco_metric import (NO_GROUND_TRUTH_AP, OVCocoSplitMetric,
                                                      mean_ap, per_category_ap)
from mmclim.structures import split_record, write_split_file

# Category ids out of order of their names and not contiguous; labels follow the ids' order.
CATEGORIES = [dict(id=1, name='person'), dict(id=3, name='car'), dict(id=5, name='airplane'),
              dict(id=6, name='bus'), dict(id=17, name='cat')]
CLASSES = tuple(category['name'] for category in CATEGORIES)
NOVEL_CLASSES = ('airplane', 'bus', 'cat')  # novel in OV-COCO too
BASE_IDS, NOVEL_IDS = (1, 3), (5, 6, 17)
IMAGE_SIZE = 100
# Values are reported rounded to 3 decimals.
ROUNDING = 5e-4

# (image id, label, box x1 y1 x2 y2) of every ground-truth instance.
HAND_GT = [(1, 0, (10, 10, 40, 40)), (1, 2, (50, 50, 90, 90)),
           (2, 1, (0, 0, 50, 50)), (2, 3, (60, 10, 90, 40)), (2, 3, (10, 60, 40, 90))]
# (image id, label, box, score): person and car found exactly (AP 1); for the airplane a
# higher-scored false positive comes first (precision 1/2 at every recall: AP 0.5); one of two
# buses is found (precision 1 up to recall 0.5: AP 51/101 on COCO's 101 recall points); the cat
# has no ground truth and is left out of every average.
HAND_DETECTIONS = [(1, 0, (10, 10, 40, 40), 0.9), (1, 2, (60, 0, 90, 30), 0.95),
                   (1, 2, (50, 50, 90, 90), 0.8), (2, 1, (0, 0, 50, 50), 0.9),
                   (2, 3, (60, 10, 90, 40), 0.7), (2, 4, (0, 0, 10, 10), 0.6)]
RECALL_POINTS = 101
HAND_AP50 = {'person': 1.0, 'car': 1.0, 'airplane': 0.5, 'bus': 51 / RECALL_POINTS}
HAND_BASE = 1.0
HAND_NOVEL = (HAND_AP50['airplane'] + HAND_AP50['bus']) / 2
HAND_ALL = sum(HAND_AP50.values()) / len(HAND_AP50)

Instance = Tuple[int, int, Sequence[float]]
Detection = Tuple[int, int, Sequence[float], float]


def _image_ids(gt: Sequence[Instance], detections: Sequence[Detection]) -> List[int]:
    return sorted({item[0] for item in (*gt, *detections)})


def _coco_json(gt: Sequence[Instance], image_ids: Sequence[int]) -> dict:
    """A COCO ground-truth file of ``gt`` with the images ``image_ids``."""
    annotations = []
    for ann_id, (image_id, label, (x1, y1, x2, y2)) in enumerate(gt, start=1):
        annotations.append(dict(id=ann_id, image_id=image_id, category_id=CATEGORIES[label]['id'],
                                bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                                iscrowd=0))
    images = [dict(id=image_id, width=IMAGE_SIZE, height=IMAGE_SIZE, file_name=f'{image_id}.jpg')
              for image_id in image_ids]
    return dict(images=images, annotations=annotations, categories=CATEGORIES)


def _samples(gt: Sequence[Instance], detections: Sequence[Detection],
             image_ids: Sequence[int]) -> List[dict]:
    """Data samples as ``CocoMetric.process`` reads them, with ground-truth ``instances``."""
    samples = []
    for image_id in image_ids:
        dets = [det for det in detections if det[0] == image_id]
        samples.append(dict(
            img_id=image_id, ori_shape=(IMAGE_SIZE, IMAGE_SIZE),
            instances=[dict(bbox=list(box), bbox_label=label, ignore_flag=0)
                       for img, label, box in gt if img == image_id],
            pred_instances=dict(
                bboxes=torch.tensor([det[2] for det in dets], dtype=torch.float).reshape(-1, 4),
                scores=torch.tensor([det[3] for det in dets], dtype=torch.float),
                labels=torch.tensor([det[1] for det in dets], dtype=torch.long))))
    return samples


def _write_split(folder: Path, novel_classes: Sequence[str] = NOVEL_CLASSES) -> str:
    """The split file of ``CATEGORIES`` with ``novel_classes`` novel, as the converters write
    it."""
    names = {category['id']: category['name'] for category in CATEGORIES}
    path = folder / f'split_{len(novel_classes)}.json'
    write_split_file(str(path), split_record(
        names, [i for i, name in names.items() if name not in novel_classes],
        [i for i, name in names.items() if name in novel_classes], 'test'))
    return str(path)


def _evaluate(samples: List[dict], split_file: str, ann_file: Optional[str] = None,
              **kwargs) -> Dict[str, float]:
    metric = OVCocoSplitMetric(split_file=split_file, ann_file=ann_file, **kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


@pytest.fixture
def split_file(tmp_path: Path) -> str:
    """Person and car base, airplane, bus and cat novel."""
    return _write_split(tmp_path)


@pytest.fixture
def hand_ann_file(tmp_path: Path) -> str:
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(_coco_json(HAND_GT, _image_ids(HAND_GT, HAND_DETECTIONS))))
    return str(path)


@pytest.mark.parametrize('use_ann_file', [True, False])
def test_hand_computed_ap50(hand_ann_file: str, split_file: str, use_ann_file: bool) -> None:
    samples = _samples(HAND_GT, HAND_DETECTIONS, _image_ids(HAND_GT, HAND_DETECTIONS))
    results = _evaluate(samples, split_file, hand_ann_file if use_ann_file else None)
    assert results['coco/bbox_AP50_base'] == pytest.approx(HAND_BASE, abs=ROUNDING)
    assert results['coco/bbox_AP50_novel'] == pytest.approx(HAND_NOVEL, abs=ROUNDING)
    assert results['coco/bbox_AP50_all'] == pytest.approx(HAND_ALL, abs=ROUNDING)
    assert results['coco/bbox_mAP_50'] == results['coco/bbox_AP50_all']
    assert {'coco/bbox_mAP', 'coco/bbox_mAP_75', 'coco/bbox_mAP_s'} <= set(results)


def test_per_category_ap_matches_hand_values(hand_ann_file: str) -> None:
    coco_gt = COCO(hand_ann_file)
    detections = [dict(image_id=image_id, category_id=CATEGORIES[label]['id'], score=score,
                       bbox=[x1, y1, x2 - x1, y2 - y1])
                  for image_id, label, (x1, y1, x2, y2), score in HAND_DETECTIONS]
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), 'bbox')
    coco_eval.evaluate()
    coco_eval.accumulate()
    aps = per_category_ap(coco_eval)
    by_name = {coco_gt.cats[cat_id]['name']: ap for cat_id, ap in aps.items()}
    assert by_name == pytest.approx(HAND_AP50)  # the cat, without ground truth, has no AP
    assert mean_ap(aps, [17]) == NO_GROUND_TRUTH_AP
    with pytest.raises(ValueError, match='iouThrs'):
        per_category_ap(coco_eval, iou_thr=0.33)


def _random_fixture(seed: int) -> Tuple[List[Instance], List[Detection]]:
    """Ground truth on 6 images and detections: jittered ground truth, misses and random boxes
    with random labels and scores."""
    rng = np.random.default_rng(seed)
    gt, detections = [], []
    for image_id in range(1, 7):
        for _ in range(rng.integers(0, 5)):
            x1, y1 = rng.uniform(0, 60, size=2)
            w, h = rng.uniform(10, 40, size=2)
            label = int(rng.integers(0, len(CATEGORIES) - 1))  # no ground truth of the cat
            gt.append((image_id, label, (x1, y1, x1 + w, y1 + h)))
            if rng.random() < 0.7:
                jitter = rng.uniform(-6, 6, size=4)
                detections.append((image_id, label, tuple(np.array([x1, y1, x1 + w, y1 + h])
                                                          + jitter), float(rng.random())))
        for _ in range(rng.integers(0, 4)):
            x1, y1 = rng.uniform(0, 60, size=2)
            detections.append((image_id, int(rng.integers(0, len(CATEGORIES))),
                               (x1, y1, x1 + 30, y1 + 30), float(rng.random())))
    return gt, detections


def _cocoeval_ap50(ann_file: str, detections: Sequence[Detection], cat_ids: Sequence[int]) -> float:
    """AP50 of pycocotools' ``COCOeval`` restricted to ``cat_ids`` (its ``stats[1]``)."""
    coco_gt = COCO(ann_file)
    results = [dict(image_id=image_id, category_id=CATEGORIES[label]['id'], score=score,
                    bbox=[x1, y1, x2 - x1, y2 - y1])
               for image_id, label, (x1, y1, x2, y2), score in detections]
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), 'bbox')
    coco_eval.params.catIds = list(cat_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return float(coco_eval.stats[1])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_cocoeval_on_each_subset(tmp_path: Path, seed: int) -> None:
    gt, detections = _random_fixture(seed)
    image_ids = list(range(1, 7))
    ann_file = tmp_path / 'gt.json'
    ann_file.write_text(json.dumps(_coco_json(gt, image_ids)))
    results = _evaluate(_samples(gt, detections, image_ids), _write_split(tmp_path),
                        str(ann_file))
    for name, cat_ids in (('base', BASE_IDS), ('novel', NOVEL_IDS),
                          ('all', BASE_IDS + NOVEL_IDS)):
        expected = _cocoeval_ap50(str(ann_file), detections, cat_ids)
        assert results[f'coco/bbox_AP50_{name}'] == pytest.approx(expected, abs=ROUNDING), name


def test_no_detections_score_zero_and_subsets_without_ground_truth_minus_one(
        hand_ann_file: str, split_file: str) -> None:
    image_ids = _image_ids(HAND_GT, HAND_DETECTIONS)
    results = _evaluate(_samples(HAND_GT, [], image_ids), split_file, hand_ann_file)
    assert results['coco/bbox_AP50_base'] == 0
    assert results['coco/bbox_AP50_novel'] == 0
    assert results['coco/bbox_AP50_all'] == 0
    base_gt_only = [instance for instance in HAND_GT if instance[1] in (0, 1)]
    results = _evaluate(_samples(base_gt_only, HAND_DETECTIONS, image_ids), split_file)
    assert results['coco/bbox_AP50_base'] == pytest.approx(HAND_BASE)
    assert results['coco/bbox_AP50_novel'] == NO_GROUND_TRUTH_AP


def test_novel_classes_from_the_split_file(hand_ann_file: str, tmp_path: Path) -> None:
    """Another split file: car and airplane novel, the others base."""
    samples = _samples(HAND_GT, HAND_DETECTIONS, _image_ids(HAND_GT, HAND_DETECTIONS))
    results = _evaluate(samples, _write_split(tmp_path, ['car', 'airplane']), hand_ann_file)
    expected_base = (HAND_AP50['person'] + HAND_AP50['bus']) / 2
    expected_novel = (HAND_AP50['car'] + HAND_AP50['airplane']) / 2
    assert results['coco/bbox_AP50_base'] == pytest.approx(expected_base, abs=ROUNDING)
    assert results['coco/bbox_AP50_novel'] == pytest.approx(expected_novel, abs=ROUNDING)


def test_segm_ap50_of_box_shaped_masks(tmp_path: Path) -> None:
    """Masks filling the boxes: the mask AP50 of each subset is the box AP50."""
    image_ids = _image_ids(HAND_GT, HAND_DETECTIONS)
    gt_json = _coco_json(HAND_GT, image_ids)
    for ann in gt_json['annotations']:
        x, y, w, h = ann['bbox']
        ann['segmentation'] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    ann_file = tmp_path / 'gt.json'
    ann_file.write_text(json.dumps(gt_json))
    samples = _samples(HAND_GT, HAND_DETECTIONS, image_ids)
    for sample in samples:
        masks = torch.zeros(len(sample['pred_instances']['bboxes']), IMAGE_SIZE, IMAGE_SIZE,
                            dtype=torch.bool)
        for mask, (x1, y1, x2, y2) in zip(masks, sample['pred_instances']['bboxes'].int()):
            mask[y1:y2, x1:x2] = True
        sample['pred_instances']['masks'] = masks
    results = _evaluate(samples, _write_split(tmp_path), str(ann_file), metric=['bbox', 'segm'])
    for name in ('base', 'novel', 'all'):
        assert results[f'coco/segm_AP50_{name}'] == results[f'coco/bbox_AP50_{name}']


def test_built_from_registry_with_classwise_log(hand_ann_file: str, split_file: str) -> None:
    init_default_scope('mmdet')
    metric = METRICS.build(dict(type='OVCocoSplitMetric', ann_file=hand_ann_file, classwise=True,
                                split_file=split_file, prefix='ov'))
    assert isinstance(metric, OVCocoSplitMetric)
    metric.dataset_meta = dict(classes=CLASSES)
    samples = _samples(HAND_GT, HAND_DETECTIONS, _image_ids(HAND_GT, HAND_DETECTIONS))
    metric.process({}, samples)
    assert metric.evaluate(len(samples))['ov/bbox_AP50_novel'] == pytest.approx(
        HAND_NOVEL, abs=ROUNDING)


def test_ov_coco_split_file_of_the_converter(tmp_path: Path) -> None:
    """The split file prepare_ov_coco.py writes (COCO ids 1-90) gives the 17 novel classes and
    matches the 65 OV-COCO classes."""
    coco_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    data = dict(images=[], annotations=[],
                categories=[dict(id=cat_id, name=name)
                            for cat_id, name in zip(coco_ids, CocoDataset.METAINFO['classes'])])
    split = coco_category_split(data, 'coco')
    path = str(tmp_path / 'ov_coco_split.json')
    write_split_file(path, split_record(category_names(data), split.base_ids, split.novel_ids,
                                        'OV-COCO'))
    metric = OVCocoSplitMetric(split_file=path)
    assert metric.novel_classes == OV_COCO_NOVEL_CLASSES
    metric.dataset_meta = dict(classes=OV_COCO_CLASSES)
    with pytest.raises(ValueError, match=r"ov_coco_split.json does not list .*\['airplane', "
                                         r"'apple'.*\['hair drier'\] are neither"):
        metric.dataset_meta = dict(classes=('person', 'hair drier'))  # unused in OV-COCO


def test_errors(tmp_path: Path, split_file: str) -> None:
    unnamed = tmp_path / 'unnamed.json'
    unnamed.write_text(json.dumps(dict(base_category_ids=[1, 3], novel_category_ids=[5])))
    with pytest.raises(ValueError, match=f'{unnamed} has no class names'):
        OVCocoSplitMetric(split_file=str(unnamed))
    with pytest.raises(ValueError, match="metric: \\['proposal'\\]"):
        OVCocoSplitMetric(split_file=split_file, metric=['bbox', 'proposal'])
    samples = _samples(HAND_GT, HAND_DETECTIONS, _image_ids(HAND_GT, HAND_DETECTIONS))
    with pytest.raises(ValueError, match='pred_instances.masks'):
        _evaluate(samples, split_file, metric='segm')
