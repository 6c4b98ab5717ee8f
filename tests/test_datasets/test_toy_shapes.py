# Copyright (c) mmclim contributors. All rights reserved.
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmclim.datasets import class_names, generate_shape_captions, generate_shape_scenes
from mmclim.datasets.toy_shapes import COLORS, OBJECT_CENTRIC_FRACTION, SHAPES

COLORS_NAMES = list(COLORS)
SHAPE_NAMES = list(SHAPES)


def test_scenes_are_valid_coco_and_reproducible(tmp_path: Path) -> None:
    ann_a = generate_shape_scenes(str(tmp_path / 'a'), 'train', 5, image_size=96, seed=3)
    ann_b = generate_shape_scenes(str(tmp_path / 'b'), 'train', 5, image_size=96, seed=3)
    coco = json.loads(ann_a.read_text())
    assert coco == json.loads(ann_b.read_text())
    assert [c['name'] for c in coco['categories']] == class_names()
    assert len(coco['images']) == 5 and coco['annotations']
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w > 0 and h > 0
        assert 0 < ann['area'] <= w * h
    first = coco['images'][0]['file_name']
    pixels_a = np.asarray(Image.open(tmp_path / 'a' / 'train' / first))
    assert pixels_a.shape == (96, 96, 3)
    pixels_b = np.asarray(Image.open(tmp_path / 'b' / 'train' / first))
    np.testing.assert_array_equal(pixels_a, pixels_b)


def test_object_pixels_have_the_class_colour(tmp_path: Path) -> None:
    ann_file = generate_shape_scenes(str(tmp_path), 'val', 3, image_size=128, seed=0)
    coco = json.loads(ann_file.read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    files = {img['id']: img['file_name'] for img in coco['images']}
    targets = dict(red=(220, 40, 40), green=(40, 170, 60), blue=(40, 80, 220),
                   yellow=(230, 210, 40))
    for ann in coco['annotations']:
        pixels = np.asarray(Image.open(tmp_path / 'val' / files[ann['image_id']])).astype(float)
        x, y, w, h = ann['bbox']
        centre = pixels[int(y + h * 0.6), int(x + w / 2)]  # inside every shape (triangle too)
        color = names[ann['category_id']].split(' ')[0]
        assert np.abs(centre - targets[color]).max() <= 25 + 1


def test_invalid_sizes_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='num_images'):
        generate_shape_scenes(str(tmp_path), 'train', 0)


def test_base_only_split_drops_exactly_the_novel_boxes(tmp_path: Path) -> None:
    from mmclim.datasets import TOY_NOVEL_CLASSES, write_base_only
    from mmclim.datasets.toy_shapes import TOY_SPLIT_FILE
    from mmclim.structures import read_split_file
    ann_file = generate_shape_scenes(str(tmp_path), 'train', 30, image_size=64, seed=0)
    full = json.loads(ann_file.read_text())
    base = json.loads(write_base_only(ann_file).read_text())
    names = {c['id']: c['name'] for c in full['categories']}
    novel_in_full = [a for a in full['annotations'] if names[a['category_id']] in TOY_NOVEL_CLASSES]
    assert novel_in_full, 'fixture should contain novel objects'
    assert len(base['annotations']) == len(full['annotations']) - len(novel_in_full)
    assert not any(names[a['category_id']] in TOY_NOVEL_CLASSES for a in base['annotations'])
    assert base['images'] == full['images'] and base['categories'] == full['categories']
    split = read_split_file(str(ann_file.with_name(TOY_SPLIT_FILE)))
    assert set(split.novel_classes) == set(TOY_NOVEL_CLASSES)
    assert [names[i] for i in split.novel_ids] == list(split.novel_classes)
    assert set(split.base_ids) | set(split.novel_ids) == set(names)
    # a Latin square: each colour and each shape is novel exactly once
    assert sorted(n.split()[0] for n in TOY_NOVEL_CLASSES) == sorted(COLORS_NAMES)
    assert sorted(n.split()[1] for n in TOY_NOVEL_CLASSES) == sorted(SHAPE_NAMES)
    with pytest.raises(ValueError, match='purple circle'):
        write_base_only(ann_file, ['purple circle'])


def test_unseen_prompts_share_no_wording_with_the_captions() -> None:
    """The demo's 'toy-unseen' vocabulary: no prompt is a caption the toy text tower trained on,
    and no template's words around the class name appear in a caption template."""
    from mmclim.datasets.toy_shapes import CAPTION_TEMPLATES, TOY_UNSEEN_PROMPT_TEMPLATES
    from mmclim.evaluation.metrics import get_prompt_set
    captions = {template.format(color='red', shape='circle') for template in CAPTION_TEMPLATES}
    prompts = get_prompt_set('toy-unseen').prompts('red circle')
    assert len(prompts) == len(TOY_UNSEEN_PROMPT_TEMPLATES) and not captions & set(prompts)
    caption_words = {word for caption in captions for word in caption.split()} - {'red', 'circle'}
    for prompt in prompts:
        context = set(prompt.rstrip('.').split()) - {'red', 'circle'}
        # Function words aside, the words around the class name are new to the tower.
        assert not (context - {'a', 'an', 'the', 'one', 'of', 'on'}) & caption_words, prompt


def test_object_centric_captions_fill_the_image(tmp_path: Path) -> None:
    # The background is textured grey; the shape's colour spans between 75% and 95% of the side
    # (a square is drawn to its box, so its extent is the box itself).
    ann_file = generate_shape_captions(str(tmp_path), 'centric', 30, image_size=64, seed=0,
                                       object_fraction=OBJECT_CENTRIC_FRACTION)
    coco = json.loads(ann_file.read_text())
    captions = {ann['image_id']: ann['caption'] for ann in coco['annotations']}
    squares = [img for img in coco['images'] if 'square' in captions[img['id']]]
    assert squares
    for img in squares:
        color = next(name for name in COLORS if name in captions[img['id']])
        pixels = np.asarray(Image.open(tmp_path / 'centric' / img['file_name']), dtype=int)
        close = (np.abs(pixels - np.array(COLORS[color])).max(axis=-1) <= 30)
        # Rows and columns crossing the shape (a stray background pixel of a close colour does
        # not make a line of them).
        rows, cols = ((close.sum(axis=1) > 16).nonzero()[0], (close.sum(axis=0) > 16).nonzero()[0])
        for extent in (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1):
            assert 0.75 * 64 - 2 <= extent <= 0.95 * 64 + 2  # PIL fills both end pixels
    with pytest.raises(ValueError, match='object_fraction'):
        generate_shape_captions(str(tmp_path), 'bad', 1, object_fraction=(0.5, 1.5))
