# Copyright (c) mmclim contributors. All rights reserved.
"""Training-step throughput and peak memory: CLIM step against the image-level CLIP step.

Same model, same batch, same optimiser (AdamW over the trainable parameters), one full step
(forward, backward, update) per measurement; each case in its own process. Cases:

- ``image``: every image aligned with its caption by its global embedding (CLIP's objective);
- ``clim-fixed``: the official composition, one 2x2, 3x3 and 4x4 mosaic per 29 images, the rest
  single (64 images: 58 in mosaics, 6 single; 32 images: 29 and 3);
- ``clim-random-0.5``: grids drawn at random into half of the batch, half single (the paper's
  Detic split).

Mosaic cells are at the single images' resolution (``canvas_size=None``: a 3x3 canvas of 64x64
images is 192x192). Throughput is counted in source images per second (a mosaic of 9 images counts
9). Peak memory is the growth of the process's peak RSS during the timed steps on CPU, or CUDA's
peak allocation on a GPU. FLOPs per step are counted once, untimed, by torch's
``FlopCounterMode`` (matrix products, convolutions and attention; forward and backward); on a GPU
the model FLOPs utilisation (MFU) is the achieved rate over 790 TFLOP/s, the dense bf16 matrix
product rate measured on the H200 (8192^3, random data).

Devices: on CPU a small ViT (``mmclim-toy-vit``: 4 blocks, width 96, 64x64 images, batch 64);
with ``--gpu`` (when CUDA is available) ViT-B/16 with 6 unlocked blocks, 224x224 singles,
batch 32, bf16 autocast, and also cells on a fixed 1024x1024 canvas (the paper's setting).

Usage: python benchmarks/clim_step.py [--steps 10] [--gpu]
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Dict, Optional

import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement
from torch.utils.flop_counter import FlopCounterMode

import mmclim  # noqa: F401

CPU_SETUP = dict(model_name='mmclim-toy-vit', image_size=64, batch=64, unlocked=2)
GPU_SETUP = dict(model_name='ViT-B-16-quickgelu', image_size=224, batch=32, unlocked=6)
CASES = {
    'image': dict(mode='image'),
    'clim-fixed': dict(mode='clim', mosaic=dict(composition='fixed')),
    'clim-random-0.5': dict(mode='clim', mosaic=dict(composition='random', mosaic_fraction=0.5)),
}
WARMUP_STEPS = 2
#: Dense bf16 matrix-product rate of the H200 as measured (8192^3 products, random data), FLOP/s.
PEAK_BF16_FLOPS = 790e12


def run_case(case: str, steps: int, gpu: bool,
             canvas_size: Optional[int] = None) -> Dict[str, float]:
    setup = GPU_SETUP if gpu else CPU_SETUP
    device = 'cuda' if gpu else 'cpu'
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(
        dict(type='CLIMCLIP', canvas_size=canvas_size, **CASES[case],
             clip=dict(type='OpenCLIPRegion', model_name=setup['model_name'],
                       unlocked_vision_blocks=setup['unlocked']))).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    size, batch = setup['image_size'], setup['batch']
    images = torch.randn(batch, 3, size, size, device=device)
    samples = [BaseDataElement(metainfo=dict(captions=[f'a photo of object {i}']))
               for i in range(batch)]

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=gpu):
            loss = model.loss(images, samples)['loss_caption']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if gpu:
            torch.cuda.synchronize()

    for _ in range(WARMUP_STEPS):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if gpu else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before)
    flops = counter.get_total_flops()
    return dict(images_per_s=batch * steps / elapsed, step_s=elapsed / steps, peak_mb=peak,
                tflops_per_step=flops / 1e12, mfu=flops * steps / elapsed / PEAK_BF16_FLOPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=10, help='timed steps per case')
    parser.add_argument('--gpu', action='store_true', help='ViT-B/16 on CUDA in bf16')
    parser.add_argument('--case', choices=sorted(CASES), help=argparse.SUPPRESS)  # child
    parser.add_argument('--canvas-size', type=int, help=argparse.SUPPRESS)  # child
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        parser.error('--gpu needs CUDA')
    if args.case:
        print(json.dumps(run_case(args.case, args.steps, args.gpu, args.canvas_size)))
        return

    setup = GPU_SETUP if args.gpu else CPU_SETUP
    runs = [(case, None) for case in CASES]
    if args.gpu:
        runs += [(case, 1024) for case in CASES if case != 'image']
    results = {}
    for case, canvas in runs:
        command = [sys.executable, __file__, '--case', case, '--steps', str(args.steps)]
        command += ['--gpu'] * args.gpu + (['--canvas-size', str(canvas)] if canvas else [])
        proc = subprocess.run(command, capture_output=True, text=True, check=True)
        results[(case, canvas)] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f'{setup["model_name"]}, batch {setup["batch"]} of {setup["image_size"]}x'
          f'{setup["image_size"]}, {args.steps} timed steps, '
          f'{"CUDA bf16" if args.gpu else f"CPU, {torch.get_num_threads()} threads"}')
    mfu_header = f' {"TFLOP/s":>8s} {"MFU":>6s}' if args.gpu else ''
    print(f'{"case":40s} {"images/s":>9s} {"s/step":>8s} {"peak MB":>9s} {"vs image":>9s} '
          f'{"TFLOP/step":>10s}{mfu_header}')
    base = results[('image', None)]['images_per_s']
    for (case, canvas), fig in results.items():
        cells = f' (canvas {canvas})' if canvas else ' (cells at image size)'
        name = case if case == 'image' else case + cells
        rate = fig['tflops_per_step'] / fig['step_s']
        mfu = f' {rate:8.1f} {100 * fig["mfu"]:5.1f}%' if args.gpu else ''
        print(f'{name:40s} {fig["images_per_s"]:9.1f} {fig["step_s"]:8.3f} {fig["peak_mb"]:9.0f} '
              f'{fig["images_per_s"] / base:8.2f}x {fig["tflops_per_step"]:10.3f}{mfu}')


if __name__ == '__main__':
    main()
