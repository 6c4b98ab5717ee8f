# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Optional

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks
from mmengine.fileio import get

# COCO panoptic: 80 thing classes, then 53 stuff classes (CocoPanopticDataset's label order).
COCO_PANOPTIC_NUM_THINGS = 80
# A panoptic PNG stores each segment id as R + 256 * G + 256**2 * B (COCO panoptic format).
RGB_ID_BASE = 256
# CLIM's region-classification protocol (wusize/CLIM src/training/data.py COCOPanopticDataset):
# at most the first 100 segments of an image (``max_anns = min(max #anns, 100)``, line 41) ...
DEFAULT_MAX_REGIONS = 100
# ... of which boxes with w * h < 8**2 or > 1024**2 original pixels are dropped
# (``min_size = 8  # fix for val``, ``max_size = 1024``, lines 45-46 and 106).
DEFAULT_MIN_AREA = 8**2
DEFAULT_MAX_AREA = 1024**2


@TRANSFORMS.register_module()
class LoadPanopticRegions(BaseTransform):
    """Every segment of a COCO panoptic annotation, things and stuff, as a region to classify.

    mmdet's ``LoadPanopticAnnotations`` keeps only thing instances and needs ``panopticapi``;
    zero-shot region classification (CLIM, Table 5) classifies stuff segments too. This follows
    the official protocol (wusize/CLIM ``src/training/data.py`` ``COCOPanopticDataset``):

    1. The first ``max_regions`` segments of ``segments_info``, in annotation order, are
       considered; the cap is counted before the size filter.
    2. Each becomes a box, the pixel extent of its mask in the panoptic PNG:
       ``(min x, min y, max x + 1, max y + 1)``. This is what the panoptic json's ``bbox`` of a
       thing segment holds, which the official code uses for things; for stuff the official
       ``mask2box`` returns ``max x`` and ``max y``, a box one pixel narrower and shorter.
    3. Boxes with ``w * h < min_area`` or ``> max_area``, in original image pixels, are dropped
       (official ``min_size ** 2`` and ``max_size ** 2``). This is protocol filtering, not bad
       input: nothing is logged.
    4. Crowd segments are classified like the others (the official code keeps them), unless
       ``ignore_crowd``, which flags them ignored so ``PackDetInputs`` moves them to
       ``ignored_instances``.

    The label is ``segments_info``'s ``category``. mmdet's ``CocoPanopticDataset`` makes it the
    index of the category in the annotation json's ``categories`` list (kept in the order of
    ``metainfo['classes']``), which for ``panoptic_val2017.json`` (categories in ascending id)
    is the official label, the index in ascending category id, and the row of the class
    embeddings of ``tools/generate_text_embeddings.py``. That dataset also sets ``is_thing``
    False for crowd thing segments, so whether a segment is a thing is read from its label
    (``category < num_thing_classes``), and a crowd segment is a thing whose ``is_thing`` is
    False. It drops segments whose json ``area`` is 0 or whose json ``bbox`` is under a pixel
    wide or high before this transform sees them; COCO panoptic has none.

    Place it before ``Resize``: boxes and masks are made at the size of the panoptic PNG,
    which must be the loaded image's.

    Required Keys:

    - seg_map_path (str): the panoptic PNG
    - segments_info (list[dict]): ``id``, ``category`` (label), ``is_thing``
    - img (np.ndarray, optional): checked to have the PNG's height and width

    Added Keys:

    - gt_bboxes (HorizontalBoxes, (N, 4)), gt_bboxes_labels (np.int64, (N,))
    - gt_masks (BitmapMasks, (N, H, W)), only with ``with_mask``
    - gt_ignore_flags (bool, (N,))

    Args:
        num_thing_classes (int): Labels below this are things. Defaults to 80 (COCO panoptic).
        min_area (float): Boxes with a smaller area (original pixels) are dropped. Defaults to
            64 (official ``min_size = 8``, squared).
        max_regions (int, optional): Only the first ``max_regions`` segments of an image are
            considered, before the size filter. None considers all. Defaults to 100 (official
            ``max_anns``).
        ignore_crowd (bool): Flag crowd segments ignored instead of classifying them. Defaults
            to False (official).
        with_mask (bool): Also load each region's mask (for mask pooling). Defaults to True.
        max_area (float): Boxes with a larger area (original pixels) are dropped. Defaults to
            1024**2 (official ``max_size = 1024``, squared).
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
    """

    def __init__(self,
                 num_thing_classes: int = COCO_PANOPTIC_NUM_THINGS,
                 min_area: float = DEFAULT_MIN_AREA,
                 max_regions: Optional[int] = DEFAULT_MAX_REGIONS,
                 ignore_crowd: bool = False,
                 with_mask: bool = True,
                 max_area: float = DEFAULT_MAX_AREA,
                 backend_args: Optional[dict] = None) -> None:
        name = type(self).__name__
        if num_thing_classes < 0:
            raise ValueError(f'{name}.num_thing_classes: expected >= 0, got {num_thing_classes}')
        if max_regions is not None and max_regions < 1:
            raise ValueError(f'{name}.max_regions: expected a positive int or None, got '
                             f'{max_regions}')
        if not 0 <= min_area <= max_area:
            raise ValueError(f'{name}.min_area, max_area: expected 0 <= min_area <= max_area, '
                             f'got {min_area} and {max_area}')
        self.num_thing_classes = num_thing_classes
        self.min_area = min_area
        self.max_regions = max_regions
        self.ignore_crowd = ignore_crowd
        self.with_mask = with_mask
        self.max_area = max_area
        self.backend_args = backend_args

    def _load_segment_ids(self, results: dict) -> np.ndarray:
        """The panoptic PNG of ``results`` as segment ids, shape (H, W), int64."""
        path = results.get('seg_map_path')
        if path is None:
            raise KeyError(f'{type(self).__name__}: no seg_map_path for image '
                           f'{results.get("img_path")}; set data_prefix=dict(seg=...) of the '
                           f'panoptic dataset')
        rgb = mmcv.imfrombytes(get(path, backend_args=self.backend_args), flag='color',
                               channel_order='rgb').astype(np.int64)
        ids = rgb[..., 0] + RGB_ID_BASE * rgb[..., 1] + RGB_ID_BASE**2 * rgb[..., 2]
        img = results.get('img')
        if img is not None and img.shape[:2] != ids.shape:
            raise ValueError(f'{type(self).__name__}: {path} is {ids.shape[0]}x{ids.shape[1]} '
                             f'(HxW) but the image {results.get("img_path")} is '
                             f'{img.shape[0]}x{img.shape[1]}; place {type(self).__name__} '
                             'before any resize')
        return ids

    def transform(self, results: dict) -> dict:
        """Load the regions of ``results['seg_map_path']``.

        Args:
            results (dict): Result dict with the required keys.

        Returns:
            dict: ``results`` with the added keys.
        """
        ids = self._load_segment_ids(results)
        height, width = ids.shape
        boxes: List[List[int]] = []
        labels: List[int] = []
        masks: List[np.ndarray] = []
        ignore: List[bool] = []
        for segment in results['segments_info'][:self.max_regions]:
            mask = ids == segment['id']
            if not mask.any():
                raise ValueError(f"{type(self).__name__}: segment id {segment['id']} of the "
                                 f"annotation of {results.get('img_path')} has no pixel in "
                                 f"{results['seg_map_path']}")
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            area = (x2 - x1) * (y2 - y1)
            if area < self.min_area or area > self.max_area:
                continue
            label = segment['category']
            is_crowd = label < self.num_thing_classes and not segment['is_thing']
            boxes.append([x1, y1, x2, y2])
            labels.append(label)
            ignore.append(self.ignore_crowd and is_crowd)
            if self.with_mask:
                masks.append(mask.astype(np.uint8))
        results['gt_bboxes'] = HorizontalBoxes(np.array(boxes, np.float32).reshape(-1, 4))
        results['gt_bboxes_labels'] = np.array(labels, np.int64)
        results['gt_ignore_flags'] = np.array(ignore, bool)
        if self.with_mask:
            results['gt_masks'] = BitmapMasks(
                np.stack(masks) if masks else np.zeros((0, height, width), np.uint8), height,
                width)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_thing_classes={self.num_thing_classes}, '
                f'min_area={self.min_area}, max_regions={self.max_regions}, '
                f'ignore_crowd={self.ignore_crowd}, with_mask={self.with_mask}, '
                f'max_area={self.max_area}, backend_args={self.backend_args})')
