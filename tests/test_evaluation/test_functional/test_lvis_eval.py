# Copyright (c) mmclim contributors. All rights reserved.
"""``evaluate_lvis`` against the reference LVIS API (``lvis==0.5.3``, run in-process: importing
mmclim gives ``lvis.eval`` the numpy aliases it needs) on small synthetic LVIS data sets."""
import copy
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from lvis import LVIS, LVISEval, LVISResults

import mmclim  # noqa: F401  (patches lvis.eval for numpy>=2)
from mmclim.evaluation.functional import (FREQUENCY_GROUPS, IOU_TYPES, LVISGroundTruth,
                                          evaluate_lvis, lvis_eval, paired_box_iou)

# lvis 0.5.3 logs with the deprecated Logger.warn.
pytestmark = pytest.mark.filterwarnings('ignore:The .warn. method is deprecated')

# Box sides up to 127 pixels: small, medium and large objects (areas split at 32^2 and 96^2).
IMAGE_SIZE = 256
TOLERANCE = 1e-6
# Scores on a 0.1 grid, so that many tie (within an image, a category and across images).
SCORE_STEP = 0.1
GT_IGNORE_PROB = 0.1
ZERO_AREA_GT_PROB = 0.05
NOT_EXHAUSTIVE_PROB = 0.3
MATCHING_DET_PROB = 0.6
WRONG_LABEL_PROB = 0.2
MAX_GT_PER_IMAGE = 5
MAX_DETS_PER_IMAGE = 30
CROWDED_DETS = 350  # more than LVIS's 300 per image


def _polygon(box: Sequence[float], squeeze: float = 1.0) -> List[List[float]]:
    """A quadrilateral in an (x, y, w, h) box; ``squeeze`` < 1 narrows its bottom edge."""
    x, y, w, h = box
    return [[x, y, x + w, y, x + w * squeeze, y + h, x, y + h]]


def _rle(polygon: List[List[float]]) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygon, IMAGE_SIZE, IMAGE_SIZE))
    return dict(size=rle['size'], counts=rle['counts'].decode())


def _random_box(rng: np.random.Generator) -> np.ndarray:
    """An (x, y, w, h) box on the pixel grid, its corner in the top-left quarter of the image."""
    return np.r_[rng.integers(0, IMAGE_SIZE // 2, 2), rng.integers(1, IMAGE_SIZE // 2, 2)]


def random_lvis(seed: int, num_images: int = 6, num_cats: int = 8, with_masks: bool = False,
                crowded: bool = False, first_ann_id: int = 1) -> Tuple[dict, List[dict]]:
    """A small LVIS data set and results exercising LVIS's rules.

    Ground truth: up to 5 boxes of all sizes per image on a pixel grid (exact IoU ties), some
    flagged ``ignore`` or of area 0; random negative and not-exhaustive categories; the last
    category never annotated (only in negative lists and results). Results: jittered copies of
    ground truth (some relabelled) and random boxes, scores on a 0.1 grid, one of zero area;
    the last image without results; with ``crowded``, 350 results on the first image.
    """
    rng = np.random.default_rng(seed)
    categories = [dict(id=int(c), name=f'category_{c}', frequency=str(rng.choice(FREQUENCY_GROUPS)))
                  for c in rng.permutation(np.arange(1, num_cats + 1))]
    annotated_cats = np.arange(1, num_cats)
    images, annotations = [], []
    for img_id in rng.permutation(np.arange(1, num_images + 1)).tolist():
        for _ in range(rng.integers(0, MAX_GT_PER_IMAGE + 1)):
            box = [float(v) for v in _random_box(rng)]
            polygon = _polygon(box)
            area = float(mask_utils.area(_rle(polygon))) if with_masks else box[2] * box[3]
            ann = dict(id=first_ann_id + len(annotations), image_id=img_id,
                       category_id=int(rng.choice(annotated_cats)), bbox=box,
                       segmentation=polygon,
                       area=0.0 if rng.random() < ZERO_AREA_GT_PROB else area)
            if rng.random() < GT_IGNORE_PROB:
                ann['ignore'] = 1
            annotations.append(ann)
        present = {a['category_id'] for a in annotations if a['image_id'] == img_id}
        absent = [c for c in range(1, num_cats + 1) if c not in present]
        images.append(dict(
            id=img_id, height=IMAGE_SIZE, width=IMAGE_SIZE,
            neg_category_ids=rng.choice(absent, rng.integers(0, 3), replace=False).tolist(),
            not_exhaustive_category_ids=[c for c in sorted(present)
                                         if rng.random() < NOT_EXHAUSTIVE_PROB]))
    rng.shuffle(annotations)

    results = []
    for img in images[:-1]:
        gts = [a for a in annotations if a['image_id'] == img['id']]
        num = CROWDED_DETS if crowded and img is images[0] else rng.integers(0, MAX_DETS_PER_IMAGE)
        for _ in range(num):
            if gts and rng.random() < MATCHING_DET_PROB:
                gt = gts[rng.integers(len(gts))]
                box = np.array(gt['bbox']) + rng.integers(-2, 3, 4) * rng.integers(0, 2)
                label = (gt['category_id'] if rng.random() > WRONG_LABEL_PROB else
                         int(rng.integers(1, num_cats + 1)))
            else:
                box = _random_box(rng)
                label = int(rng.integers(1, num_cats + 1))
            box = [float(v) for v in np.maximum(box, [0, 0, 1, 1])]
            result = dict(image_id=img['id'], category_id=label, bbox=box,
                          score=float(np.round(rng.integers(1, 10) * SCORE_STEP, 1)))
            if with_masks:
                result['segmentation'] = _rle(_polygon(box, squeeze=rng.uniform(0.5, 1)))
            results.append(result)
    results.append(dict(results[0], bbox=[1.0, 1.0, 0.0, 5.0]))  # zero area: never evaluated
    rng.shuffle(results)
    return dict(images=images, annotations=annotations, categories=categories), results


def reference(gt: dict, results: List[dict], iou_type: str, tmp_path: Path,
              max_dets: int = 300, cat_ids: Optional[List[int]] = None) -> LVISEval:
    """The reference API's evaluation, run on copies (it modifies its inputs)."""
    gt_file = tmp_path / 'lvis_gt.json'
    gt_file.write_text(json.dumps(gt))
    lvis_gt = LVIS(str(gt_file))
    lvis_dt = LVISResults(lvis_gt, copy.deepcopy(results), max_dets=max_dets)
    ref = LVISEval(lvis_gt, lvis_dt, iou_type)
    if cat_ids is not None:
        ref.params.cat_ids = sorted(cat_ids)
    ref.run()
    return ref


def assert_same_as_reference(gt: dict, results: List[dict], iou_type: str, tmp_path: Path,
                             max_dets: int = 300, cat_ids: Optional[List[int]] = None) -> None:
    ref = reference(gt, results, iou_type, tmp_path, max_dets, cat_ids)
    ours = evaluate_lvis(gt, results, iou_type, max_dets=max_dets, cat_ids=cat_ids)
    # The reference names AR after its params.max_dets (300) whatever LVISResults kept.
    expected = {key.replace('@300', f'@{max_dets}'): float(value)
                for key, value in ref.get_results().items()}
    assert list(ours.stats) == list(expected)
    np.testing.assert_allclose(list(ours.stats.values()), list(expected.values()), rtol=0,
                               atol=TOLERANCE, err_msg=str(ours.stats))
    np.testing.assert_allclose(ours.precision, ref.eval['precision'], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(ours.recall, ref.eval['recall'], rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(ours.cat_ids, ref.params.cat_ids)


@pytest.mark.parametrize('iou_type', IOU_TYPES)
@pytest.mark.parametrize('seed', range(5))
def test_matches_reference_on_random_data(seed: int, iou_type: str, tmp_path: Path) -> None:
    gt, results = random_lvis(seed, with_masks=iou_type == 'segm')
    assert_same_as_reference(gt, results, iou_type, tmp_path)


@pytest.mark.parametrize('iou_type', IOU_TYPES)
def test_matches_reference_with_more_than_300_detections_on_an_image(iou_type: str,
                                                                     tmp_path: Path) -> None:
    gt, results = random_lvis(5, with_masks=iou_type == 'segm', crowded=True)
    first_img = gt['images'][0]['id']
    assert sum(r['image_id'] == first_img for r in results) > 300
    assert_same_as_reference(gt, results, iou_type, tmp_path)


@pytest.mark.parametrize('max_dets', [1, 3, -1])
def test_matches_reference_with_other_detection_limits(max_dets: int, tmp_path: Path) -> None:
    # Scores tie on a 0.1 grid, so the limit cuts through ties: the earlier result is kept.
    gt, results = random_lvis(6, num_images=8)
    assert_same_as_reference(gt, results, 'bbox', tmp_path, max_dets=max_dets)


@pytest.mark.parametrize('iou_type', IOU_TYPES)
def test_matches_reference_on_a_category_subset(iou_type: str, tmp_path: Path) -> None:
    gt, results = random_lvis(7, with_masks=iou_type == 'segm')
    assert_same_as_reference(gt, results, iou_type, tmp_path, cat_ids=[2, 3, 5, 8])


def test_matches_reference_with_a_ground_truth_id_of_zero(tmp_path: Path) -> None:
    # LVIS records a match as the ground truth's id: a match to id 0 counts as a false positive.
    gt, results = random_lvis(8, first_ann_id=0)
    assert any(ann['id'] == 0 for ann in gt['annotations'])
    assert_same_as_reference(gt, results, 'bbox', tmp_path)


def test_matches_reference_when_results_lack_masks_or_boxes(tmp_path: Path) -> None:
    gt, results = random_lvis(9, with_masks=True)
    # segm of box-only results: the box polygons. bbox of mask-only results: the mask boxes
    # (and areas from the masks).
    boxes_only = [{k: v for k, v in r.items() if k != 'segmentation'} for r in results]
    assert_same_as_reference(gt, boxes_only, 'segm', tmp_path)
    masks_only = [{k: v for k, v in r.items() if k != 'bbox'} for r in results]
    assert_same_as_reference(gt, masks_only, 'bbox', tmp_path)


def test_ground_truth_in_the_area_range_is_matched_first(tmp_path: Path) -> None:
    # One detection overlaps a small (900 px) and a medium (1156 px) ground truth of its
    # category, the small one more. Among medium objects the small one is ignored, and LVIS
    # matches the medium one although it overlaps less (IoU 0.83): APm > 0.
    images = [dict(id=1, height=100, width=100, neg_category_ids=[],
                   not_exhaustive_category_ids=[])]
    annotations = [dict(id=i + 1, image_id=1, category_id=1, bbox=box, area=box[2] * box[3],
                        segmentation=_polygon(box))
                   for i, box in enumerate([[10, 10, 30, 30], [10, 10, 34, 34]])]
    gt = dict(images=images, annotations=annotations,
              categories=[dict(id=1, name='thing', frequency='f')])
    results = [dict(image_id=1, category_id=1, bbox=[10, 10, 31, 31], score=0.9)]
    assert evaluate_lvis(gt, results).stats['APm'] > 0
    for iou_type in IOU_TYPES:
        assert_same_as_reference(gt, results, iou_type, tmp_path)


def test_matches_reference_when_accumulating_in_chunks(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lvis_eval, 'ACCUMULATE_CHUNK_DETS', 5)
    gt, results = random_lvis(10, num_images=10)
    assert_same_as_reference(gt, results, 'bbox', tmp_path)


def _hand_made_lvis() -> Tuple[dict, List[dict]]:
    """The fixture of ``test_lvis_compat.py``: APr = 1, APc = 0.5, APf = 0 (see there)."""
    images = [dict(id=1, height=100, width=100, neg_category_ids=[],
                   not_exhaustive_category_ids=[]),
              dict(id=2, height=100, width=100, neg_category_ids=[2],
                   not_exhaustive_category_ids=[])]
    boxes = {1: [10, 10, 30, 30], 2: [50, 50, 20, 40], 3: [5, 60, 30, 30]}
    annotations = [dict(id=cat_id, image_id=1, category_id=cat_id, bbox=box,
                        area=box[2] * box[3], segmentation=_polygon(box))
                   for cat_id, box in boxes.items()]
    categories = [dict(id=1, name='rare_thing', frequency='r'),
                  dict(id=2, name='common_thing', frequency='c'),
                  dict(id=3, name='frequent_thing', frequency='f')]
    results = [dict(image_id=1, category_id=1, bbox=[10, 10, 30, 30], score=0.95),
               dict(image_id=1, category_id=2, bbox=[50, 50, 20, 40], score=0.8),
               dict(image_id=2, category_id=2, bbox=[0, 0, 20, 20], score=0.9)]
    return dict(images=images, annotations=annotations, categories=categories), results


@pytest.mark.parametrize('iou_type', IOU_TYPES)
def test_hand_computed_ap(iou_type: str) -> None:
    gt, results = _hand_made_lvis()
    stats = evaluate_lvis(gt, results, iou_type).stats
    # Up to LVIS's epsilon in precision's denominator: tp / (tp + fp + eps).
    assert (stats['APr'], stats['APc'], stats['APf']) == pytest.approx((1.0, 0.5, 0.0))
    assert (stats['AP'], stats['AP50'], stats['AP75']) == pytest.approx((0.5, 0.5, 0.5))
    # Recall 1 for the rare and the common category, 0 for the frequent one.
    assert stats['AR@300'] == pytest.approx(2 / 3)


def test_hand_computed_ap_of_a_category_subset() -> None:
    gt, results = _hand_made_lvis()
    stats = evaluate_lvis(gt, results, cat_ids=[2, 3]).stats
    assert (stats['APr'], stats['APc'], stats['APf'], stats['AP']) == pytest.approx(
        (-1.0, 0.5, 0.0, 0.25))


def test_parsed_ground_truth_is_reusable_and_inputs_are_kept(tmp_path: Path) -> None:
    gt, results = random_lvis(11, with_masks=True)
    gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)
    parsed = LVISGroundTruth.from_dataset(gt)
    for iou_type in IOU_TYPES:
        assert evaluate_lvis(parsed, results, iou_type).stats == \
            evaluate_lvis(gt, results, iou_type).stats
    assert (gt, results) == (gt_copy, results_copy)
    gt_file, results_file = tmp_path / 'gt.json', tmp_path / 'results.json'
    gt_file.write_text(json.dumps(gt))
    results_file.write_text(json.dumps(results))
    assert evaluate_lvis(str(gt_file), results_file).stats == evaluate_lvis(gt, results).stats


def test_empty_results_score_zero_where_there_is_ground_truth() -> None:
    gt, _ = _hand_made_lvis()
    result = evaluate_lvis(gt, [])
    assert result.stats['AP'] == result.stats['APr'] == result.stats['AR@300'] == 0.0
    assert (result.precision[..., 0] == 0).all()


def test_paired_box_iou_is_bit_identical_to_pycocotools() -> None:
    rng = np.random.default_rng(0)
    boxes1 = rng.uniform(0, 50, (500, 4))
    boxes2 = np.where(rng.random((500, 1)) < 0.2, boxes1, rng.uniform(0, 50, (500, 4)))
    expected = [mask_utils.iou([b1.tolist()], [b2.tolist()], [0])[0, 0]
                for b1, b2 in zip(boxes1, boxes2)]
    np.testing.assert_array_equal(paired_box_iou(boxes1, boxes2), expected)


def test_errors_name_the_field() -> None:
    gt, results = _hand_made_lvis()
    with pytest.raises(ValueError, match='image_id 7 is not in the images'):
        evaluate_lvis(gt, results + [dict(results[0], image_id=7)])
    with pytest.raises(ValueError, match="frequency 'x'"):
        evaluate_lvis(dict(gt, categories=[dict(c, frequency='x') for c in gt['categories']]),
                      results)
    with pytest.raises(ValueError, match=r"images\[0\] has no 'neg_category_ids'"):
        images = [{k: v for k, v in img.items() if k != 'neg_category_ids'}
                  for img in gt['images']]
        evaluate_lvis(dict(gt, images=images), results)
    with pytest.raises(ValueError, match='iou_type'):
        evaluate_lvis(gt, results, iou_type='keypoints')
