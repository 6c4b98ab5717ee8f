# Copyright (c) mmclim contributors. All rights reserved.
"""``evaluate_lvis`` against the reference LVIS API on synthetic LVIS-scale data.

Data (``--seed``): ``--images`` images of 640x480, the 1203 LVIS categories split 337 rare /
461 common / 405 frequent (LVIS v1), a frequent category 10 times and a common one 3 times as
likely on an image as a rare one. Each image has 1 + Poisson(3) categories with Geometric(0.6)
instances each (small, medium and large boxes), 5 verified-absent categories and a 15% chance per
present category of not being exhaustively annotated. Each image gets 300 detections: 1 to 4
jittered copies of each ground truth (one in five with a wrong label), the rest random boxes,
labelled with a category of the image's present or negative lists two times in five and any
category otherwise. Scores are rounded to 1e-4, so ties occur. Masks (for ``segm``) are the
octagons inscribed in the boxes, rasterised to RLE.

Both sides read the same JSON files (ground truth, then results) and are timed from reading
them to the results: ``LVIS`` + ``LVISResults`` + ``LVISEval.run()`` in a subprocess
(``import mmclim`` first restores the numpy aliases ``lvis==0.5.3`` needs), and
:func:`evaluate_lvis` in this process (median of ``--repeats`` runs); one process each. Reading
the results file (``json.load``, the same for both) is also timed, and a second speedup leaves
it out. bbox and segm run on the same scale (the reference's mask evaluation is no slower).

Usage: python benchmarks/lvis_eval.py [--images 500] [--seed 0] [--iou-types bbox segm]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_utils

from mmclim.evaluation.functional import IOU_TYPES, evaluate_lvis

# LVIS v1: 337 rare, 461 common and 405 frequent categories.
FREQUENCY_COUNTS = {'r': 337, 'c': 461, 'f': 405}
# How much likelier a common / frequent category is on an image than a rare one.
FREQUENCY_WEIGHTS = {'r': 1.0, 'c': 3.0, 'f': 10.0}
IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640
MEAN_EXTRA_CATEGORIES = 3  # an image has 1 + Poisson(3) categories
# Instances per category: Geometric(1 - 0.4), at least 1 (mean 1.67).
INSTANCE_CONTINUE_PROB = 0.4
NUM_NEGATIVE_CATEGORIES = 5
NOT_EXHAUSTIVE_PROB = 0.15
# Box sides between 8 and 400 pixels, log-uniform: small, medium and large objects.
MIN_SIDE, MAX_SIDE = 8, 400
DETS_PER_IMAGE = 300
MAX_COPIES_PER_GT = 4
WRONG_LABEL_PROB = 0.2
LISTED_LABEL_PROB = 0.4
JITTER = 0.1  # box jitter, as a fraction of the box size
SCORE_DECIMALS = 4


def octagon(box: List[float]) -> List[List[float]]:
    """The octagon inscribed in an (x, y, w, h) box, as one flat polygon."""
    x, y, w, h = box
    xs = (x, x + w / 3, x + 2 * w / 3, x + w, x + w, x + 2 * w / 3, x + w / 3, x)
    ys = (y + h / 3, y, y, y + h / 3, y + 2 * h / 3, y + h, y + h, y + 2 * h / 3)
    return [[float(v) for xy in zip(xs, ys) for v in xy]]


def random_boxes(rng: np.random.Generator, num: int) -> np.ndarray:
    """``num`` (x, y, w, h) boxes inside the image, shape (num, 4)."""
    sides = np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE), (num, 2)))
    w, h = np.minimum(sides[:, 0], IMAGE_WIDTH - 1), np.minimum(sides[:, 1], IMAGE_HEIGHT - 1)
    x, y = rng.uniform(0, IMAGE_WIDTH - w), rng.uniform(0, IMAGE_HEIGHT - h)
    return np.round(np.stack([x, y, w, h], axis=1), 2)


def mask_rle(box: List[float]) -> dict:
    """The octagon of ``box`` as an RLE with a str ``counts``, as results files hold it."""
    rle = mask_utils.merge(mask_utils.frPyObjects(octagon(box), IMAGE_HEIGHT, IMAGE_WIDTH))
    return dict(size=rle['size'], counts=rle['counts'].decode())


def make_dataset(num_images: int, seed: int, with_masks: bool) -> Tuple[dict, List[dict]]:
    """Synthetic LVIS ground truth and detections (see the module docstring)."""
    rng = np.random.default_rng(seed)
    frequency = rng.permutation(np.repeat(list(FREQUENCY_COUNTS), list(FREQUENCY_COUNTS.values())))
    cat_ids = np.arange(1, len(frequency) + 1)
    categories = [dict(id=int(c), name=f'category_{c}', frequency=str(f))
                  for c, f in zip(cat_ids, frequency)]
    weights = np.array([FREQUENCY_WEIGHTS[f] for f in frequency])
    weights /= weights.sum()
    images, annotations, results = [], [], []
    for img_id in range(1, num_images + 1):
        num_present = min(1 + rng.poisson(MEAN_EXTRA_CATEGORIES), len(cat_ids))
        present = rng.choice(cat_ids, num_present, replace=False, p=weights)
        absent = np.setdiff1d(cat_ids, present)
        negative = rng.choice(absent, NUM_NEGATIVE_CATEGORIES, replace=False)
        not_exhaustive = present[rng.random(num_present) < NOT_EXHAUSTIVE_PROB]
        images.append(dict(id=img_id, height=IMAGE_HEIGHT, width=IMAGE_WIDTH,
                           neg_category_ids=negative.tolist(),
                           not_exhaustive_category_ids=not_exhaustive.tolist()))
        gt_labels = np.repeat(present, rng.geometric(1 - INSTANCE_CONTINUE_PROB, num_present))
        gt_boxes = random_boxes(rng, len(gt_labels))
        for label, box in zip(gt_labels, gt_boxes.tolist()):
            segmentation = octagon(box)
            area = (float(mask_utils.area(mask_rle(box))) if with_masks else box[2] * box[3])
            annotations.append(dict(id=len(annotations) + 1, image_id=img_id,
                                    category_id=int(label), bbox=box, area=area,
                                    segmentation=segmentation))

        copies = rng.integers(1, MAX_COPIES_PER_GT + 1, len(gt_labels))
        det_boxes = np.repeat(gt_boxes, copies, axis=0)
        det_boxes[:, :2] += rng.normal(0, JITTER, (len(det_boxes), 2)) * det_boxes[:, 2:]
        det_boxes[:, 2:] *= np.exp(rng.normal(0, JITTER, (len(det_boxes), 2)))
        det_labels = np.repeat(gt_labels, copies)
        wrong = rng.random(len(det_labels)) < WRONG_LABEL_PROB
        det_labels[wrong] = rng.choice(cat_ids, wrong.sum())
        num_random = max(DETS_PER_IMAGE - len(det_boxes), 0)
        listed = np.concatenate([present, negative])
        random_labels = np.where(rng.random(num_random) < LISTED_LABEL_PROB,
                                 rng.choice(listed, num_random), rng.choice(cat_ids, num_random))
        det_boxes = np.round(np.concatenate([det_boxes, random_boxes(rng, num_random)]), 2)
        det_labels = np.concatenate([det_labels, random_labels])
        scores = np.round(np.concatenate([rng.uniform(0.3, 1, len(det_labels) - num_random),
                                          rng.uniform(0, 0.6, num_random)]), SCORE_DECIMALS)
        for label, box, score in zip(det_labels, det_boxes.tolist(), scores):
            result = dict(image_id=img_id, category_id=int(label), bbox=box, score=float(score))
            if with_masks:
                result['segmentation'] = mask_rle(box)
            results.append(result)
    return dict(images=images, annotations=annotations, categories=categories), results


def read_results(path: str) -> Tuple[List[dict], float]:
    """The results file's list, and the seconds reading it took."""
    start = time.perf_counter()
    with open(path) as f:
        results = json.load(f)
    return results, time.perf_counter() - start


def run_reference(gt_file: str, results_file: str, iou_type: str) -> None:
    """Subprocess side: time the reference API and print its results as JSON."""
    import logging

    from lvis import LVIS, LVISEval, LVISResults

    import mmclim  # noqa: F401  (gives lvis.eval the numpy aliases it needs)
    logging.disable(logging.WARNING)
    start = time.perf_counter()
    lvis_gt = LVIS(gt_file)
    # LVISResults(lvis_gt, results_file) reads the file the same way; reading it here times it.
    results, read_seconds = read_results(results_file)
    lvis_eval = LVISEval(lvis_gt, LVISResults(lvis_gt, results), iou_type)
    lvis_eval.run()
    seconds = time.perf_counter() - start
    stats = {k: float(v) for k, v in lvis_eval.get_results().items()}
    print(json.dumps(dict(seconds=seconds, read_seconds=read_seconds, stats=stats)))


def run_ours(gt_file: str, results_file: str, iou_type: str) -> Tuple[dict, float, float]:
    """Time :func:`evaluate_lvis` as the reference is timed: results, seconds, reading seconds."""
    start = time.perf_counter()
    results, read_seconds = read_results(results_file)
    stats = evaluate_lvis(gt_file, results, iou_type).stats
    return stats, time.perf_counter() - start, read_seconds


def compare(gt_file: Path, results_file: Path, iou_type: str, repeats: int) -> Dict[str, float]:
    """Time both sides on the files; return times, speedups and the largest difference."""
    proc = subprocess.run([sys.executable, __file__, '--reference', str(gt_file),
                           str(results_file), iou_type], capture_output=True, text=True,
                          check=True)
    reference = json.loads(proc.stdout.strip().splitlines()[-1])
    runs = [run_ours(str(gt_file), str(results_file), iou_type) for _ in range(repeats)]
    stats = runs[0][0]
    seconds = statistics.median(run[1] for run in runs)
    read_seconds = statistics.median(run[2] for run in runs)
    return dict(
        reference_s=reference['seconds'], reference_read_s=reference['read_seconds'],
        ours_s=seconds, ours_read_s=read_seconds, speedup=reference['seconds'] / seconds,
        speedup_after_read=((reference['seconds'] - reference['read_seconds']) /
                            (seconds - read_seconds)),
        max_abs_diff=max(abs(stats[k] - v) for k, v in reference['stats'].items()),
        AP=stats['AP'], APr=stats['APr'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=500)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--iou-types', nargs='+', default=list(IOU_TYPES), choices=IOU_TYPES)
    parser.add_argument('--repeats', type=int, default=3, help='runs of ours (median)')
    parser.add_argument('--reference', nargs=3, metavar=('GT', 'RESULTS', 'IOU_TYPE'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        run_reference(*args.reference)
        return

    with tempfile.TemporaryDirectory() as tmp:
        for iou_type in args.iou_types:
            gt, results = make_dataset(args.images, args.seed, with_masks=iou_type == 'segm')
            gt_file, results_file = Path(tmp) / 'gt.json', Path(tmp) / 'results.json'
            gt_file.write_text(json.dumps(gt))
            results_file.write_text(json.dumps(results))
            row = compare(gt_file, results_file, iou_type, args.repeats)
            print(f'{iou_type}: {args.images} images, {len(gt["annotations"])} ground truth, '
                  f'{len(results)} detections, {len(gt["categories"])} categories')
            print(f'  reference LVIS API {row["reference_s"]:.2f} s '
                  f'(reading results {row["reference_read_s"]:.2f} s) | evaluate_lvis '
                  f'{row["ours_s"]:.2f} s (reading results {row["ours_read_s"]:.2f} s)')
            print(f'  speedup {row["speedup"]:.1f}x ({row["speedup_after_read"]:.1f}x after '
                  f'reading results) | max |diff| over all fields {row["max_abs_diff"]:.1e} | '
                  f'AP {row["AP"]:.4f} APr {row["APr"]:.4f}')


if __name__ == '__main__':
    main()
