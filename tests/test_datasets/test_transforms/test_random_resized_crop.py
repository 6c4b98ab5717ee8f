# Copyright (c) mmclim contributors. All rights reserved.
import numpy as np
import pytest
import torchvision.transforms.functional as TF
from PIL import Image

from mmclim.datasets.transforms import RandomResizedCrop


def _image(height: int = 120, width: int = 200) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_crops_stay_in_the_area_and_ratio_ranges() -> None:
    transform = RandomResizedCrop(size=32, scale=(0.9, 1.0))
    for seed in range(50):
        np.random.seed(seed)
        out = transform(dict(img=_image(120, 150)))
        x1, y1, x2, y2 = out['crop_box']
        width, height = x2 - x1, y2 - y1
        assert out['img'].shape == (32, 32, 3) and out['img_shape'] == (32, 32)
        assert 0 <= x1 and x2 <= 150 and 0 <= y1 and y2 <= 120
        # Rounding the sides moves the area by at most about one pixel row and column.
        assert 0.9 * 18000 - (width + height) <= width * height <= 18000
        assert 3 / 4 - 0.02 <= width / height <= 4 / 3 + 0.02


def test_the_resize_is_pillows_bicubic_as_torchvisions_on_pil_images() -> None:
    """The official pipeline crops and resizes PIL images (torchvision); same crop, same
    pixels."""
    image = _image()
    np.random.seed(3)
    out = RandomResizedCrop(size=48)(dict(img=image.copy()))
    x1, y1, x2, y2 = (int(v) for v in out['crop_box'])
    reference = TF.resized_crop(Image.fromarray(image), y1, x1, y2 - y1, x2 - x1, [48, 48],
                                interpolation=TF.InterpolationMode.BICUBIC)
    assert np.array_equal(out['img'], np.asarray(reference))


def test_impossible_ratios_fall_back_to_the_central_crop() -> None:
    """A 1:10 strip cannot hold a 3:4..4:3 crop of 90% of its area: torchvision takes the
    central crop with the ratio clamped to 3/4."""
    out = RandomResizedCrop(size=16)(dict(img=_image(200, 20)))
    # height round(20 / 0.75) = 27, top (200 - 27) // 2 = 86
    assert out['crop_box'].tolist() == [0, 86, 20, 113]


@pytest.mark.parametrize('kwargs, field', [(dict(size=0), 'size'),
                                           (dict(scale=(0.5, 1.5)), 'scale'),
                                           (dict(ratio=(2.0, 1.0)), 'ratio')])
def test_bad_arguments_are_named(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f'RandomResizedCrop.{field}'):
        RandomResizedCrop(**kwargs)
