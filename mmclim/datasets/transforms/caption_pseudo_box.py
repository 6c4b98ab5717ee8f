# Copyright (c) mmclim contributors. All rights reserved.
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes

from .mosaic_pseudo_region import check_caption_source

# A single caption image is a 1x1 mosaic: one pseudo region, the whole image.
SINGLE_IMAGE_GRID = (1, 1)


@TRANSFORMS.register_module()
class CaptionPseudoBox(BaseTransform):
    """Make a caption image's whole-image pseudo box, as Detic's caption branch.

    Writes the fields of one pseudo region with the conventions of
    :class:`MosaicPseudoRegion` (a single image is its 1x1 mosaic), so that the caption branch
    and the mosaic branch of a Detic + CLIM model are packed and read alike. Put it after
    ``LoadImageFromFile``; a later ``Resize``, ``RandomFlip`` or ``Pad`` keeps the box on the
    whole (resized, flipped) image, as for any gt box.

    Required Keys:

    - img (np.uint8, (H, W, C))
    - captions (list[str]): one is drawn at random
    - img_id (optional): recorded in ``image_ids``
    - img_path (optional): named in error messages
    - tags (list[int], optional): the image's tags (``with_tags`` of
      :class:`mmclim.datasets.CaptionDataset`)

    Added Keys:

    - gt_bboxes (HorizontalBoxes, (1, 4)): ``[[0, 0, W, H]]``
    - gt_bboxes_labels (np.int64, (1,)): ``[0]``, the index into ``region_captions``
    - gt_ignore_flags (bool, (1,)): ``[False]``
    - region_captions (list[str]): the drawn caption
    - image_ids (list): ``[img_id]`` (``[None]`` when absent)
    - region_tags (list[list[int]], only when ``tags`` is given): ``[tags]``
    - region_caption_lists (list[list[str]], only with ``all_captions``): ``[captions]``, every
      caption of the image (BARON aligns the region with all of them)
    - mosaic_grid (tuple[int, int]): ``(1, 1)``

    Removed Keys:

    - captions, tags (the image's own: the region has one caption and one tag list)

    Pack with ``PackDetInputs(meta_keys=(..., 'region_captions', 'image_ids', 'region_tags',
    'mosaic_grid'))``.

    Args:
        all_captions (bool): Also write ``region_caption_lists`` (the official BARON caption loss
            takes all of an image's captions as its positives). Defaults to False.
    """

    def __init__(self, all_captions: bool = False) -> None:
        self.all_captions = bool(all_captions)

    @cache_randomness
    def _choose_caption(self, num_captions: int) -> int:
        """Index of the caption to keep, uniform in ``[0, num_captions)``."""
        return int(np.random.randint(num_captions))

    def transform(self, results: dict) -> dict:
        """Write the whole-image pseudo box and its caption.

        Args:
            results (dict): Result dict with the keys of the class docstring.

        Returns:
            dict: ``results`` with the pseudo region written in.
        """
        check_caption_source(results, type(self).__name__)
        height, width = results['img'].shape[:2]
        captions = results.pop('captions')
        results['gt_bboxes'] = HorizontalBoxes(
            np.array([[0, 0, width, height]], dtype=np.float32))
        results['gt_bboxes_labels'] = np.zeros(1, dtype=np.int64)
        results['gt_ignore_flags'] = np.zeros(1, dtype=bool)
        results['region_captions'] = [captions[self._choose_caption(len(captions))]]
        results['image_ids'] = [results.get('img_id')]
        results['mosaic_grid'] = SINGLE_IMAGE_GRID
        if 'tags' in results:
            results['region_tags'] = [list(results.pop('tags'))]
        if self.all_captions:
            results['region_caption_lists'] = [list(captions)]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(all_captions={self.all_captions})'
