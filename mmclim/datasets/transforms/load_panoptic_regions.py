# Copyright (c) mmclim contributors. All rights reserved.
from typing import Optional

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


@TRANSFORMS.register_module()
class LoadPanopticRegions(BaseTransform):
    """Every segment of a COCO panoptic annotation, things and stuff, as a region to classify.

    mmdet's ``LoadPanopticAnnotations`` keeps only thing instances and needs ``panopticapi``;
    zero-shot region classification (CLIM, Table 5) classifies stuff segments too. Each segment
    of ``segments_info`` becomes a box (the extent of its mask), a label and a mask. Crowd thing
    segments (a thing class that ``CocoPanopticDataset`` marks ``is_thing=False``) are flagged
    ignored, so ``PackDetInputs`` moves them to ``ignored_instances``.

    Required Keys:

    - seg_map_path (str): the panoptic PNG
    - segments_info (list[dict]): ``id``, ``category`` (contiguous label), ``is_thing``
    - ori_shape / height, width

    Added Keys:

    - gt_bboxes (HorizontalBoxes, (N, 4)), gt_bboxes_labels (np.int64, (N,))
    - gt_masks (BitmapMasks, (N, H, W)), gt_ignore_flags (bool, (N,))

    Args:
        num_thing_classes (int): Labels below this are things. Defaults to 80 (COCO panoptic).
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
    """

    def __init__(self, num_thing_classes: int = COCO_PANOPTIC_NUM_THINGS,
                 backend_args: Optional[dict] = None) -> None:
        self.num_thing_classes = num_thing_classes
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        """Load the segments of ``results['seg_map_path']``.

        Args:
            results (dict): Result dict with the required keys.

        Returns:
            dict: ``results`` with the added keys.
        """
        path = results.get('seg_map_path')
        if path is None:
            raise KeyError(f'{type(self).__name__}: no seg_map_path for image '
                           f'{results.get("img_path")}; set data_prefix=dict(seg=...) of the '
                           f'panoptic dataset')
        rgb = mmcv.imfrombytes(get(path, backend_args=self.backend_args), flag='color',
                               channel_order='rgb').astype(np.int64)
        ids = rgb[..., 0] + RGB_ID_BASE * rgb[..., 1] + RGB_ID_BASE**2 * rgb[..., 2]
        height, width = ids.shape
        boxes, labels, masks, ignore = [], [], [], []
        for segment in results['segments_info']:
            mask = ids == segment['id']
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(segment['category'])
            masks.append(mask.astype(np.uint8))
            ignore.append(segment['category'] < self.num_thing_classes
                          and not segment['is_thing'])
        results['gt_bboxes'] = HorizontalBoxes(np.array(boxes, np.float32).reshape(-1, 4))
        results['gt_bboxes_labels'] = np.array(labels, np.int64)
        results['gt_masks'] = BitmapMasks(
            np.stack(masks) if masks else np.zeros((0, height, width), np.uint8), height, width)
        results['gt_ignore_flags'] = np.array(ignore, bool)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_thing_classes={self.num_thing_classes})'
