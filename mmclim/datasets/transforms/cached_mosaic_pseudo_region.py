# Copyright (c) mmclim contributors. All rights reserved.
import math
from typing import List

import cv2
import numpy as np
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS
from mmengine.logging import print_log

from .mosaic_pseudo_region import MosaicPseudoRegion


@TRANSFORMS.register_module()
class CachedMosaicPseudoRegion(MosaicPseudoRegion):
    """:class:`MosaicPseudoRegion` that draws the other images from a bounded cache.

    Works in a plain pipeline (no ``MultiImageMixDataset``): each call adds the current image to
    the cache, draws a grid among those the cache can fill, and mosaics the current image (cell 0)
    with distinct cached images, like mmdet's ``CachedMosaic``.

    Memory bound: a cached image is only a downscaled copy whose area is at most
    ``largest cell area / crop_scale[0]`` (so even the smallest crop still has a cell's worth of
    pixels), plus its captions and tags. The cache therefore holds at most
    ``max_cached_images * largest_cell_area / crop_scale[0] * 3`` bytes of pixels (about 63 MB for
    the defaults: 40 images, 512x512 cells of a 1024 canvas, crop scale 0.5), whatever the size of
    the decoded images. With ``cell_size`` every cell is ``cell_size`` square (the official
    Detic + CLIM mosaic: 1024 images of at most 400x400 with ``crop_scale=(1, 1)``, about 490 MB
    per dataloader worker, as the official cache of 400-px images).

    Until the cache holds ``min_images - 1`` other images (the first calls of each worker), the
    output is a 1x1 mosaic of the current image alone; these are counted in ``num_warmup``.

    The current image, and its downscaled copy, are checked before they are cached, against the
    largest cell of any grid (the copy may later fill any cell): one too small (``max_upscale``)
    or of unsupported channels raises :class:`~mmclim.datasets.bad_image.BadImageError` naming
    it and is not cached, so a caption dataset that skips it (``on_bad_entry='skip'``) leaves no
    bad image in the cache.

    Required, modified and added keys are those of :class:`MosaicPseudoRegion`, without
    ``mix_results``.

    Args:
        max_cached_images (int): Cache length. Defaults to 40, as mmdet's ``CachedMosaic``.
        random_pop (bool): Evict a random entry when full, else the oldest. Defaults to True.
        **kwargs: Arguments of :class:`MosaicPseudoRegion`.
    """

    def __init__(self, max_cached_images: int = 40, random_pop: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_cached_images < self.min_images:
            raise ValueError(f'max_cached_images ({max_cached_images}) must be at least the '
                             f'smallest grid size ({self.min_images})')
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        largest_cell = max(((cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])).max()
                           for cells in self.cells.values())
        self.max_cached_area = int(math.ceil(largest_cell / self.crop_scale[0]))
        # The cell (height, width) a cached image must be able to fill: the longest side.
        self.largest_cell_hw = max(((int(y2 - y1), int(x2 - x1))
                                    for cells in self.cells.values()
                                    for x1, y1, x2, y2 in cells), key=max)
        self.cache: List[dict] = []
        self.num_warmup = 0

    def _compact(self, results: dict) -> dict:
        """What the cache keeps of ``results``: the image downscaled to ``max_cached_area``, its
        captions, ids and (when present) tags."""
        img = results['img']
        area = img.shape[0] * img.shape[1]
        if area > self.max_cached_area:
            scale = math.sqrt(self.max_cached_area / area)
            size = (max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA).reshape(
                size[1], size[0], -1)
        entry = dict(img=img, captions=list(results['captions']), img_id=results.get('img_id'),
                     img_path=results.get('img_path'))
        if 'tags' in results:
            entry['tags'] = list(results['tags'])
        return entry

    @cache_randomness
    def get_indexes(self, cache: list) -> List[int]:
        """Draw a grid the cache can fill and distinct cached entries, the newest excluded.

        Args:
            cache (list): The cache; its last entry is the current image.

        Returns:
            list[int]: ``rows * cols - 1`` indexes into ``cache``, or ``[]`` during warm-up.
        """
        others = len(cache) - 1
        counts = [count for count in sorted(self._grid_by_count) if count - 1 <= others]
        if not counts:
            return []
        count = counts[np.random.randint(len(counts))]
        return np.random.choice(others, count - 1, replace=False).tolist()

    @cache_randomness
    def _evict_index(self) -> int:
        return np.random.randint(len(self.cache)) if self.random_pop else 0

    def transform(self, results: dict) -> dict:
        """Cache ``results`` and mosaic it with cached images.

        Args:
            results (dict): Result dict with ``img`` and ``captions``.

        Returns:
            dict: ``results`` with the mosaic written in.
        """
        self._check_source(results, self.largest_cell_hw)
        current = self._compact(results)
        # The cached copy too: downscaled to max_cached_area, an image of extreme aspect ratio
        # (over max_upscale ** 2 / crop_scale[0], a banner) becomes too thin for the cell.
        self._check_source(current, self.largest_cell_hw)
        self.cache.append(current)
        if len(self.cache) > self.max_cached_images:
            self.cache.pop(self._evict_index())
        indexes = self.get_indexes(self.cache)
        if not indexes:
            self.num_warmup += 1
            if self.num_warmup == 1:
                print_log(f'{type(self).__name__}: cache warm-up, the first calls output 1x1 '
                          f'mosaics until {self.min_images - 1} images are cached',
                          logger='current')
            results.update(self._mosaic([current], grid=(1, 1)))
        else:
            results.update(self._mosaic([current, *(self.cache[i] for i in indexes)]))
        results.pop('captions')
        results.pop('tags', None)
        return results

    def __repr__(self) -> str:
        return (f'{super().__repr__()[:-1]}, max_cached_images={self.max_cached_images}, '
                f'random_pop={self.random_pop})')
