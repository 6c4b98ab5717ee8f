# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Tuple

from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from torch import Tensor

from mmclim.models.utils.box_pool import float32_maps
from .detic_bbox_head import DeticBBoxHead


@MODELS.register_module()
class DeticRoIHead(StandardRoIHead):
    """The RoI head of Detic's Faster R-CNN (OV-COCO, R50-C4), with region embeddings for the
    caption branches.

    Detection is ``StandardRoIHead``'s with a :class:`~.DeticBBoxHead`. The caption and tag
    losses pool their boxes through the same path as detection (the RoI extractor, the shared
    res5 head) and take the box head's text-space projection (:meth:`region_embeddings`, the
    official ``OVDStandardRoIHead.run_ovd``). RoIAlign runs on float32 maps under autocast.

    Args:
        **kwargs: ``StandardRoIHead`` arguments; ``bbox_head`` must be a ``DeticBBoxHead``.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.bbox_head, DeticBBoxHead):
            raise ValueError(f"{type(self).__name__}.bbox_head: expected type='DeticBBoxHead', "
                             f'got {type(self.bbox_head).__name__}')

    @property
    def bbox_heads(self) -> List[DeticBBoxHead]:
        """The box heads whose classifiers score regions (one here; one per stage in a
        cascade)."""
        return [self.bbox_head]

    def _bbox_forward(self, x: Tuple[Tensor], rois: Tensor) -> dict:
        """``StandardRoIHead._bbox_forward`` with the maps in float32 (``float32_maps``)."""
        return super()._bbox_forward(float32_maps(x), rois)

    def region_embeddings(self, x: Tuple[Tensor, ...],
                          boxes: List[Tensor]) -> List[Tuple[Tensor, float]]:
        """Text-space embeddings of given boxes, for the caption and tag losses.

        Args:
            x (tuple[Tensor, ...]): The detector's maps, each of shape (B, C, H_l, W_l).
            boxes (List[Tensor]): B tensors of shape (n_i, 4), ``(x1, y1, x2, y2)`` in the
                input image's pixels.

        Returns:
            List[tuple[Tensor, float]]: One ``(embeddings of shape (sum n_i, D), loss weight)``
            per stage: a single stage of weight 1 here.
        """
        rois = bbox2roi(boxes)
        maps = float32_maps(x)
        feats = self.bbox_roi_extractor(maps[:self.bbox_roi_extractor.num_inputs], rois)
        if self.with_shared_head:
            feats = self.shared_head(feats)
        return [(self.bbox_head.vision_to_language(feats), 1.0)]
