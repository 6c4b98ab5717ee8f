# Copyright (c) mmclim contributors. All rights reserved.
"""Mosaic throughput and peak memory, side by side in one run.

Cases, each in a fresh subprocess on the same decoded images (a real photograph shipped with
matplotlib, resized to 8 sizes between 320x240 and 800x600; every call gets fresh copies, as a
decoding pipeline would) and the same 1024x1024 canvas:

- ``mmdet_cached_mosaic``: mmdet's ``CachedMosaic`` (2x2, ``img_scale=(512, 512)``);
- ``mosaic_pseudo_region``: ``MosaicPseudoRegion`` (2x2) given ``mix_results``, as inside
  ``MultiImageMixDataset``;
- ``cached_mosaic_pseudo_region``: ``CachedMosaicPseudoRegion`` (2x2), the like-for-like
  counterpart of ``CachedMosaic``;
- ``batch_mosaic``: the tensor path on a (29, 3, 224, 224) batch into 1024x1024 canvases, the
  official composition (one 2x2, one 3x3 and one 4x4 mosaic; on CUDA when available, else CPU).

Throughput is mosaics per second (and source images per second). Peak memory is what the case
allocates on top of the shared decoded images: tracemalloc's peak (numpy and Python allocations,
caches included) from building the transform through 200 mosaics, measured in a pass before the
timed one; for the batch path on CPU, the growth of the process's peak resident set (torch's CPU
allocations are not traced), and on a GPU CUDA's peak allocation.

Each case runs ``--repeats`` times, interleaved with the others, and the median is reported:
the figures of one process vary by up to 20% from one run to the next on a shared machine.

Usage: python benchmarks/mosaic.py [--seconds 5] [--repeats 3] [--gpu]
(``--gpu``: the batch path alone, on CUDA.)
"""
import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch
from mmdet.datasets.transforms import CachedMosaic
from mmdet.structures.bbox import HorizontalBoxes

from mmclim.datasets import CachedMosaicPseudoRegion, MosaicPseudoRegion

CANVAS = 1024
CASES = ('mmdet_cached_mosaic', 'mosaic_pseudo_region', 'cached_mosaic_pseudo_region',
         'batch_mosaic')
IMAGE_SIZES = ((240, 320), (375, 500), (480, 640), (427, 640), (640, 480), (600, 800),
               (512, 512), (333, 500))
BATCH_SHAPE = (29, 3, 224, 224)
MEMORY_PASS_CALLS = 200


def decoded_images() -> List[np.ndarray]:
    from matplotlib import cbook
    with cbook.get_sample_data('grace_hopper.jpg') as f:
        photo = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return [cv2.resize(photo, (w, h)) for h, w in IMAGE_SIZES]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pipeline_case(name: str, images: List[np.ndarray]) -> Callable[[int], dict]:
    """A function of the call index that makes one 2x2 mosaic of ``images``."""

    def results(i: int) -> dict:
        # A fresh array per call, as decoding gives, so a cache that keeps it pays for it.
        return dict(img=images[i % len(images)].copy(), img_id=i, captions=[f'caption {i}'],
                    img_shape=images[i % len(images)].shape[:2],
                    gt_bboxes=HorizontalBoxes(torch.zeros((0, 4))),
                    gt_bboxes_labels=np.zeros(0, np.int64), gt_ignore_flags=np.zeros(0, bool))

    if name == 'mmdet_cached_mosaic':
        transform = CachedMosaic(img_scale=(CANVAS // 2, CANVAS // 2), max_cached_images=40)
        return lambda i: transform(results(i))
    if name == 'cached_mosaic_pseudo_region':
        transform = CachedMosaicPseudoRegion(grid_choices=[2], canvas_size=CANVAS,
                                             max_cached_images=40)
        return lambda i: transform(results(i))
    transform = MosaicPseudoRegion(grid_choices=[2], canvas_size=CANVAS)
    return lambda i: transform(dict(results(i), mix_results=[results(i + k) for k in (1, 2, 3)]))


def run_case(name: str, seconds: float) -> Dict[str, float]:
    """Time one case for about ``seconds`` after a warm-up; returns its figures."""
    if name == 'batch_mosaic':
        from mmclim.models.utils import batch_mosaic
        from mmclim.structures import MosaicPolicy
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        batch = torch.rand(BATCH_SHAPE, device=device)
        policy = MosaicPolicy([2, 3, 4], 'fixed')  # the official 2x2 + 3x3 + 4x4 of 29 images

        def step(_: int) -> int:
            out = batch_mosaic(batch, policy.draw(len(batch)).grids, CANVAS)
            if device == 'cuda':
                torch.cuda.synchronize()
            return len(out.canvases)
    else:
        images = decoded_images()
        tracemalloc.start()
        mosaic = pipeline_case(name, images)

        def step(i: int) -> int:
            mosaic(i)
            return 1

        for i in range(MEMORY_PASS_CALLS):  # also fills the caches before timing
            step(i)
        traced_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

    for i in range(3):  # warm-up
        step(i)
    rss_before = peak_rss_mb()
    if name == 'batch_mosaic' and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    calls, mosaics, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mosaics += step(calls)
        calls += 1
    elapsed = time.perf_counter() - start
    figures = dict(mosaics_per_s=mosaics / elapsed, calls=calls)
    if name == 'batch_mosaic':
        figures['source_images_per_s'] = calls * BATCH_SHAPE[0] / elapsed
        figures['device'] = device
        figures['peak_mb'] = (torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda' else
                              peak_rss_mb() - rss_before)
    else:
        figures['source_images_per_s'] = 4 * mosaics / elapsed
        figures['peak_mb'] = traced_peak_mb
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=5.0, help='timed seconds per case')
    parser.add_argument('--repeats', type=int, default=3, help='runs per case (median kept)')
    parser.add_argument('--gpu', action='store_true', help='the batch path alone, on CUDA')
    parser.add_argument('--case', choices=CASES, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        parser.error('--gpu needs CUDA')
    if args.case:
        cv2.setNumThreads(1)
        print(json.dumps(run_case(args.case, args.seconds)))
        return

    cases = ('batch_mosaic', ) if args.gpu else CASES
    runs: Dict[str, List[dict]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case in cases:
            proc = subprocess.run([sys.executable, __file__, '--case', case, '--seconds',
                                   str(args.seconds)], capture_output=True, text=True, check=True)
            runs[case].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = {case: sorted(case_runs, key=lambda fig: fig['mosaics_per_s'])[len(case_runs) // 2]
               for case, case_runs in runs.items()}
    print(f'canvas {CANVAS}x{CANVAS}, {args.seconds:.0f} s per run, median of {args.repeats} '
          f'interleaved runs per case, each in its own process, cv2 single-threaded')
    print(f'{"case":30s} {"mosaics/s":>10s} {"images/s":>10s} {"peak MB":>10s}  all runs')
    for case, fig in results.items():
        spread = ', '.join(f'{run["mosaics_per_s"]:.0f}' for run in runs[case])
        print(f'{case:30s} {fig["mosaics_per_s"]:10.1f} {fig["source_images_per_s"]:10.1f} '
              f'{fig["peak_mb"]:10.1f}  ({spread})')
    pipeline_cases = () if args.gpu else ('mosaic_pseudo_region', 'cached_mosaic_pseudo_region')
    for case in pipeline_cases:
        base = results['mmdet_cached_mosaic']
        speed = results[case]['mosaics_per_s'] / base['mosaics_per_s']
        memory = results[case]['peak_mb'] / base['peak_mb']
        print(f'{case} / mmdet CachedMosaic: throughput x{speed:.2f}, peak memory x{memory:.2f}')
    batch = results['batch_mosaic']
    print(f'batch_mosaic {BATCH_SHAPE} -> {CANVAS}x{CANVAS} on {batch["device"]}: '
          f'{batch["calls"] / args.seconds:.1f} batches/s, peak memory {batch["peak_mb"]:.0f} MB '
          f'({"CUDA peak allocation" if batch["device"] == "cuda" else "peak RSS growth"})')


if __name__ == '__main__':
    main()
