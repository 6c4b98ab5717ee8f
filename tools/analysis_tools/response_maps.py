# Copyright (c) mmclim contributors. All rights reserved.
"""Where a CLIP's dense features respond to texts: one PNG per input, one row per model.

Each model is ``LABEL=SOURCE``: ``MODEL_NAME:FILE``, an open_clip config name and an open_clip
or OpenAI checkpoint (e.g. ``ViT-B-16-quickgelu:checkpoints/ViT-B-16.pt``), or
``CONFIG.py:CHECKPOINT``, an mmclim config and a checkpoint of its run, whose first
``OpenCLIPRegion`` is used (with the run's weight ensembling, as its evaluation). Give two (e.g.
CLIP and CLIM) to see them side by side. Each panel overlays the cosine similarity between the
dense map and a text's embedding (its prompt-set average) on the image; each row has its colour
scale.

Inputs are images (each alone) or, with ``--mosaic RxC``, one mosaic built from R*C images as in
the paper's Figure 3. With ``--ann-file`` (COCO boxes of the images) it also plays the pointing
game: for each object, does the response to its class name peak inside its box, and by what
margin (the maximum inside minus the maximum outside).

Examples::

    # CLIP vs CLIM of `make demo` on a 2x2 mosaic of toy caption images
    python tools/analysis_tools/response_maps.py \\
        --model baseline=mmclim-toy-vit:work_dirs/demo/baseline/clip_openclip.pt \\
        --model CLIM=mmclim-toy-vit:work_dirs/demo/clim/clip_openclip.pt \\
        --images data/toy_shapes/caption_train/00000{0,1,2,3}.png --mosaic 2x2 \\
        --texts "red circle" "blue square" --out-dir work_dirs/demo/response_maps
"""
import argparse
import contextlib
import json
import os
import os.path as osp
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmclim.evaluation.metrics import compute_text_embeddings, get_prompt_set
from mmclim.models.backbones import OpenCLIPRegion
from mmclim.visualization import (compose_mosaic, draw_response_panels, normalize_images,
                                  pointing_game, text_response_maps)

DEFAULT_TEMPLATES = 'single'

# A model to draw: its label, its CLIP, and the context its maps are computed in.
Source = Tuple[str, OpenCLIPRegion, Callable[[], ContextManager]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Text response maps of CLIP dense features')
    parser.add_argument('--model', action='append', required=True, metavar='LABEL=SOURCE',
                        help='LABEL=MODEL_NAME:FILE (open_clip/OpenAI weights) or '
                        'LABEL=CONFIG.py:CHECKPOINT (an mmclim run); repeat to compare')
    parser.add_argument('--images', nargs='+', required=True, help='image files')
    parser.add_argument('--texts', nargs='+', help='texts to query (default with --ann-file: '
                        'the class names of the objects)')
    parser.add_argument('--mosaic', help='RxC: one mosaic of R*C images instead of each image')
    parser.add_argument('--size', type=int, help='side of each image (of each mosaic cell) in '
                        'pixels, a multiple of the stride (default: the model\'s native size)')
    parser.add_argument('--templates', default=DEFAULT_TEMPLATES,
                        help=f'prompt set of the texts (default {DEFAULT_TEMPLATES!r})')
    parser.add_argument('--ann-file', help='COCO json with boxes of the images: pointing game')
    parser.add_argument('--out-dir', required=True, help='where the PNGs (and scores) go')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of the configs of CONFIG.py sources')
    return parser.parse_args(argv)


def load_source(spec: str, cfg_options: Optional[dict] = None) -> Source:
    """A ``LABEL=SOURCE`` argument as a label, its CLIP (eval mode) and a context factory."""
    label, sep, source = spec.partition('=')
    location, colon, checkpoint = source.rpartition(':')
    if not (sep and colon and label and location and checkpoint):
        raise ValueError(f'--model {spec!r}: expected LABEL=MODEL_NAME:FILE or '
                         'LABEL=CONFIG.py:CHECKPOINT')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'--model {spec!r}: no checkpoint {checkpoint}')
    if not location.endswith('.py'):
        return label, OpenCLIPRegion(location, pretrained=checkpoint).eval(), contextlib.nullcontext
    cfg = Config.fromfile(location)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu')
    clips = [module for module in model.modules() if isinstance(module, OpenCLIPRegion)]
    if not clips:
        raise ValueError(f'--model {spec!r}: the model of {location} holds no OpenCLIPRegion')
    model.eval()
    return label, clips[0], getattr(model, 'ensembled_weights', contextlib.nullcontext)


def native_size(clip: OpenCLIPRegion) -> int:
    """The side of the model's native input, in pixels."""
    size = clip.clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def read_rgb(path: str, size: int) -> np.ndarray:
    """An image file as RGB uint8 resized to ``size x size``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'--images: no file {path}')
    image = mmcv.imread(path, channel_order='rgb')
    if image is None:
        raise ValueError(f'--images: {path} is not an image')
    return mmcv.imresize(image, (size, size))


def parse_grid(text: str) -> Tuple[int, int]:
    """``'RxC'`` as ``(R, C)``."""
    rows, sep, cols = text.lower().partition('x')
    if not (sep and rows.isdigit() and cols.isdigit() and int(rows) > 0 and int(cols) > 0):
        raise ValueError(f'--mosaic: expected RxC with positive integers, got {text!r}')
    return int(rows), int(cols)


def coco_objects(ann_file: str, paths: List[str]) -> Dict[str, List[Tuple[str, List[float]]]]:
    """The (class name, xyxy box) of each object of the images, by image path."""
    with open(ann_file) as file:
        coco = json.load(file)
    names = {cat['id']: cat['name'] for cat in coco['categories']}
    ids = {osp.basename(img['file_name']): img['id'] for img in coco['images']}
    objects: Dict[int, List[Tuple[str, List[float]]]] = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        objects.setdefault(ann['image_id'], []).append((names[ann['category_id']],
                                                        [x, y, x + w, y + h]))
    missing = [path for path in paths if osp.basename(path) not in ids]
    if missing:
        raise ValueError(f'--ann-file {ann_file} has no image {missing[0]}')
    return {path: objects.get(ids[osp.basename(path)], []) for path in paths}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Write the PNGs; return the pointing game's hit rate and mean margin per model (empty
    without ``--ann-file``)."""
    args = parse_args(argv)
    sources = [load_source(spec, args.cfg_options) for spec in args.model]
    size = args.size or native_size(sources[0][1])
    images = [read_rgb(path, size) for path in args.images]
    original_sizes = {path: mmcv.imread(path).shape[:2] for path in args.images}
    if args.mosaic:
        inputs = {'mosaic': compose_mosaic(images, parse_grid(args.mosaic), size)}
    else:
        inputs = {osp.splitext(osp.basename(p))[0]: image for p, image in zip(args.images, images)}
    objects = coco_objects(args.ann_file, args.images) if args.ann_file and not args.mosaic \
        else {}
    texts = args.texts or sorted({name for found in objects.values() for name, _ in found})
    if not texts:
        raise ValueError('--texts: give the texts to query (or --ann-file with objects)')
    os.makedirs(args.out_dir, exist_ok=True)
    prompt_set = get_prompt_set(args.templates)
    batch = torch.stack([normalize_images(image[None])[0] for image in inputs.values()])
    maps = {}
    for label, clip, context in sources:
        with context():
            embeddings = compute_text_embeddings(clip, texts, prompt_set)
            maps[label] = text_response_maps(clip, batch, embeddings)
    for index, (path, (name, image)) in enumerate(zip(args.images, inputs.items())):
        # Without --texts, an image's panels are its own objects' class names.
        shown = texts if args.texts or args.mosaic else sorted(
            {found for found, _ in objects[path]})
        rows = [texts.index(text) for text in shown]
        draw_response_panels(image, {label: value[index, rows] for label, value in maps.items()},
                             shown, osp.join(args.out_dir, f'{name}.png'))
    scores: Dict[str, Dict[str, float]] = {}
    if objects:
        for label, value in maps.items():
            games = []
            for index, path in enumerate(args.images):
                height, width = original_sizes[path]
                for name, (x1, y1, x2, y2) in objects[path]:
                    box = [x1 * size / width, y1 * size / height, x2 * size / width,
                           y2 * size / height]
                    games.append(pointing_game(value[index, texts.index(name)], box))
            scores[label] = dict(objects=len(games),
                                 hit_rate=sum(hit for hit, _ in games) / max(len(games), 1),
                                 mean_margin=sum(m for _, m in games) / max(len(games), 1))
        with open(osp.join(args.out_dir, 'pointing_game.json'), 'w') as file:
            json.dump(scores, file, indent=2)
        for label, score in scores.items():
            print(f'{label}: peak inside the named object for {score["hit_rate"]:.1%} of '
                  f'{score["objects"]} objects, mean margin {score["mean_margin"]:+.3f}')
    print(f'wrote {len(inputs)} PNG(s) to {args.out_dir}')
    return scores


if __name__ == '__main__':
    main()
