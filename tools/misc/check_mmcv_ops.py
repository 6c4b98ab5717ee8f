# Copyright (c) mmclim contributors. All rights reserved.
"""Check that mmcv's compiled RoIAlign and NMS run on a device and agree with its CPU kernels.

Run it in its own process (a broken build can crash the interpreter, as a CUDA build of mmcv 2.1.0
against CUDA 13.0 and torch 2.11 did: docs/gpu.md). It imports mmcv alone, not mmclim, whose
torchvision fallback would stand in for missing kernels. Exit status 0 when they run and agree,
1 when they do not (the reason printed); a crash is a signal.

Usage: python tools/misc/check_mmcv_ops.py [--device cuda]
"""
import argparse
import sys

import torch
from mmcv.ops import nms, roi_align


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    device = parser.parse_args().device
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 32, 32, generator=generator)
    xy = torch.rand(64, 2, generator=generator) * 100
    boxes = torch.cat([xy, xy + torch.rand(64, 2, generator=generator) * 40 + 1], dim=1)
    rois = torch.cat([torch.randint(2, (64, 1), generator=generator).float(), boxes], dim=1)
    scores = torch.randperm(64, generator=generator).float() / 64
    try:
        pooled = roi_align(features.to(device), rois.to(device), (7, 7), 0.25, 0, 'avg', True)
        keep = nms(boxes.to(device), scores.to(device), 0.5)[1]
    except RuntimeError as error:
        sys.exit(f'mmcv ops on {device}: {error}')
    expected = roi_align(features, rois, (7, 7), 0.25, 0, 'avg', True)
    if not torch.allclose(pooled.cpu(), expected, rtol=1e-5, atol=1e-5):
        sys.exit(f'mmcv RoIAlign on {device} differs from its CPU kernel')
    if not torch.equal(keep.cpu(), nms(boxes, scores, 0.5)[1]):
        sys.exit(f'mmcv NMS on {device} differs from its CPU kernel')
    print(f'mmcv ops on {device}: RoIAlign and NMS run and agree with the CPU kernels')


if __name__ == '__main__':
    main()
