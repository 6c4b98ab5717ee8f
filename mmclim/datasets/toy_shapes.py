# Copyright (c) mmclim contributors. All rights reserved.
"""Procedurally generated toy data: coloured shapes on textured backgrounds.

Nothing is downloaded. The same seed writes the same files, so runs on the toy data are
reproducible. Scenes are written in COCO instances format (boxes for detection and region
classification); single-object images with captions in COCO Captions format (image-text pairs
for CLIP and CLIM training).
"""
import json
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from mmclim.structures.vocabulary import split_record, write_split_file

SHAPES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'diamond')
COLORS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 40, 40),
    'green': (40, 170, 60),
    'blue': (40, 80, 220),
    'yellow': (230, 210, 40),
}
# Object side length as a fraction of the scene's shorter side.
MIN_OBJECT_FRACTION = 0.15
MAX_OBJECT_FRACTION = 0.4
# Object side of the object-centric caption images of the toy Detic experiment: the whole-image
# pseudo box overlaps the object by IoU 0.56-0.90, so the detector's own assignment (IoU >= 0.5)
# would call it that object, as a caption describes the main object of a photo. With the default
# 0.15-0.4 the whole image is a background RoI to the detector (IoU <= 0.16), and the caption
# loss then teaches the opposite of the detection loss (README, toy Detic experiment).
OBJECT_CENTRIC_FRACTION = (0.75, 0.95)
# The caption split of the toy Detic experiment (tools/misc/generate_toy_data.py).
OBJECT_CENTRIC_SPLIT = 'caption_centric'
# Filled fraction of the bounding box, for the COCO ``area`` field.
AREA_FRACTION: Dict[str, float] = dict(circle=math.pi / 4, square=1.0, triangle=0.5, diamond=0.5)
# The toy open-vocabulary split: one novel class per colour and per shape (a Latin square), so every
# novel class combines a colour and a shape that base classes show, as real novel classes combine
# seen visual concepts. Detectors train on the 12 base classes' boxes only.
TOY_NOVEL_CLASSES: Tuple[str, ...] = ('red diamond', 'green triangle', 'blue square',
                                      'yellow circle')
# The split file written beside the base-only training file, and how it was made.
TOY_SPLIT_FILE = 'ov_split.json'
TOY_SPLIT_RULE = 'toy shapes: novel = mmclim.datasets.toy_shapes.TOY_NOVEL_CLASSES'
# Caption templates for the single-object images, filled with colour and shape.
CAPTION_TEMPLATES: Tuple[str, ...] = (
    'a photo of a {color} {shape}',
    'a {color} {shape}',
    'a {shape} painted {color}',
    'a {color} {shape} on a grey background',
)
# Prompt templates for class names whose wording appears in no caption template above: a zero-shot
# vocabulary the toy text tower never saw in training (the demo reports both).
TOY_UNSEEN_PROMPT_TEMPLATES: Tuple[str, ...] = (
    'there is one {} in the scene.',
    'itap of the {}.',
    'a close-up picture showing the {}.',
    'a drawing of the {}.',
    'the {} is visible here.',
    'an image containing one {}.',
)
# Colour jitter added to each object so that colour is not one exact RGB value.
COLOR_JITTER = 25


def class_names() -> List[str]:
    """All colour-shape classes, e.g. ``'red circle'``, colour-major."""
    return [f'{color} {shape}' for color in COLORS for shape in SHAPES]


def _polygon(shape: str, box: Sequence[float]) -> List[Tuple[float, float]]:
    """Vertices of ``shape`` inscribed in ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == 'square':
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if shape == 'triangle':
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == 'diamond':
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    raise ValueError(f'unknown polygon shape {shape!r}; expected one of {SHAPES}')


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Sequence[float],
               color: Tuple[int, int, int]) -> None:
    """Draw a filled ``shape`` that touches all four sides of ``box`` (x1, y1, x2, y2)."""
    if shape == 'circle':
        draw.ellipse(list(box), fill=color)
    else:
        draw.polygon(_polygon(shape, box), fill=color)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A low-contrast noisy gradient, so that background pixels are not constant."""
    base = rng.integers(90, 170, size=3)
    ramp = np.linspace(-20, 20, size)[None, :, None] * rng.choice([-1, 1], size=3)
    noise = rng.normal(0, 8, size=(size, size, 3))
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _jitter(rng: np.random.Generator, color: Tuple[int, int, int]) -> Tuple[int, int, int]:
    jittered = np.clip(np.array(color) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)
    return tuple(int(c) for c in jittered)


def _place_boxes(rng: np.random.Generator, size: int, count: int, max_tries: int = 100,
                 fraction: Tuple[float, float] = (MIN_OBJECT_FRACTION, MAX_OBJECT_FRACTION)
                 ) -> List[List[float]]:
    """Up to ``count`` non-overlapping square boxes (x1, y1, x2, y2) inside a ``size`` canvas,
    each of a side drawn in ``fraction`` of ``size``."""
    boxes: List[List[float]] = []
    for _ in range(max_tries):
        if len(boxes) == count:
            break
        side = rng.uniform(*fraction) * size
        x1, y1 = rng.uniform(0, size - side, size=2)
        box = [float(x1), float(y1), float(x1 + side), float(y1 + side)]
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1]
               for b in boxes):
            boxes.append(box)
    return boxes


def _split_folders(out_dir: str, split: str) -> Path:
    """Create ``out_dir/<split>/`` and ``out_dir/annotations/``; return ``out_dir``."""
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    return out


def _save_image(img: Image.Image, out: Path, split: str, image_id: int, size: int) -> dict:
    """Save a generated image as ``<split>/<id>.png``; return its COCO ``images`` entry."""
    file_name = f'{image_id:06d}.png'
    img.save(out / split / file_name)
    return dict(id=image_id, file_name=file_name, width=size, height=size)


def generate_shape_scenes(out_dir: str,
                          split: str,
                          num_images: int,
                          image_size: int = 128,
                          max_objects: int = 4,
                          seed: int = 0) -> Path:
    """Write multi-object scenes and their COCO instances annotations.

    Args:
        out_dir (str): Output folder; images go to ``out_dir/<split>/``, annotations to
            ``out_dir/annotations/instances_<split>.json``.
        split (str): Split name, e.g. ``'train'``.
        num_images (int): Number of scenes.
        image_size (int): Side of each square scene in pixels. Defaults to 128.
        max_objects (int): Objects per scene are drawn uniformly from 1..max_objects.
            Defaults to 4.
        seed (int): Random seed. Defaults to 0.

    Returns:
        Path: The annotation file written.
    """
    if num_images < 1 or max_objects < 1:
        raise ValueError(f'num_images ({num_images}) and max_objects ({max_objects}) must be >= 1')
    rng = np.random.default_rng(seed)
    out = _split_folders(out_dir, split)
    names = class_names()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        img = _background(rng, image_size)
        draw = ImageDraw.Draw(img)
        for box in _place_boxes(rng, image_size, int(rng.integers(1, max_objects + 1))):
            label = int(rng.integers(len(names)))
            color_name, shape = names[label].split(' ')
            draw_shape(draw, shape, box, _jitter(rng, COLORS[color_name]))
            x1, y1, x2, y2 = box
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=label + 1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1) * AREA_FRACTION[shape],
                    iscrowd=0))
        images.append(_save_image(img, out, split, image_id, image_size))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(names)]
    ann_file = out / 'annotations' / f'instances_{split}.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations,
                                        categories=categories)))
    return ann_file


def generate_shape_captions(out_dir: str,
                            split: str,
                            num_images: int,
                            image_size: int = 64,
                            seed: int = 0,
                            object_fraction: Tuple[float, float] = (MIN_OBJECT_FRACTION,
                                                                    MAX_OBJECT_FRACTION)) -> Path:
    """Write single-object images with captions in COCO Captions format.

    Each image holds one shape of a random class, of random size and position; it gets two
    captions from :data:`CAPTION_TEMPLATES`.

    Args:
        out_dir (str): Output folder; images go to ``out_dir/<split>/``, annotations to
            ``out_dir/annotations/captions_<split>.json``.
        split (str): Split name, e.g. ``'caption_train'``.
        num_images (int): Number of images.
        image_size (int): Side of each square image in pixels. Defaults to 64.
        seed (int): Random seed. Defaults to 0.
        object_fraction (tuple[float, float]): Range of the shape's side as a fraction of the
            image side. Defaults to that of the scenes' objects (0.15, 0.4);
            :data:`OBJECT_CENTRIC_FRACTION` makes object-centric images.

    Returns:
        Path: The annotation file written.
    """
    if not 0 < object_fraction[0] <= object_fraction[1] <= 1:
        raise ValueError(f'object_fraction must be (min, max) with 0 < min <= max <= 1, got '
                         f'{object_fraction}')
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    rng = np.random.default_rng(seed)
    out = _split_folders(out_dir, split)
    names = class_names()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        img = _background(rng, image_size)
        color_name, shape = names[int(rng.integers(len(names)))].split(' ')
        box = _place_boxes(rng, image_size, 1, fraction=object_fraction)[0]
        draw_shape(ImageDraw.Draw(img), shape, box, _jitter(rng, COLORS[color_name]))
        images.append(_save_image(img, out, split, image_id, image_size))
        for template in rng.choice(CAPTION_TEMPLATES, size=2, replace=False):
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    caption=template.format(color=color_name, shape=shape)))
    ann_file = out / 'annotations' / f'captions_{split}.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations)))
    return ann_file


def write_base_only(ann_file: Path, novel_classes: Sequence[str] = TOY_NOVEL_CLASSES) -> Path:
    """Write ``<stem>_ov_base.json``: ``ann_file`` without the annotations of novel classes.

    Images keep their novel objects, unlabelled, as in OV-COCO and OV-LVIS training data. Also
    writes the split file :data:`TOY_SPLIT_FILE` beside it, in the format of
    ``tools/dataset_converters/prepare_ov_*.py`` (:func:`mmclim.structures.write_split_file`).

    Args:
        ann_file (Path): A COCO instances file of :func:`generate_shape_scenes`.
        novel_classes (Sequence[str]): Class names whose boxes are removed. Defaults to
            :data:`TOY_NOVEL_CLASSES`.

    Returns:
        Path: The file written, beside ``ann_file``.
    """
    coco = json.loads(Path(ann_file).read_text())
    names = {cat['id']: cat['name'] for cat in coco['categories']}
    unknown = sorted(set(novel_classes) - set(names.values()))
    if unknown:
        raise ValueError(f'novel classes {unknown} are not categories of {ann_file}')
    coco['annotations'] = [ann for ann in coco['annotations']
                           if names[ann['category_id']] not in novel_classes]
    out = Path(ann_file).with_name(f'{Path(ann_file).stem}_ov_base.json')
    out.write_text(json.dumps(coco))
    novel_ids = [cat_id for cat_id, name in names.items() if name in novel_classes]
    base_ids = [cat_id for cat_id in names if cat_id not in novel_ids]
    write_split_file(str(out.with_name(TOY_SPLIT_FILE)),
                     split_record(names, base_ids, novel_ids, TOY_SPLIT_RULE))
    return out
