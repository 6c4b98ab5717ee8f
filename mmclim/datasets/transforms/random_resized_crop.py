# Copyright (c) mmclim contributors. All rights reserved.
import math
from typing import Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS

# torchvision's RandomResizedCrop: aspect ratios in [3/4, 4/3], drawn log-uniformly, and 10
# attempts at a crop that fits before the central fallback.
DEFAULT_RATIO = (3. / 4., 4. / 3.)
MAX_ATTEMPTS = 10


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """torchvision's ``RandomResizedCrop`` for image-caption pairs (CLIP training images).

    A crop of random area (a fraction in ``scale`` of the image) and aspect ratio (log-uniform in
    ``ratio``) is taken at a random place and resized to ``size`` x ``size``; after
    ``MAX_ATTEMPTS`` draws that do not fit, the central crop with the ratio clamped to ``ratio``
    is taken, exactly as ``torchvision.transforms.RandomResizedCrop.get_params`` does. The
    official CLIM code trains every image this way (open_clip ``image_transform``:
    ``RandomResizedCrop(224, scale=(0.9, 1.0), interpolation=BICUBIC)`` on PIL images), so the
    resize here uses Pillow's bicubic filter too (``mmcv.imresize(backend='pillow')``), which,
    unlike OpenCV's, antialiases when shrinking.

    Only the image is transformed: the pairs it serves carry captions, not boxes.

    Required Keys:

    - img (np.uint8, (H, W, C))

    Modified Keys:

    - img (``size`` x ``size``)
    - img_shape

    Added Keys:

    - crop_box (np.ndarray, (4,)): ``(x1, y1, x2, y2)`` of the crop in the input image

    Args:
        size (int): Output side. Defaults to 224 (ViT-B/16's input).
        scale (Sequence[float]): Range of the crop's area as a fraction of the image's.
            Defaults to (0.9, 1.0), the official CLIM (open_clip ``AugmentationCfg``) setting.
        ratio (Sequence[float]): Range of the crop's aspect ratio (width / height). Defaults to
            (3/4, 4/3).
        interpolation (str): Pillow interpolation. Defaults to ``'bicubic'``.
    """

    def __init__(self,
                 size: int = 224,
                 scale: Sequence[float] = (0.9, 1.0),
                 ratio: Sequence[float] = DEFAULT_RATIO,
                 interpolation: str = 'bicubic') -> None:
        name = type(self).__name__
        if not (isinstance(size, int) and size > 0):
            raise ValueError(f'{name}.size: expected a positive int, got {size!r}')
        if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f'{name}.scale: expected (min, max) with 0 < min <= max <= 1, got '
                             f'{scale!r}')
        if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f'{name}.ratio: expected (min, max) with 0 < min <= max, got '
                             f'{ratio!r}')
        self.size = size
        self.scale = tuple(float(v) for v in scale)
        self.ratio = tuple(float(v) for v in ratio)
        self.interpolation = interpolation

    @cache_randomness
    def _crop_params(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """``(top, left, crop height, crop width)`` as torchvision draws them."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(MAX_ATTEMPTS):
            target_area = area * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(*log_ratio))
            crop_w = int(round(math.sqrt(target_area * aspect)))
            crop_h = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = np.random.randint(0, height - crop_h + 1)
                left = np.random.randint(0, width - crop_w + 1)
                return top, left, crop_h, crop_w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            crop_w, crop_h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            crop_h, crop_w = height, int(round(height * self.ratio[1]))
        else:
            crop_w, crop_h = width, height
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w

    def transform(self, results: dict) -> Union[dict, None]:
        """Crop and resize ``results['img']``.

        Args:
            results (dict): Result dict with ``img``.

        Returns:
            dict: ``results`` with the crop written in.
        """
        img = results['img']
        height, width = img.shape[:2]
        top, left, crop_h, crop_w = self._crop_params(height, width)
        crop = img[top:top + crop_h, left:left + crop_w]
        results['img'] = mmcv.imresize(crop, (self.size, self.size),
                                       interpolation=self.interpolation, backend='pillow')
        results['img_shape'] = results['img'].shape[:2]
        results['crop_box'] = np.array([left, top, left + crop_w, top + crop_h], dtype=np.int64)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, interpolation={self.interpolation!r})')
