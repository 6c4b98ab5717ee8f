# Copyright (c) mmclim contributors. All rights reserved.
"""A vectorised LVIS evaluator that gives the reference LVIS API's results.

:func:`evaluate_lvis` computes what ``LVISEval(gt, LVISResults(gt, results), iou_type).run()``
of ``lvis==0.5.3`` computes (AP, AP50, AP75, APs/m/l, APr/c/f, AR@300, ARs/m/l@300, and its
``precision`` and ``recall`` arrays) by the same rules:

- Selection: see :mod:`.lvis_data` (300 detections per image, federated categories).
- Matching, for each image, category, area range and IoU threshold: detections in decreasing
  score order (ties: the earlier result) each take the unmatched ground truth they overlap most
  with IoU >= the threshold (ties: the later annotation). Ground truth inside the area range and
  not flagged ``ignore`` is preferred to any other.
- Ignored detections: those matched to ground truth outside the area range (or flagged
  ``ignore``), and unmatched ones outside the area range or of a category that is not
  exhaustively annotated on their image (``not_exhaustive_category_ids``).
- Per category and area range, over all images: detections by decreasing score (ties: image
  id, then result order); precision made non-increasing and read at 101 recall points (at the
  first detection reaching each, 0 past the last detection). Categories without ground truth in
  the area range are left out of every mean (-1 in the arrays).

Instead of the reference's Python loops over images, categories, detections and ground truth:
the IoUs of all (detection, ground truth) pairs of an image and category are computed at once;
the greedy matching advances all (image, category) groups a detection at a time, for every IoU
threshold and area range together; accumulation handles all categories and thresholds of an
area range in a few array operations (segmented cumulative sums, and block maxima between the
detections that reach each recall point).
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils

from .lvis_data import (DEFAULT_MAX_DETS, FREQUENCY_GROUPS, IOU_TYPES, LVISDataset, LVISDetections,
                        LVISGroundTruth, LVISResultList, index_in_sorted, rank_in_runs)

# IoU thresholds 0.50:0.05:0.95 and recall points 0:0.01:1, computed as ``lvis.eval.Params``
# computes them so that the values (and the AP50/AP75 look-ups by equality) are the same bits.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1,
                                endpoint=True)
# Object area ranges in pixels (both bounds inclusive), as ``lvis.eval.Params.area_rng``.
AREA_RANGES = np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2],
                        [96 ** 2, 1e5 ** 2]])
AREA_LABELS = ('all', 'small', 'medium', 'large')
# LVIS adds the machine epsilon to the denominator of precision.
PRECISION_EPS = np.spacing(1)
# Detections accumulated at once per area range: bounds each (T, n) array to about 80 MB.
ACCUMULATE_CHUNK_DETS = 1 << 20


@dataclass
class LVISEvalResult:
    """What :func:`evaluate_lvis` computes.

    Attributes:
        stats (Dict[str, float]): ``LVISEval.get_results()``: AP, AP50, AP75, APs, APm, APl,
            APr, APc, APf, AR@{max_dets}, ARs@, ARm@, ARl@ (-1 where nothing is defined).
        precision (np.ndarray): Interpolated precision of shape (T, R, K, A) for the 10 IoU
            thresholds, 101 recall points, K categories and 4 area ranges; -1 where the category
            has no ground truth in the area range.
        recall (np.ndarray): Recall of shape (T, K, A); -1 likewise.
        cat_ids (np.ndarray): The K category ids, sorted.
    """

    stats: Dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: np.ndarray


@dataclass
class _Pairs:
    """Each detection paired with every ground truth of its image and category.

    The pairs of detection d are ``start[d]:start[d] + count[d]``, their ground truth in
    annotation order.

    Attributes:
        gt (np.ndarray): Ground truth index of each pair, shape (P, ).
        iou (np.ndarray): IoU of each pair, shape (P, ).
        start (np.ndarray): First pair of each detection, shape (D, ).
        count (np.ndarray): Number of pairs of each detection, shape (D, ).
    """

    gt: np.ndarray
    iou: np.ndarray
    start: np.ndarray
    count: np.ndarray


def _concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])``, vectorised.

    Args:
        starts (np.ndarray): Range starts of shape (M, ).
        counts (np.ndarray): Range lengths of shape (M, ).

    Returns:
        np.ndarray: The indices, shape (sum(counts), ).
    """
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(counts.sum())


def paired_box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of ``boxes1[i]`` and ``boxes2[i]``, bit-identical to ``pycocotools.mask.iou``.

    The operations and their order are pycocotools' (non-crowd), so thresholds compare alike.

    Args:
        boxes1 (np.ndarray): (x, y, w, h) boxes of shape (P, 4), float64.
        boxes2 (np.ndarray): (x, y, w, h) boxes of shape (P, 4), float64.

    Returns:
        np.ndarray: IoUs of shape (P, ); 0 where the boxes do not overlap.
    """
    width = (np.minimum(boxes1[:, 0] + boxes1[:, 2], boxes2[:, 0] + boxes2[:, 2])
             - np.maximum(boxes1[:, 0], boxes2[:, 0]))
    height = (np.minimum(boxes1[:, 1] + boxes1[:, 3], boxes2[:, 1] + boxes2[:, 3])
              - np.maximum(boxes1[:, 1], boxes2[:, 1]))
    overlap = (width > 0) & (height > 0)
    inter = width[overlap] * height[overlap]
    area1 = boxes1[overlap, 2] * boxes1[overlap, 3]
    area2 = boxes2[overlap, 2] * boxes2[overlap, 3]
    iou = np.zeros(len(boxes1))
    iou[overlap] = inter / (area1 + area2 - inter)
    return iou


def _pair_detections(gt: LVISGroundTruth, gt_order: np.ndarray, dets: LVISDetections,
                     det_keys: np.ndarray, iou_type: str) -> _Pairs:
    """Pair each detection with the ground truth of its image and category and compute IoUs.

    Args:
        gt (LVISGroundTruth): Ground truth.
        gt_order (np.ndarray): Annotation indices sorted by (image, category), then annotation
            order, shape (G, ); pair ``gt`` fields index it.
        dets (LVISDetections): Detections, sorted by (image, category), shape (D, ).
        det_keys (np.ndarray): (image, category) key of each detection, shape (D, ).
        iou_type (str): 'bbox' or 'segm'.

    Returns:
        _Pairs: The pairs.
    """
    groups, group_start, group_count = np.unique(gt.ann_keys[gt_order], return_index=True,
                                                 return_counts=True)
    slot, has_gt = index_in_sorted(groups, det_keys)
    paired = np.flatnonzero(has_gt)
    count = np.zeros(len(dets), np.int64)
    count[paired] = group_count[slot[paired]]
    first_gt = np.zeros(len(dets), np.int64)
    first_gt[paired] = group_start[slot[paired]]
    start = np.cumsum(count) - count
    pair_gt = _concat_ranges(first_gt, count)
    if iou_type == 'bbox':
        det_boxes = np.zeros((len(dets), 4))
        det_boxes[paired] = dets.boxes(paired)
        gt_boxes = gt.boxes(gt_order)
        iou = paired_box_iou(det_boxes[np.repeat(np.arange(len(dets)), count)], gt_boxes[pair_gt])
        return _Pairs(gt=pair_gt, iou=iou, start=start, count=count)

    iou = np.zeros(len(pair_gt))
    det_rles = dict(zip(paired, dets.rles(paired, gt)))
    needed_gt = np.unique(pair_gt)
    gt_rles = dict(zip(needed_gt, gt.rles(gt_order[needed_gt])))
    # Detections of a group are adjacent, and so are their pairs, detection by detection.
    run_bounds = np.r_[np.flatnonzero(rank_in_runs(det_keys[paired]) == 0), len(paired)]
    for begin, end in zip(run_bounds[:-1], run_bounds[1:]):
        group_dets = paired[begin:end]
        first = group_dets[0]
        group_gt = pair_gt[start[first]:start[first] + count[first]]
        ious = mask_utils.iou([det_rles[d] for d in group_dets], [gt_rles[g] for g in group_gt],
                              [0] * len(group_gt))
        iou[start[first]:start[first] + ious.size] = ious.ravel()
    return _Pairs(gt=pair_gt, iou=iou, start=start, count=count)


def _greedy_match(pairs: _Pairs, gt_ignored: np.ndarray,
                  det_keys: np.ndarray) -> Tuple[np.ndarray, ...]:
    """LVIS's greedy matching, for every area range and IoU threshold.

    Only detections overlapping some ground truth of their group with IoU >= the lowest
    threshold can match; step k matches the k-th of them in every (image, category) group at
    once.

    Args:
        pairs (_Pairs): Detection-ground truth pairs; detections in matching order.
        gt_ignored (np.ndarray): Whether each ground truth is ignored in each area range, bool
            of shape (A, G).
        det_keys (np.ndarray): (image, category) key of each detection, shape (D, ).

    Returns:
        Tuple[np.ndarray, ...]: The matches as four arrays of shape (M, ): area range index,
        IoU threshold index, detection index, ground truth index.
    """
    has_pairs = np.flatnonzero(pairs.count)
    best_iou = np.zeros(len(det_keys))
    if len(has_pairs):
        best_iou[has_pairs] = np.maximum.reduceat(pairs.iou, pairs.start[has_pairs])
    candidates = np.flatnonzero(best_iou >= IOU_THRESHOLDS[0])
    if len(candidates) == 0:
        return tuple(np.zeros(0, np.int64) for _ in range(4))
    step = rank_in_runs(det_keys[candidates])
    by_step = candidates[np.argsort(step, kind='stable')]
    taken = np.zeros((len(AREA_RANGES), len(IOU_THRESHOLDS), gt_ignored.shape[1]), bool)
    thresholds = IOU_THRESHOLDS[:, None]
    matches = []
    for dets in np.split(by_step, np.cumsum(np.bincount(step))[:-1]):
        count = pairs.count[dets]
        seg_start = np.cumsum(count) - count
        seg = np.repeat(np.arange(len(dets)), count)
        index = _concat_ranges(pairs.start[dets], count)
        gt, iou = pairs.gt[index], pairs.iou[index]
        # (A, T, P): free ground truth overlapping enough; the regular (not ignored) ones first.
        candidate = ~taken[:, :, gt] & (iou >= thresholds)
        regular = candidate & ~gt_ignored[:, None, gt]
        has_regular = np.logical_or.reduceat(regular, seg_start, axis=2)
        eligible = np.where(has_regular[:, :, seg], regular, candidate)
        top_iou = np.maximum.reduceat(np.where(eligible, iou, -1.0), seg_start, axis=2)
        best = eligible & (iou == top_iou[:, :, seg])
        chosen = np.maximum.reduceat(np.where(best, gt, -1), seg_start, axis=2)
        area_idx, thr_idx, det_idx = np.nonzero(chosen >= 0)
        gt_idx = chosen[area_idx, thr_idx, det_idx]
        taken[area_idx, thr_idx, gt_idx] = True
        matches.append((area_idx, thr_idx, dets[det_idx], gt_idx))
    return tuple(np.concatenate(column) for column in zip(*matches))


@lru_cache(maxsize=None)
def _tp_at_recall_points(num_gt: int) -> np.ndarray:
    """For each recall point r, the fewest true positives k with ``k / num_gt >= r``, shape (R, ).

    Evaluated in float64 as LVIS evaluates ``tp / num_gt``, so comparing true positive counts
    with these compares recalls exactly as LVIS does. All 0 when ``num_gt`` is 0.
    """
    if num_gt == 0:
        return np.zeros(len(RECALL_THRESHOLDS), np.int64)
    return np.searchsorted(np.arange(num_gt + 1) / num_gt, RECALL_THRESHOLDS, side='left')


def _segment_cumsum(values: np.ndarray, seg_len: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, restarting at each segment.

    Args:
        values (np.ndarray): Bool or integer values of shape (T, n).
        seg_len (np.ndarray): Lengths of the consecutive segments, shape (k, ), summing to n.

    Returns:
        np.ndarray: Integer sums of shape (T, n).
    """
    total = np.cumsum(values, axis=1)
    seg_start = np.cumsum(seg_len) - seg_len
    nonempty = seg_len > 0
    base = np.zeros((len(values), len(seg_len)), total.dtype)
    base[:, nonempty] = (total - values)[:, seg_start[nonempty]]
    return total - np.repeat(base, seg_len, axis=1)


def _accumulate_chunk(tp: np.ndarray, fp: np.ndarray, seg_len: np.ndarray,
                      num_gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Precision at the recall points and recall of consecutive categories, in one area range.

    Args:
        tp (np.ndarray): True positives, bool of shape (T, n): the detections of k categories,
            category after category, each by decreasing score.
        fp (np.ndarray): False positives, bool of shape (T, n).
        seg_len (np.ndarray): Detections of each category, shape (k, ), summing to n.
        num_gt (np.ndarray): Ground truth counted for each category, shape (k, ).

    Returns:
        Tuple[np.ndarray, np.ndarray]: Precision (T, R, k) and recall (T, k); -1 for categories
        without ground truth.
    """
    num_thrs, num_dets = tp.shape
    seg_start = np.cumsum(seg_len) - seg_len
    tp_sum, fp_sum = _segment_cumsum(tp, seg_len), _segment_cumsum(fp, seg_len)
    # Without detections recall and precision are 0; without ground truth, undefined (-1).
    trivial = np.where(num_gt > 0, 0.0, -1.0)
    recall = np.broadcast_to(trivial, (num_thrs, len(seg_len))).copy()
    precision = np.broadcast_to(trivial[:, None],
                                (num_thrs, len(seg_len), len(RECALL_THRESHOLDS))).copy()
    scored = np.flatnonzero((num_gt > 0) & (seg_len > 0))
    if len(scored) == 0:
        return precision.transpose(0, 2, 1), recall
    recall[:, scored] = tp_sum[:, seg_start[scored] + seg_len[scored] - 1] / num_gt[scored]
    tp_float = tp_sum.astype(np.float64)
    pr = tp_float / (fp_sum.astype(np.float64) + tp_float + PRECISION_EPS)

    # reached[t, band_start[c] + j]: the detection (index within category c) at which c has j
    # true positives: its j-th true positive (0 for j = 0), or seg_len[c] if it has fewer.
    band = num_gt + 1
    band_start = np.cumsum(band) - band
    reached = np.repeat(seg_len, band)[None].repeat(num_thrs, axis=0)
    reached[:, band_start] = 0
    tp_thr, tp_det = np.nonzero(tp)
    tp_cat = np.repeat(np.arange(len(seg_len)), seg_len)[tp_det]
    reached[tp_thr, band_start[tp_cat] + tp_sum[tp_thr, tp_det]] = tp_det - seg_start[tp_cat]
    # The first detection reaching each recall point, shape (T, s, R), then the end of each
    # category: interpolated precision (the best at this or higher recall) at recall point r is
    # the best of the blocks first[r]:first[r + 1], ..., first[R - 1]:end.
    targets = np.stack([_tp_at_recall_points(int(n)) for n in num_gt[scored]])
    first = reached[:, band_start[scored, None] + targets]
    ends = np.broadcast_to(seg_len[scored, None], (num_thrs, len(scored), 1))
    bounds = np.concatenate([first, ends], axis=2)
    offsets = np.arange(num_thrs)[:, None, None] * num_dets + seg_start[scored, None]
    # A trailing 0 keeps every bound a valid index; the blocks from the ends are dropped.
    block_max = np.maximum.reduceat(np.append(pr.ravel(), 0.0), (bounds + offsets).ravel())
    block_max = block_max.reshape(bounds.shape)[:, :, :-1]
    block_max[first >= bounds[:, :, 1:]] = 0.0
    best_after = np.maximum.accumulate(block_max[:, :, ::-1], axis=2)[:, :, ::-1]
    precision[:, scored] = np.where(first < ends, best_after, 0.0)
    return precision.transpose(0, 2, 1), recall


def _accumulate(tp: np.ndarray, fp: np.ndarray, seg_len: np.ndarray,
                num_gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``LVISEval.accumulate`` for one area range, over chunks of categories.

    Args:
        tp (np.ndarray): True positives, bool of shape (T, D), detections by category, then
            decreasing score (ties: image, then result order).
        fp (np.ndarray): False positives, bool of shape (T, D).
        seg_len (np.ndarray): Detections of each category, shape (K, ).
        num_gt (np.ndarray): Ground truth counted for each category, shape (K, ).

    Returns:
        Tuple[np.ndarray, np.ndarray]: Precision (T, R, K) and recall (T, K).
    """
    seg_end = np.cumsum(seg_len)
    chunk = (seg_end - seg_len) // ACCUMULATE_CHUNK_DETS
    cat_bounds = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1], True])
    precision = np.empty((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(seg_len)))
    recall = np.empty((len(IOU_THRESHOLDS), len(seg_len)))
    for begin, end in zip(cat_bounds[:-1], cat_bounds[1:]):
        dets = slice(seg_end[begin] - seg_len[begin], seg_end[end - 1])
        precision[:, :, begin:end], recall[:, begin:end] = _accumulate_chunk(
            tp[:, dets], fp[:, dets], seg_len[begin:end], num_gt[begin:end])
    return precision, recall


def _true_false_positives(thr_idx: np.ndarray, det_idx: np.ndarray, gt_idx: np.ndarray,
                          gt_ignored: np.ndarray, gt_ids: np.ndarray,
                          det_ignorable: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """True and false positives in one area range, as ``LVISEval.evaluate_img`` flags them.

    Args:
        thr_idx (np.ndarray): IoU threshold of each match, shape (M, ).
        det_idx (np.ndarray): Detection of each match, shape (M, ).
        gt_idx (np.ndarray): Ground truth of each match, shape (M, ).
        gt_ignored (np.ndarray): Whether each ground truth is ignored, bool of shape (G, ).
        gt_ids (np.ndarray): Annotation id of each ground truth, shape (G, ).
        det_ignorable (np.ndarray): Whether each detection is ignored unless matched (outside
            the area range, or of a not exhaustively annotated category), bool of shape (D, ).

    Returns:
        Tuple[np.ndarray, np.ndarray]: True and false positives, bool of shape (T, D); a
        detection can be neither (ignored).
    """
    shape = (len(IOU_THRESHOLDS), len(det_ignorable))
    # LVIS records a match as the ground truth's id, so a match to id 0 reads as no match.
    marked = gt_ids[gt_idx] != 0
    has_match = np.zeros(shape, bool)
    has_match[thr_idx[marked], det_idx[marked]] = True
    to_ignored = gt_ignored[gt_idx]
    ignored = np.zeros(shape, bool)
    ignored[thr_idx[to_ignored], det_idx[to_ignored]] = True
    ignored |= ~has_match & det_ignorable
    return has_match & ~ignored, ~has_match & ~ignored


def _mean_defined(values: np.ndarray) -> float:
    """Mean of the values above -1, as ``LVISEval._summarize``; -1 when there are none."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray, cat_frequency: np.ndarray,
               max_dets: int) -> Dict[str, float]:
    """``LVISEval.summarize``: the means that make up ``get_results()``.

    Args:
        precision (np.ndarray): Shape (T, R, K, A).
        recall (np.ndarray): Shape (T, K, A).
        cat_frequency (np.ndarray): Frequency group index of each category, shape (K, ).
        max_dets (int): Detections per image, for the AR names.

    Returns:
        Dict[str, float]: The results, in ``LVISEval``'s order.
    """

    def ap(iou_thr: Optional[float] = None, area: str = 'all',
           frequency: Optional[str] = None) -> float:
        values = precision
        if iou_thr is not None:
            values = values[np.flatnonzero(IOU_THRESHOLDS == iou_thr)]
        cats = (slice(None) if frequency is None else
                np.flatnonzero(cat_frequency == FREQUENCY_GROUPS.index(frequency)))
        return _mean_defined(values[:, :, cats, AREA_LABELS.index(area)])

    stats = dict(AP=ap(), AP50=ap(iou_thr=0.50), AP75=ap(iou_thr=0.75), APs=ap(area='small'),
                 APm=ap(area='medium'), APl=ap(area='large'))
    for frequency in FREQUENCY_GROUPS:
        stats[f'AP{frequency}'] = ap(frequency=frequency)
    stats[f'AR@{max_dets}'] = _mean_defined(recall[:, :, AREA_LABELS.index('all')])
    for area in AREA_LABELS[1:]:
        stats[f'AR{area[0]}@{max_dets}'] = _mean_defined(recall[:, :, AREA_LABELS.index(area)])
    return stats


def evaluate_lvis(gt: Union[LVISDataset, LVISGroundTruth],
                  results: LVISResultList,
                  iou_type: str = 'bbox',
                  max_dets: int = DEFAULT_MAX_DETS,
                  cat_ids: Optional[Sequence[int]] = None) -> LVISEvalResult:
    """Evaluate LVIS detections as ``LVISEval(gt, LVISResults(gt, results, max_dets),
    iou_type).run()`` does.

    Unlike the reference, empty ``results`` evaluate (to AP 0 where there is ground truth)
    instead of raising, inputs are not modified, and the AR keys are named after ``max_dets``
    (the reference names them after ``LVISEval.params.max_dets``, 300, whatever it kept).

    Args:
        gt (str | Path | dict | LVISGroundTruth): The LVIS annotation file, its content, or it
            parsed (to evaluate several result sets against it).
        results (str | Path | Sequence[dict]): A results file or list: dicts with ``image_id``,
            ``category_id``, ``score`` and ``bbox`` (x, y, w, h) and/or ``segmentation`` (an
            RLE).
        iou_type (str): 'bbox' or 'segm'. Defaults to 'bbox'.
        max_dets (int): Detections kept per image; negative keeps all. Defaults to 300.
        cat_ids (Sequence[int], optional): Evaluate these categories only (as setting
            ``LVISEval.params.cat_ids``); only when ``gt`` is not parsed yet. Defaults to None:
            all.

    Returns:
        LVISEvalResult: The results.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f'iou_type must be one of {IOU_TYPES}, got {iou_type!r}')
    if not isinstance(gt, LVISGroundTruth):
        gt = LVISGroundTruth.from_dataset(gt, cat_ids=cat_ids)
    elif cat_ids is not None:
        raise ValueError('cat_ids: pass them to LVISGroundTruth.from_dataset')
    dets = LVISDetections.from_results(results, gt, max_dets=max_dets)
    # Matching order: by (image, category), then score, decreasing; ties by result order.
    det_keys = dets.img * gt.num_cats + dets.cat
    matching_order = np.lexsort((dets.order, -dets.scores, det_keys))
    dets, det_keys = dets.reorder(matching_order), det_keys[matching_order]
    gt_order = np.argsort(gt.ann_keys, kind='stable')

    pairs = _pair_detections(gt, gt_order, dets, det_keys, iou_type)
    gt_area = gt.ann_area[gt_order]
    gt_ignored = (gt.ann_ignore[gt_order] | (gt_area < AREA_RANGES[:, :1])
                  | (gt_area > AREA_RANGES[:, 1:]))
    match_area, match_thr, match_det, match_gt = _greedy_match(pairs, gt_ignored, det_keys)

    det_ignorable = ((dets.areas < AREA_RANGES[:, :1]) | (dets.areas > AREA_RANGES[:, 1:])
                     | dets.not_exhaustive)
    gt_ids, gt_cat = gt.ann_ids[gt_order], gt.ann_cat[gt_order]
    # Accumulation order: by category, then score, decreasing; ties by image, then result order.
    accumulation_order = np.lexsort((dets.order, dets.img, -dets.scores, dets.cat))
    dets_per_cat = np.bincount(dets.cat, minlength=gt.num_cats)
    precision = np.empty((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), gt.num_cats,
                          len(AREA_RANGES)))
    recall = np.empty((len(IOU_THRESHOLDS), gt.num_cats, len(AREA_RANGES)))
    for area in range(len(AREA_RANGES)):
        in_area = match_area == area
        tp, fp = _true_false_positives(match_thr[in_area], match_det[in_area],
                                       match_gt[in_area], gt_ignored[area], gt_ids,
                                       det_ignorable[area])
        num_gt = np.bincount(gt_cat[~gt_ignored[area]], minlength=gt.num_cats)
        precision[..., area], recall[..., area] = _accumulate(
            tp[:, accumulation_order], fp[:, accumulation_order], dets_per_cat, num_gt)
    return LVISEvalResult(
        stats=_summarize(precision, recall, gt.cat_frequency, max_dets),
        precision=precision,
        recall=recall,
        cat_ids=gt.cat_ids)
