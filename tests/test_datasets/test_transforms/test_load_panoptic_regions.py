# Copyright (c) mmclim contributors. All rights reserved.
"""CLIM's Table 5 protocol on a hand-made COCO panoptic set: mmdet's ``CocoPanopticDataset``,
``LoadPanopticRegions``, ``Resize``/``Pad`` to a square canvas, ``PackDetInputs`` and
``RegionClassificationMetric``, every expected number worked out by hand from the fixture."""
import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import torch
from mmdet.datasets import CocoPanopticDataset
from mmdet.registry import DATASETS, MODELS, TRANSFORMS
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[3]

# Labels follow the json's categories, listed in ascending id: things, then stuff.
CATEGORIES = [
    dict(id=1, name='person', isthing=1),
    dict(id=3, name='car', isthing=1),
    dict(id=120, name='sky', isthing=0),
    dict(id=199, name='wall-other-merged', isthing=0),
]
CLASSES = ('person', 'car', 'sky', 'wall-other-merged')
NUM_THINGS = 2
PERSON, CAR, SKY, WALL = range(4)
CANVAS = 120  # the test's stand-in for the official 1024 canvas: image A (60 wide) scales by 2


def _segment(segment_id: int, category_id: int, bbox: List[int], area: int,
             iscrowd: int = 0) -> dict:
    return dict(id=segment_id, category_id=category_id, iscrowd=iscrowd, bbox=bbox, area=area)


def _image_a() -> tuple:
    """40x60 (HxW). Sky fills rows 0-19 and a wall rows 20-39, under:

    - 1 person, rows 10-29, cols 5-24: box (5, 10, 25, 30), 400 px
    - 2 a crowd of persons, rows 0-9, cols 50-59: box (50, 0, 60, 10), 100 px
    - 3 a car of 7x9 px, rows 33-39, cols 30-38: box area 63 < 64, dropped
    - 4 a car of 8x8 px, rows 30-37, cols 45-52: box (45, 30, 53, 38), area 64, kept
    - 5 a car drawn as a 10-pixel diagonal, rows 30-39, cols 10-19: box (10, 30, 20, 40), box
      area 100 (kept: the box's area counts, not the mask's)
    - 6 sky: box (0, 0, 60, 20), 1200 - 200 (person) - 100 (crowd) = 900 px
    - 7 wall: box (0, 20, 60, 40), 1200 - 200 - 63 - 64 - 10 = 863 px
    """
    ids = np.full((40, 60), 6, np.int64)
    ids[20:] = 7
    ids[10:30, 5:25] = 1
    ids[0:10, 50:60] = 2
    ids[33:40, 30:39] = 3
    ids[30:38, 45:53] = 4
    for i in range(10):
        ids[30 + i, 10 + i] = 5
    segments = [
        _segment(1, 1, [5, 10, 20, 20], 400),
        _segment(2, 1, [50, 0, 10, 10], 100, iscrowd=1),
        _segment(3, 3, [30, 33, 9, 7], 63),
        _segment(4, 3, [45, 30, 8, 8], 64),
        _segment(5, 3, [10, 30, 10, 10], 10),
        _segment(6, 120, [0, 0, 60, 20], 900),
        _segment(7, 199, [0, 20, 60, 20], 863),
    ]
    return ids, segments


def _image_b() -> tuple:
    """102x64: segment r + 1 is row r, a wall strip (box 64x1, area 64, kept), except segment
    1, five pixels of row 0 (area 5, dropped); the rest of row 0 is void (id 0)."""
    ids = np.repeat(np.arange(1, 103)[:, None], 64, axis=1)
    ids[0, 5:] = 0
    segments = [_segment(1, 199, [0, 0, 5, 1], 5)]
    segments += [_segment(r + 1, 199, [0, r, 64, 1], 64) for r in range(1, 102)]
    return ids, segments


def _image_c() -> tuple:
    """16x16: a person in columns 0-7 (id 1), sky in columns 8-15 (id 2)."""
    ids = np.where(np.arange(16)[None, :] < 8, 1, 2).repeat(16, axis=0)
    return ids, [_segment(1, 1, [0, 0, 8, 16], 128), _segment(2, 120, [8, 0, 8, 16], 128)]


# The same set with COCO panoptic's 133 categories, ids 1-133 in mmdet's class order (so that
# the label of a name is its index in ``CocoPanopticDataset.METAINFO['classes']``).
COCO_CLASSES = CocoPanopticDataset.METAINFO['classes']
COCO_CATEGORIES = [dict(id=i + 1, name=name, isthing=int(i < 80))
                   for i, name in enumerate(COCO_CLASSES)]
# Our ids -> those of person, car, sky-other-merged and wall-other-merged there.
COCO_IDS = {1: 1, 3: 3, 120: 120, 199: 132}


def _write_panoptic_set(root: Path) -> Path:
    """Images ``1.jpg`` (A), ``2.jpg`` (B), ``3.jpg`` (C), their panoptic PNGs, the json
    ``panoptic.json`` and ``panoptic_coco.json``, the same with the 133 COCO categories."""
    (root / 'images').mkdir()
    (root / 'panoptic').mkdir()
    images, annotations = [], []
    for image_id, (ids, segments) in enumerate((_image_a(), _image_b(), _image_c()), 1):
        height, width = ids.shape
        Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(
            root / 'images' / f'{image_id}.jpg')
        # COCO panoptic PNG: id = R + 256 G + 256**2 B.
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(root / 'panoptic' / f'{image_id}.png')
        images.append(dict(id=image_id, file_name=f'{image_id}.jpg', height=height, width=width))
        annotations.append(dict(image_id=image_id, file_name=f'{image_id}.png',
                                segments_info=segments))
    ann_file = root / 'panoptic.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations,
                                        categories=CATEGORIES)))
    for annotation in annotations:
        for segment in annotation['segments_info']:
            segment['category_id'] = COCO_IDS[segment['category_id']]
    (root / 'panoptic_coco.json').write_text(json.dumps(dict(
        images=images, annotations=annotations, categories=COCO_CATEGORIES)))
    return ann_file


@pytest.fixture(scope='module')
def panoptic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('panoptic')
    _write_panoptic_set(root)
    return root


def _dataset(root: Path, regions: dict, resize: bool = True) -> BaseDataset:
    """The real mmdet ``CocoPanopticDataset`` with the config's validation pipeline."""
    init_default_scope('mmdet')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadPanopticRegions', num_thing_classes=NUM_THINGS, **regions)]
    if resize:
        pipeline += [
            dict(type='Resize', scale=(CANVAS, CANVAS), keep_ratio=True,
                 interpolation='bicubic'),
            dict(type='Pad', size=(CANVAS, CANVAS), pad_val=dict(img=0)),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                  'img_shape', 'scale_factor')),
        ]
    return DATASETS.build(dict(
        type='CocoPanopticDataset', ann_file=str(root / 'panoptic.json'), test_mode=True,
        metainfo=dict(classes=CLASSES, thing_classes=CLASSES[:NUM_THINGS],
                      stuff_classes=CLASSES[NUM_THINGS:]),
        data_prefix=dict(img=str(root / 'images'), seg=str(root / 'panoptic')),
        pipeline=pipeline))


CONFIG_REGIONS = dict(min_area=64, max_regions=100, with_mask=False)  # as the CLIM config


def test_regions_boxes_scaled_with_the_image(panoptic_root: Path) -> None:
    packed = _dataset(panoptic_root, CONFIG_REGIONS)[0]
    sample = packed['data_samples']
    assert packed['inputs'].shape == (3, CANVAS, CANVAS)
    # 40x60 -> 80x120 (scale 2), padded bottom to 120x120 (mmdet's Pad sets img_shape).
    assert sample.img_shape == (CANVAS, CANVAS) and sample.scale_factor == (2.0, 2.0)
    assert (packed['inputs'][:, 80:] == 0).all() and (packed['inputs'][:, :80] == 128).all()
    gt = sample.gt_instances
    # Segments 1, 2 (the crowd, kept), 4, 5, 6, 7; the 63-pixel car (3) is dropped although
    # it would have 252 pixels after the resize.
    assert gt.labels.tolist() == [PERSON, PERSON, CAR, CAR, SKY, WALL]
    assert len(sample.ignored_instances) == 0
    assert 'masks' not in gt
    # Mask extents (max + 1) in original pixels, times 2.
    torch.testing.assert_close(gt.bboxes.tensor, torch.tensor([
        [10., 20., 50., 60.],
        [100., 0., 120., 20.],
        [90., 60., 106., 76.],
        [20., 60., 40., 80.],
        [0., 0., 120., 40.],
        [0., 40., 120., 80.]]))


def test_ignore_crowd_moves_the_crowd_to_ignored_instances(panoptic_root: Path) -> None:
    sample = _dataset(panoptic_root, dict(CONFIG_REGIONS, ignore_crowd=True))[0]['data_samples']
    assert sample.gt_instances.labels.tolist() == [PERSON, CAR, CAR, SKY, WALL]
    assert sample.ignored_instances.labels.tolist() == [PERSON]
    torch.testing.assert_close(sample.ignored_instances.bboxes.tensor,
                               torch.tensor([[100., 0., 120., 20.]]))


def test_masks_are_the_segments(panoptic_root: Path) -> None:
    results = _dataset(panoptic_root, dict(min_area=64), resize=False)[0]
    masks = results['gt_masks'].masks
    assert masks.shape == (6, 40, 60)
    assert masks.sum(axis=(1, 2)).tolist() == [400, 100, 64, 10, 900, 863]
    assert masks[0][10:30, 5:25].all()
    assert [masks[3][30 + i, 10 + i] for i in range(10)] == [1] * 10
    assert results['gt_ignore_flags'].tolist() == [False] * 6


@pytest.mark.parametrize('max_regions,first_row,last_row', [
    (100, 1, 99),  # segments 1-100 considered: 1 dropped, 2-100 kept = 99 regions
    (None, 1, 101),  # all 102: 101 regions
    (3, 1, 2),  # segments 1-3: 2 regions
])
def test_the_cap_counts_segments_before_the_size_filter(panoptic_root: Path,
                                                        max_regions: Optional[int],
                                                        first_row: int, last_row: int) -> None:
    results = _dataset(panoptic_root, dict(max_regions=max_regions, with_mask=False),
                       resize=False)[1]
    boxes = results['gt_bboxes'].numpy()
    assert len(boxes) == last_row - first_row + 1
    np.testing.assert_array_equal(boxes[0], [0, first_row, 64, first_row + 1])
    np.testing.assert_array_equal(boxes[-1], [0, last_row, 64, last_row + 1])


def test_min_area_is_inclusive_and_in_original_pixels(panoptic_root: Path) -> None:
    labels = _dataset(panoptic_root, dict(min_area=65, with_mask=False),
                      resize=False)[0]['gt_bboxes_labels']
    # The 8x8 car (64) goes too; the diagonal car's box (100) stays.
    assert labels.tolist() == [PERSON, PERSON, CAR, SKY, WALL]
    labels = _dataset(panoptic_root, dict(min_area=64, max_area=899, with_mask=False),
                      resize=False)[0]['gt_bboxes_labels']
    # Sky and wall boxes are 60x20 = 1200 > 899.
    assert labels.tolist() == [PERSON, PERSON, CAR, CAR]


# Hand-made scores (columns person, car, sky, wall) and the rank of each true class.
SCORES_A = torch.tensor([
    [4., 3., 2., 1.],  # person: rank 0
    [3., 4., 2., 1.],  # crowd person: rank 1 (car first)
    [3., 4., 2., 1.],  # 8x8 car: rank 0
    [4., 1., 3., 2.],  # diagonal car: rank 3
    [4., 1., 2., 3.],  # sky: rank 2
    [1., 2., 3., 4.],  # wall: rank 0
])
SCORES_C = torch.tensor([
    [4., 3., 2., 1.],  # person: rank 0
    [1., 2., 4., 3.],  # sky: rank 0
])


def test_table5_metrics_of_hand_made_scores(panoptic_root: Path) -> None:
    """Per class, top-1: person 2/3 (ranks 0, 1, 0), car 1/2 (0, 3), sky 1/2 (2, 0), wall 1/1;
    top-2: person 3/3, car 1/2, sky 1/2, wall 1/1.

    Things: mean top-1 (2/3 + 1/2) / 2 = 58.33, top-2 (1 + 1/2) / 2 = 75; over regions 3/5.
    Stuff: mean top-1 (1/2 + 1) / 2 = 75, top-2 75; over regions 2/3.
    """
    dataset = _dataset(panoptic_root, CONFIG_REGIONS)
    samples = [dataset[0]['data_samples'], dataset[2]['data_samples']]
    assert samples[1].gt_instances.labels.tolist() == [PERSON, SKY]
    for sample, scores in zip(samples, (SCORES_A, SCORES_C)):
        sample.pred_region_scores = scores
    evaluator = Evaluator(dict(type='RegionClassificationMetric', topk=(1, 2)))
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(data_samples=samples)
    metrics = evaluator.evaluate(2)
    assert {key: metrics[f'region_cls/{key}'] for key in (
        'things_mean_top1', 'things_mean_top2', 'stuff_mean_top1', 'stuff_mean_top2',
        'things_top1', 'stuff_top1', 'top1')} == pytest.approx(dict(
            things_mean_top1=(2 / 3 + 1 / 2) / 2 * 100, things_mean_top2=75.0,
            stuff_mean_top1=75.0, stuff_mean_top2=75.0, things_top1=60.0,
            stuff_top1=200 / 3, top1=62.5))


def test_clim_clip_scores_every_region(panoptic_root: Path) -> None:
    """The model side of the protocol: box pooling (``use_masks=False``) of all six regions
    against the four classes."""
    packed = _dataset(panoptic_root, CONFIG_REGIONS)[0]
    model = MODELS.build(dict(type='CLIMCLIP', use_masks=False, clip=dict(
        type='OpenCLIPRegion', model_name='mmclim-toy-vit')))
    model.class_embeddings = torch.nn.functional.normalize(torch.randn(len(CLASSES), 64), dim=1)
    model.eval()
    with torch.no_grad():
        out = model.predict(packed['inputs'][None].float(), [packed['data_samples']])
    assert out[0].pred_region_scores.shape == (6, len(CLASSES))


def test_shipped_clim_config_validation(panoptic_root: Path) -> None:
    """``configs/clim/clim_vitb16_coco-caption.py``'s validation data and metric as shipped,
    only the files moved to the fixture: 133 classes, 1024 canvas."""
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'clim' / 'clim_vitb16_coco-caption.py'))
    init_default_scope(cfg.default_scope)
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.update(data_root=str(panoptic_root), ann_file='panoptic_coco.json',
                       data_prefix=dict(img='images/', seg='panoptic/'))
    dataset = DATASETS.build(dataset_cfg)
    sample = dataset[0]['data_samples']
    person, car = COCO_CLASSES.index('person'), COCO_CLASSES.index('car')
    sky, wall = COCO_CLASSES.index('sky-other-merged'), COCO_CLASSES.index('wall-other-merged')
    assert sample.gt_instances.labels.tolist() == [person, person, car, car, sky, wall]
    # 40x60 -> 683x1024: x scaled by 1024 / 60, y by 683 / 40 (mmdet rounds 682.67 up).
    assert sample.img_shape == (1024, 1024) and 'masks' not in sample.gt_instances
    x_scale, y_scale = 1024 / 60, 683 / 40
    torch.testing.assert_close(sample.gt_instances.bboxes.tensor[0], torch.tensor(
        [5 * x_scale, 10 * y_scale, 25 * x_scale, 30 * y_scale]))
    # Each region's true class scored highest, except the wall's (second): every class is
    # right at top-5; top-1 things 1, stuff (1 + 0) / 2.
    scores = torch.zeros(6, len(COCO_CLASSES))
    scores[torch.arange(6), sample.gt_instances.labels] = 1.0
    scores[5, 0] = 2.0
    sample.pred_region_scores = scores
    evaluator = Evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(data_samples=[sample])
    metrics = evaluator.evaluate(1)
    assert {key: metrics[f'region_cls/{key}'] for key in (
        'things_mean_top1', 'things_mean_top5', 'stuff_mean_top1', 'stuff_mean_top5')} == dict(
            things_mean_top1=100.0, things_mean_top5=100.0, stuff_mean_top1=50.0,
            stuff_mean_top5=100.0)


def test_bad_inputs_are_named(panoptic_root: Path, tmp_path: Path) -> None:
    init_default_scope('mmdet')
    transform = TRANSFORMS.build(dict(type='LoadPanopticRegions', num_thing_classes=NUM_THINGS))
    png = str(panoptic_root / 'panoptic' / '3.png')
    missing = dict(seg_map_path=png, img_path='3.jpg',
                   segments_info=[dict(id=9, category=0, is_thing=True)])
    with pytest.raises(ValueError, match=r'segment id 9 of the annotation of 3.jpg has no pixel '
                                         r'in .*3.png'):
        transform(missing)
    resized = dict(seg_map_path=png, img_path='3.jpg', img=np.zeros((32, 32, 3), np.uint8),
                   segments_info=[])
    with pytest.raises(ValueError, match=r'3.png is 16x16 \(HxW\) but the image 3.jpg is '
                                         r'32x32; place LoadPanopticRegions before any resize'):
        transform(resized)
    with pytest.raises(KeyError, match='no seg_map_path for image x.jpg'):
        transform(dict(img_path='x.jpg', segments_info=[]))
    for bad, message in ((dict(max_regions=0), 'max_regions: expected a positive int'),
                         (dict(min_area=10, max_area=5), 'expected 0 <= min_area <= max_area')):
        with pytest.raises(ValueError, match=message):
            TRANSFORMS.build(dict(type='LoadPanopticRegions', **bad))
