# Copyright (c) mmclim contributors. All rights reserved.
"""Grey, RGBA, tiny and banner-shaped images reaching the pipeline mosaics. Sources are flat
colours, so every pixel of a cell is known by hand."""
from typing import List, Tuple, Union

import numpy as np
import pytest

from mmclim.datasets import CachedMosaicPseudoRegion, MosaicPseudoRegion

COLOURS = [(10, 20, 30), (40, 50, 60), (70, 80, 90), (100, 110, 120)]


def _flat(value: Union[int, Tuple[int, ...]], shape: Tuple[int, ...]) -> np.ndarray:
    img = np.zeros(shape, np.uint8)
    img[...] = value
    return img


def _sources(images: List[np.ndarray]) -> List[dict]:
    return [dict(img=img, img_id=i, img_path=f'{i}.png', captions=[f'caption {i}'])
            for i, img in enumerate(images)]


def _mix(sources: List[dict]) -> dict:
    return dict(sources[0], mix_results=sources[1:])


def test_a_grey_image_fills_every_channel_of_its_cell() -> None:
    """Cell 1 (top right of a 2x2 grid on 64x64) holds a 2-D grey image of 77: all three
    channels are 77 there; the colour cells keep their colours."""
    images = [_flat(COLOURS[0], (32, 32, 3)), _flat(77, (32, 32)),
              _flat(COLOURS[2], (32, 32, 3)), _flat(77, (32, 32, 1))]
    out = MosaicPseudoRegion(grid_choices=[2], canvas_size=64,
                             crop_scale=(1.0, 1.0))(_mix(_sources(images)))
    canvas = out['img']
    assert canvas.shape == (64, 64, 3)
    assert (canvas[:32, :32] == COLOURS[0]).all()
    assert (canvas[:32, 32:] == 77).all()
    assert (canvas[32:, :32] == COLOURS[2]).all()
    assert (canvas[32:, 32:] == 77).all()


def test_an_all_grey_mosaic_is_grey() -> None:
    images = [_flat(10 * (i + 1), (32, 32)) for i in range(4)]
    canvas = MosaicPseudoRegion(grid_choices=[2], canvas_size=64,
                                crop_scale=(1.0, 1.0))(_mix(_sources(images)))['img']
    assert canvas.shape == (64, 64, 1)
    assert [int(canvas[y, x, 0]) for y, x in ((0, 0), (0, 32), (32, 0), (32, 32))] == [
        10, 20, 30, 40]


def test_an_rgba_image_is_refused_naming_it() -> None:
    images = [_flat(COLOURS[i], (32, 32, 3)) for i in range(4)]
    images[2] = _flat((1, 2, 3, 255), (32, 32, 4))
    transform = MosaicPseudoRegion(grid_choices=[2], canvas_size=64, crop_scale=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"image 2\.png has 4 channels; .*color_type='color'"):
        transform(_mix(_sources(images)))


def test_a_tiny_image_is_refused_naming_it_and_counted_as_such() -> None:
    """A 1x1 image would be blown up 32x into a 32x32 cell (max_upscale is 8)."""
    images = [_flat(COLOURS[i], (32, 32, 3)) for i in range(4)]
    images[3] = _flat(COLOURS[3], (1, 1, 3))
    transform = MosaicPseudoRegion(grid_choices=[2], canvas_size=64)
    with pytest.raises(ValueError, match=r'3\.png \(1x1\) is too small for a 32x32 cell') as err:
        transform(_mix(_sources(images)))
    # A BadImageError, counted under its reason by a caption dataset running the mosaic.
    assert err.value.reason == 'images too small for a mosaic cell'


def _cached(**kwargs) -> CachedMosaicPseudoRegion:
    return CachedMosaicPseudoRegion(grid_choices=[2], canvas_size=128, crop_scale=(1.0, 1.0),
                                    max_cached_images=4, **kwargs)


def test_the_cache_keeps_no_image_it_refuses() -> None:
    """The cache refuses a 4x4 image (8x gives 32 < 64, the 2x2 cell) and an RGBA one before
    caching them; a good image after them is cached alone."""
    transform = _cached()
    small, rgba, good = _sources([_flat(COLOURS[0], (4, 4, 3)),
                                  _flat((1, 2, 3, 255), (64, 64, 4)),
                                  _flat(COLOURS[2], (64, 64, 3))])
    with pytest.raises(ValueError, match=r'0\.png \(4x4\) is too small for a 64x64 cell'):
        transform(small)
    with pytest.raises(ValueError, match=r'1\.png has 4 channels'):
        transform(rgba)
    assert transform.cache == []
    assert transform(good)['mosaic_grid'] == (1, 1)
    assert [entry['img_id'] for entry in transform.cache] == [2]


def test_the_cache_refuses_a_banner_its_downscaling_would_make_too_thin() -> None:
    """An 8 x 4096 banner fits a 64 px cell as it is (8 * 8 = 64) but the cache keeps at most
    64 * 64 pixels (crop_scale 1): scaled by sqrt(4096 / 32768) it becomes 2 x 1448, too thin
    (2 * 8 < 64), so it is refused instead of cached."""
    transform = _cached()
    banner = _sources([_flat(COLOURS[1], (8, 4096, 3))])[0]
    with pytest.raises(ValueError, match=r'0\.png \(2x1448\) is too small for a 64x64 cell'):
        transform(banner)
    assert transform.cache == []


def test_a_grey_image_in_the_cache_joins_colour_mosaics() -> None:
    transform = _cached()
    sources = _sources([_flat(77, (64, 64)), _flat(COLOURS[1], (64, 64, 3)),
                        _flat(COLOURS[2], (64, 64, 3)), _flat(COLOURS[3], (64, 64, 3))])
    outputs = [transform(dict(source)) for source in sources]
    out = outputs[-1]  # the first 2x2: image 3 in cell 0, the three cached ones after it
    assert out['mosaic_grid'] == (2, 2) and out['img'].shape == (128, 128, 3)
    for (x1, y1, x2, y2), img_id in zip(out['gt_bboxes'].tensor.int().tolist(),
                                        out['image_ids']):
        expected = 77 if img_id == 0 else COLOURS[img_id]
        assert (out['img'][y1:y2, x1:x2] == expected).all(), img_id
