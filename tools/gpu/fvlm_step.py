# Copyright (c) mmclim contributors. All rights reserved.
"""Time F-VLM training iterations and one ``predict`` on a shipped config, with random weights.

The config is built as shipped (default ``configs/fvlm_clip_vitb16_lvis.py``: ViT-B/16, NAS-FPN,
Mask R-CNN heads, 1203 LVIS classes) except what no GPU machine here has: the CLIP weights are
random (``pretrained=None``) and the vocabulary is random unit embeddings of the tower's size,
every 4th class novel. The batch is synthetic: ``--batch`` images of ``--image-size`` pixels
(default: the config's images per GPU, at 1024) with 5 random base-class boxes and masks each.
Training runs the config's optimiser through mmengine's ``train_step``, under bfloat16 autocast
with ``--amp`` (mmclim's ``enable_amp``, as ``tools/train.py --amp``).

Prints one JSON line per measurement, then a summary: seconds of the first iteration (warm-up
included) and the median of the others, images per second, CUDA's peak allocation, which RoIAlign
and NMS ran (mmcv's CUDA kernels or the torchvision fallback), and the predict time and
detections.

Usage: python tools/gpu/fvlm_step.py [--config C] [--image-size 1024] [--batch N] [--iters 3]
                                     [--amp] [--device cuda]
"""
import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import open_clip
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from mmclim.engine import enable_amp
from mmclim.models.utils import mmcv_has_kernels
from mmclim.structures import save_class_embeddings, split_record, write_split_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'fvlm_clip_vitb16_lvis.py'
NOVEL_EVERY = 4
BOXES_PER_IMAGE = 5


def random_vocabulary(folder: Path, model_name: str, num_classes: int):
    """Random unit class embeddings "made with" ``model_name`` and a split file, every 4th class
    novel; returns their paths."""
    embed_dim = open_clip.get_model_config(model_name)['embed_dim']
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(num_classes, embed_dim, generator=generator), dim=-1)
    path = str(folder / f'{model_name}_{num_classes}.npy')
    save_class_embeddings(path, embeddings, model_name)
    names = {cat_id: f'class_{cat_id}' for cat_id in range(1, num_classes + 1)}
    split = str(folder / 'split.json')
    write_split_file(split, split_record(names, [i for i in names if i % NOVEL_EVERY],
                                         [i for i in names if i % NOVEL_EVERY == 0], 'random'))
    return path, split


def synthetic_batch(model, batch: int, size: int) -> dict:
    """A dataloader batch: ``batch`` uint8 images with base-class boxes (and masks)."""
    classifier = model.roi_head.classifier
    packed = demo_mm_inputs(batch_size=batch, image_shapes=[(3, size, size)] * batch,
                            num_items=[BOXES_PER_IMAGE] * batch,
                            num_classes=classifier.num_classes, with_mask=model.with_mask)
    base = (~classifier.novel_mask).nonzero().flatten().cpu()
    for sample in packed['data_samples']:
        sample.gt_instances.labels = base[sample.gt_instances.labels % len(base)]
    return packed


def timed(function: Callable[[], object], device: str):
    """``function()`` and its wall seconds, the device synchronised around it."""
    if device == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device == 'cuda':
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', type=Path, default=DEFAULT_CONFIG)
    parser.add_argument('--image-size', type=int, default=1024)
    parser.add_argument('--batch', type=int, help="images per iteration (default: the config's "
                        'per-GPU batch)')
    parser.add_argument('--iters', type=int, default=3, help='training iterations')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast, as --amp of '
                        'tools/train.py')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()

    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no per-parameter init report
    cfg = Config.fromfile(str(args.config))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.backbone.pretrained = None
    bbox_head = cfg.model.roi_head.bbox_head
    folder = Path(tempfile.mkdtemp(prefix='fvlm_step_'))
    bbox_head.class_embeddings, bbox_head.split_file = random_vocabulary(
        folder, cfg.model.backbone.model_name, bbox_head.num_classes)
    batch = args.batch or cfg.train_dataloader.batch_size
    if args.amp:
        enable_amp(cfg, 'bfloat16')

    torch.manual_seed(0)
    (model, build_s) = timed(lambda: MODELS.build(cfg.model), 'cpu')
    model.init_weights()
    model.to(args.device)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    ops = 'mmcv' if mmcv_has_kernels(args.device) else 'torchvision fallback'
    figures: Dict[str, object] = dict(config=args.config.name, device=args.device,
                                      image_size=args.image_size, batch=batch,
                                      amp='bfloat16' if args.amp else 'none', ops=ops,
                                      build_s=round(build_s, 2))
    if args.device == 'cuda':
        figures['gpu'] = torch.cuda.get_device_name()
        torch.cuda.reset_peak_memory_stats()

    model.train()
    iteration_s = []
    for iteration in range(args.iters):
        data = synthetic_batch(model, batch, args.image_size)
        log_vars, seconds = timed(lambda: model.train_step(data, optim_wrapper), args.device)
        log_vars = {name: float(torch.as_tensor(value).detach())
                    for name, value in log_vars.items()}
        loss = log_vars['loss']
        if not torch.isfinite(torch.tensor(loss)):
            raise RuntimeError(f'iteration {iteration}: loss {loss} is not finite')
        iteration_s.append(seconds)
        print(json.dumps(dict(iteration=iteration, seconds=round(seconds, 3),
                              **{name: round(value, 4) for name, value in log_vars.items()})),
              flush=True)

    model.eval()
    data = synthetic_batch(model, 1, args.image_size)
    with torch.no_grad():
        model.test_step(data)  # warm-up
        results, predict_s = timed(lambda: model.test_step(data), args.device)
    later = iteration_s[1:] or iteration_s
    figures.update(
        first_iteration_s=round(iteration_s[0], 3), iteration_s=round(statistics.median(later), 3),
        train_images_per_s=round(batch / statistics.median(later), 2),
        predict_s=round(predict_s, 3), detections=len(results[0].pred_instances),
        peak_mb=round(torch.cuda.max_memory_allocated() / 2**20) if args.device == 'cuda' else None)
    print(json.dumps(figures))


if __name__ == '__main__':
    main()
