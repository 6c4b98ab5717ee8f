# Copyright (c) mmclim contributors. All rights reserved.
from typing import List

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from mmcv.transforms import Compose
from mmdet.datasets import MultiImageMixDataset
from mmengine.dataset import BaseDataset
from mmengine.registry import init_default_scope

from mmclim.datasets import CachedMosaicPseudoRegion, MosaicPseudoRegion


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
    """A real photograph shipped with matplotlib (512 x 600, RGB)."""
    with cbook.get_sample_data('grace_hopper.jpg') as f:
        img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.ndim == 3
    return img


def square_sources(photo: np.ndarray, num: int, side: int = 96) -> List[dict]:
    """``num`` different square photographs: crops at different places, each tinted."""
    sources = []
    for i in range(num):
        y, x = (i * 37) % (photo.shape[0] - side), (i * 53) % (photo.shape[1] - side)
        img = photo[y:y + side, x:x + side].astype(np.int16)
        img[..., i % 3] += 40 + 10 * i  # a per-source tint, so cells are told apart
        sources.append(dict(img=np.clip(img, 0, 255).astype(np.uint8), img_id=100 + i,
                            img_path=f'photo_{i}.jpg', captions=[f'caption of photo {i}']))
    return sources


def mix(sources: List[dict]) -> dict:
    return dict(sources[0], mix_results=[dict(s) for s in sources[1:]])


@pytest.mark.parametrize('grid', [2, 3, 4])
def test_cell_i_holds_source_i_resized(photo: np.ndarray, grid: int) -> None:
    sources = square_sources(photo, grid * grid)
    transform = MosaicPseudoRegion(grid_choices=[grid], canvas_size=240, crop_scale=(1.0, 1.0))
    out = transform(mix(sources))
    assert out['img'].shape == (240, 240, 3) and out['img_shape'] == (240, 240)
    assert out['gt_bboxes'].tensor.shape == (grid * grid, 4)
    assert out['gt_bboxes_labels'].tolist() == list(range(grid * grid))
    assert not out['gt_ignore_flags'].any()
    assert out['image_ids'] == [100 + i for i in range(grid * grid)]
    assert out['region_captions'] == [f'caption of photo {i}' for i in range(grid * grid)]
    assert out['mosaic_grid'] == (grid, grid)
    # The current image's own caption list is gone: the canvas has one caption per region.
    assert 'mix_results' not in out and 'captions' not in out
    for i, (x1, y1, x2, y2) in enumerate(out['gt_bboxes'].tensor.int().tolist()):
        expected = cv2.resize(sources[i]['img'], (x2 - x1, y2 - y1),
                              interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(out['img'][y1:y2, x1:x2], expected)


def test_random_crop_stays_inside_scale_range(photo: np.ndarray) -> None:
    transform = MosaicPseudoRegion(grid_choices=[2], canvas_size=128, crop_scale=(0.25, 0.5))
    for draws in np.random.default_rng(0).random((50, 4)):
        x1, y1, x2, y2 = transform._crop_box((400, 300), (64, 64), draws)
        assert 0 <= x1 < x2 <= 300 and 0 <= y1 < y2 <= 400
        assert x2 - x1 == y2 - y1  # the cell's aspect ratio
        assert 0.25 * 300**2 * 0.95 <= (x2 - x1) * (y2 - y1) <= 0.5 * 300**2 * 1.05


def test_keep_ratio_pads_with_pad_val(photo: np.ndarray) -> None:
    wide = dict(img=photo[:100, :400], captions=['wide'], img_id=0)
    sources = [wide] + [dict(wide, img_id=i) for i in range(1, 4)]
    out = MosaicPseudoRegion(grid_choices=[2], canvas_size=200, crop_scale=(1.0, 1.0),
                             keep_ratio=True, pad_val=7)(mix(sources))
    cell = out['img'][:100, :100]
    assert (cell[:30] == 7).all() and (cell[-30:] == 7).all()  # 4:1 image: 25 px tall
    assert not (cell[45:55] == 7).all()


def test_several_captions_one_is_sampled(photo: np.ndarray) -> None:
    sources = square_sources(photo, 4)
    sources[0]['captions'] = ['first', 'second', 'third']
    seen = set()
    for seed in range(30):
        np.random.seed(seed)
        out = MosaicPseudoRegion(grid_choices=[2], canvas_size=64)(mix(sources))
        seen.add(out['region_captions'][0])
    assert seen == {'first', 'second', 'third'}


def test_captions_stay_aligned_through_flip_and_resize(photo: np.ndarray) -> None:
    init_default_scope('mmdet')
    sources = square_sources(photo, 9)
    means = {s['captions'][0]: s['img'].reshape(-1, 3).mean(0) for s in sources}
    pipeline = Compose([
        dict(type='MosaicPseudoRegion', grid_choices=[3], canvas_size=300, crop_scale=(1.0, 1.0)),
        dict(type='RandomFlip', prob=1.0, direction='horizontal'),
        dict(type='Resize', scale=(150, 150), keep_ratio=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_shape', 'scale_factor', 'flip', 'region_captions',
                        'image_ids')),
    ])
    packed = pipeline(mix(sources))
    sample = packed['data_samples']
    img = packed['inputs'].permute(1, 2, 0).numpy()
    assert img.shape == (150, 150, 3) and sample.flip
    boxes = sample.gt_instances.bboxes.tensor.round().int().tolist()
    captions = [sample.region_captions[label] for label in sample.gt_instances.labels.tolist()]
    assert len(boxes) == len(captions) == 9
    # Flipped: cell 0 (top-left before) is now top-right, still labelled with caption 0.
    assert boxes[0] == [100, 0, 150, 50]
    for (x1, y1, x2, y2), caption in zip(boxes, captions):
        region_mean = img[y1 + 2:y2 - 2, x1 + 2:x2 - 2].reshape(-1, 3).mean(0)
        closest = min(means, key=lambda c: np.abs(means[c] - region_mean).sum())
        assert closest == caption


class _InMemoryCaptions(BaseDataset):
    """Decoded images with captions, for MultiImageMixDataset."""

    def __init__(self, items: List[dict]) -> None:
        self._items = items
        super().__init__(serialize_data=False, pipeline=[])

    def load_data_list(self) -> List[dict]:
        return [dict(item) for item in self._items]


def test_runs_inside_multi_image_mix_dataset(photo: np.ndarray) -> None:
    init_default_scope('mmdet')
    dataset = MultiImageMixDataset(
        dataset=_InMemoryCaptions(square_sources(photo, 20)),
        pipeline=[dict(type='MosaicPseudoRegion', canvas_size=128)])
    grids = set()
    for index in range(12):
        out = dataset[index]
        rows, cols = out['mosaic_grid']
        grids.add(rows)
        assert len(out['region_captions']) == len(out['gt_bboxes']) == rows * cols
        # the indexed image is cell 0
        assert out['region_captions'][0] == f'caption of photo {index}'
        # the drawn images are distinct (the current one may be drawn again: see get_indexes)
        assert len(set(out['image_ids'][1:])) == rows * cols - 1
    assert grids <= {2, 3, 4} and len(grids) >= 2


def test_bad_inputs_have_clear_errors(photo: np.ndarray) -> None:
    transform = MosaicPseudoRegion(grid_choices=[2], canvas_size=128)
    sources = square_sources(photo, 4)
    empty = [dict(s) for s in sources]
    empty[2]['captions'] = []
    with pytest.raises(ValueError, match=r'photo_2\.jpg needs a non-empty list'):
        transform(mix(empty))
    blank = [dict(s) for s in sources]
    blank[1]['captions'] = ['  ']
    with pytest.raises(ValueError, match=r'photo_1\.jpg needs a non-empty list'):
        transform(mix(blank))
    missing = [dict(s) for s in sources]
    missing[3]['img'] = None
    with pytest.raises(ValueError, match=r'no decoded image for photo_3\.jpg'):
        transform(mix(missing))
    tiny = [dict(s) for s in sources]
    tiny[0]['img'] = photo[:4, :4]
    with pytest.raises(ValueError, match=r'photo_0\.jpg \(4x4\) is too small for a 64x64 cell'):
        transform(mix(tiny))
    with pytest.raises(ValueError, match='got 3 images'):
        transform(mix(sources[:3]))
    with pytest.raises(KeyError, match='MultiImageMixDataset'):
        transform(dict(sources[0]))
    with pytest.raises(ValueError, match='the dataset has 3 images but a 2x2 grid needs 4'):
        transform.get_indexes(list(range(3)))
    with pytest.raises(ValueError, match='crop_scale'):
        MosaicPseudoRegion(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match='canvas_size'):
        MosaicPseudoRegion(grid_choices=[4], canvas_size=3)


def test_cached_variant_bounds_its_memory(photo: np.ndarray) -> None:
    transform = CachedMosaicPseudoRegion(grid_choices=[2, 3], canvas_size=128,
                                         max_cached_images=12, crop_scale=(0.5, 1.0))
    assert transform.max_cached_area == 64 * 64 * 2  # largest cell / smallest crop scale
    big = dict(img=np.ascontiguousarray(np.tile(photo, (2, 2, 1))), captions=['big photo'])
    outputs = [transform(dict(big, img_id=i)) for i in range(40)]
    assert len(transform.cache) == 12
    assert all(e['img'].shape[0] * e['img'].shape[1] <= transform.max_cached_area
               for e in transform.cache)
    # The first 3 calls cannot fill a 2x2 grid: counted 1x1 warm-up mosaics.
    assert transform.num_warmup == 3
    assert [o['mosaic_grid'] for o in outputs[:3]] == [(1, 1)] * 3
    assert all(o['mosaic_grid'] in ((2, 2), (3, 3)) for o in outputs[3:])
    assert {o['mosaic_grid'] for o in outputs[3:]} == {(2, 2), (3, 3)}
    for index, out in enumerate(outputs[3:], start=3):
        assert out['image_ids'][0] == index  # the current image is cell 0
        assert len(set(out['image_ids'])) == len(out['image_ids'])
    assert 'max_cached_images=12' in repr(transform)


# The official Detic + CLIM mosaic, at 40-px cells: keep-ratio images, no crop, pad 114, each
# pseudo box the pasted image's extent.
DETIC_MOSAIC = dict(keep_ratio=True, crop_scale=(1.0, 1.0), pseudo_box='image', pad_val=114)


def flat_sources(shapes: List[tuple]) -> List[dict]:
    """Images of the given (height, width), image i filled with the value 10 * (i + 1)."""
    return [dict(img=np.full((h, w, 3), 10 * (i + 1), np.uint8), img_id=i, img_path=f'{i}.jpg',
                 captions=[f'caption {i}'], tags=[i, 10 + i]) for i, (h, w) in enumerate(shapes)]


def test_detic_mosaic_boxes_are_the_pasted_images() -> None:
    # (height, width) of the four images of a 2x2 grid of 40-px cells (an 80 x 80 canvas).
    sources = flat_sources([(20, 40), (40, 20), (30, 30), (60, 80)])
    transform = MosaicPseudoRegion(grid_choices=[2], cell_size=40, **DETIC_MOSAIC)
    out = transform(mix(sources))
    assert out['img'].shape == (80, 80, 3) and out['img_shape'] == (80, 80)
    # Worked by hand: scale = min(40 / h, 40 / w), then centred in the cell.
    # 0: 20x40, scale 1 -> 20x40, 10 px above and below, in cell (0, 0)
    # 1: 40x20, scale 1 -> 40x20, 10 px left and right, in cell (40, 0)
    # 2: 30x30, scale 4/3 -> 40x40, the whole cell (0, 40)
    # 3: 60x80, scale 1/2 -> 30x40, 5 px above and below, in cell (40, 40)
    expected = [[0, 10, 40, 30], [50, 0, 70, 40], [0, 40, 40, 80], [40, 45, 80, 75]]
    assert out['gt_bboxes'].tensor.tolist() == expected
    padding = np.ones((80, 80), bool)
    for i, (x1, y1, x2, y2) in enumerate(expected):
        assert (out['img'][y1:y2, x1:x2] == 10 * (i + 1)).all()
        padding[y1:y2, x1:x2] = False
    assert (out['img'][padding] == 114).all()
    assert out['region_tags'] == [[0, 10], [1, 11], [2, 12], [3, 13]]
    assert 'tags' not in out and out['image_ids'] == [0, 1, 2, 3]
    # The default pseudo box is the whole cell; without keep_ratio 'image' is the cell too.
    cells = [[0, 0, 40, 40], [40, 0, 80, 40], [0, 40, 40, 80], [40, 40, 80, 80]]
    cell_boxes = MosaicPseudoRegion(grid_choices=[2], cell_size=40, keep_ratio=True,
                                    crop_scale=(1.0, 1.0))(mix(sources))['gt_bboxes']
    assert cell_boxes.tensor.tolist() == cells
    filled = MosaicPseudoRegion(grid_choices=[2], cell_size=40, crop_scale=(1.0, 1.0),
                                pseudo_box='image')(mix(sources))['gt_bboxes']
    assert filled.tensor.tolist() == cells


def test_cell_size_canvas_grows_with_the_grid() -> None:
    transform = MosaicPseudoRegion(grid_choices=[(2, 2), (3, 3), (2, 3)], cell_size=40)
    assert transform.canvas_of((2, 2)) == (80, 80) and transform.canvas_of((3, 3)) == (120, 120)
    assert transform.canvas_of((2, 3)) == (80, 120)
    out = transform(mix(flat_sources([(50, 50)] * 6)))
    assert out['img'].shape == (80, 120, 3) and out['mosaic_grid'] == (2, 3)
    assert out['gt_bboxes'].tensor.tolist()[5] == [80, 40, 120, 80]
    assert 'cell_size=40' in repr(transform) and "pseudo_box='cell'" in repr(transform)
    # A fixed canvas stays the default.
    assert MosaicPseudoRegion(grid_choices=[2]).canvas_of((2, 2)) == (1024, 1024)


def test_cached_detic_mosaic_then_resize_keeps_tags() -> None:
    init_default_scope('mmdet')
    pipeline = Compose([
        dict(type='CachedMosaicPseudoRegion', grid_choices=[2, 3], cell_size=40,
             max_cached_images=10, **DETIC_MOSAIC),
        dict(type='Resize', scale=(60, 60), keep_ratio=True),  # 80 or 120 -> 60
    ])
    mosaic = pipeline.transforms[0]
    assert mosaic.max_cached_area == 40 * 40  # one cell, crop scale 1
    sources = flat_sources([(30 + i, 60 - i) for i in range(20)])
    grids = set()
    for source in sources:
        out = pipeline(dict(source, img=source['img'].copy()))
        assert out['img'].shape == (60, 60, 3)
        grids.add(out['mosaic_grid'])
        # each region's tags are its image's tags, [i, 10 + i] for image i
        assert out['region_tags'] == [[i, 10 + i] for i in out['image_ids']]
        assert len(out['region_tags']) == len(out['gt_bboxes']) == len(out['region_captions'])
    assert grids == {(1, 1), (2, 2), (3, 3)}
    assert all('tags' in entry for entry in mosaic.cache)


def test_detic_options_have_clear_errors() -> None:
    with pytest.raises(ValueError, match='canvas_size .* or cell_size .*not both'):
        MosaicPseudoRegion(canvas_size=800, cell_size=400)
    with pytest.raises(ValueError, match='cell_size must be a positive int'):
        MosaicPseudoRegion(cell_size=0)
    with pytest.raises(ValueError, match=r"pseudo_box must be one of \('cell', 'image'\)"):
        MosaicPseudoRegion(pseudo_box='pasted')
    sources = flat_sources([(40, 40)] * 4)
    del sources[2]['tags']
    with pytest.raises(ValueError, match=r'image 2\.jpg has no "tags" but other images'):
        MosaicPseudoRegion(grid_choices=[2], cell_size=40)(mix(sources))


def test_all_captions_of_each_cell_for_baron() -> None:
    init_default_scope('mmdet')
    sources = flat_sources([(40, 40)] * 9)
    for i, source in enumerate(sources):
        source['captions'] = [f'caption {i}', f'another caption {i}']
    pipeline = Compose([
        dict(type='CachedMosaicPseudoRegion', grid_choices=[3], cell_size=20,
             max_cached_images=10, all_captions=True, **DETIC_MOSAIC),
        dict(type='RandomFlip', prob=1.0),
    ])
    for source in sources:
        out = pipeline(dict(source, img=source['img'].copy()))
    # After the flip, region i (label i) still has the captions of its own image.
    assert len(out['region_caption_lists']) == 9
    for label in out['gt_bboxes_labels']:
        image_id = out['image_ids'][label]
        assert out['region_caption_lists'][label] == [
            f'caption {image_id}', f'another caption {image_id}']
        assert out['region_captions'][label] in out['region_caption_lists'][label]
    assert 'region_caption_lists' not in MosaicPseudoRegion(grid_choices=[2])(
        mix(square_sources(np.zeros((128, 128, 3), np.uint8), 4)))
