# Copyright (c) mmclim contributors. All rights reserved.
"""The one box-pooling function of mmclim: RoIAlign of boxes given in input pixels.

CLIP region features (:class:`~mmclim.models.backbones.OpenCLIPRegion`), the F-VLM backbone's
VLM region embeddings and every score computed from them pool boxes here, so the pooling is the
same wherever a region is compared with a text. It is RoIAlign with ``aligned=True`` (pixel
centres at half-integers, as the official CLIM and F-VLM code call torchvision's ``roi_align``)
and adaptive sampling (``ceil(box size / bin size)`` points per bin and axis). It pools in float32
at least, also under bfloat16 autocast: boxes cast to bfloat16 (8 significant bits) would move a
coordinate near 1000 pixels by up to 4 pixels.
"""
from typing import List, Sequence, Tuple, Union

import torch
from mmcv.ops import roi_align
from mmdet.structures.bbox import bbox2roi
from torch import Tensor

# Adaptive sampling: ceil(bin size) sampling points per bin and axis (mmcv 0, torchvision -1).
ADAPTIVE_SAMPLING = 0
POOL_MODE = 'avg'
ALIGNED = True


def float32_maps(maps: Sequence[Tensor]) -> Tuple[Tensor, ...]:
    """Feature maps in float32 for mmdet's RoI extractors, which cast the boxes to the maps'
    dtype: under bfloat16 autocast a coordinate near 1000 pixels would move by up to 4.

    Args:
        maps (Sequence[Tensor]): Maps of shape (B, C, H_l, W_l) in any dtype.

    Returns:
        tuple[Tensor, ...]: The half-precision maps cast to float32, the others as they are.
    """
    return tuple(level.float() if level.dtype in (torch.bfloat16, torch.float16) else level
                 for level in maps)


def boxes_to_rois(boxes: Union[List[Tensor], Tensor]) -> Tensor:
    """RoIs ``(batch index, x1, y1, x2, y2)`` from per-image boxes (or RoIs, returned as given).

    Args:
        boxes (list[Tensor] | Tensor): B tensors of boxes of shape (K_i, 4), or RoIs of shape
            (K, 5).

    Returns:
        Tensor: Shape (K, 5), images in order.
    """
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f'rois: expected shape (K, 5) (batch index, x1, y1, x2, y2), got '
                             f'{tuple(boxes.shape)}')
        return boxes
    for index, image_boxes in enumerate(boxes):
        if image_boxes.ndim != 2 or image_boxes.shape[1] != 4:
            raise ValueError(f'boxes[{index}]: expected shape (K_i, 4), got '
                             f'{tuple(image_boxes.shape)}')
    return bbox2roi(list(boxes))


def box_pool(features: Tensor, boxes: Union[List[Tensor], Tensor], stride: int,
             output_size: int = 1) -> Tensor:
    """Pool each box from a feature map of the given stride.

    Args:
        features (Tensor): Shape (B, C, H/s, W/s), s = ``stride``.
        boxes (list[Tensor] | Tensor): B tensors of boxes ``(x1, y1, x2, y2)`` in input pixels of
            shape (K_i, 4), or RoIs of shape (K, 5) (:func:`boxes_to_rois`).
        stride (int): Input pixels per cell of ``features``.
        output_size (int): Bins per side. Defaults to 1 (the box's mean on the map).

    Returns:
        Tensor: Shape (K, C) for ``output_size=1``, else (K, C, S, S), images then boxes in
        order; float32 (float64 for float64 features).
    """
    features = features.to(torch.promote_types(features.dtype, torch.float32))
    rois = boxes_to_rois(boxes).to(features)
    if rois.shape[0] == 0:
        shape = (0, features.shape[1]) + (() if output_size == 1 else (output_size, ) * 2)
        return features.new_zeros(shape)
    pooled = roi_align(features, rois, output_size, 1.0 / stride, ADAPTIVE_SAMPLING, POOL_MODE,
                       ALIGNED)
    return pooled.flatten(1) if output_size == 1 else pooled
