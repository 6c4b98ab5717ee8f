# Copyright (c) mmclim contributors. All rights reserved.
"""F-VLM's test-time scores: VLM region scores and their geometric-mean fusion with detection.

F-VLM (Kuo et al., ICLR 2023) scores each detected box twice: by the trained detector head and by
the frozen VLM, whose region feature is compared with the same class-name text embeddings. The
two are combined per class by a weighted geometric mean, leaning on the VLM more for the novel
classes the detector never saw.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

from mmclim.models.utils.box_pool import box_pool

# F-VLM's fusion weights of the VLM score on OV-LVIS: alpha for base and beta for novel classes.
FVLM_BASE_ALPHA = 0.35
FVLM_NOVEL_BETA = 0.65
# CLIP's logit scale of 100 (OpenAI's checkpoints) as a temperature, for the VLM's softmax.
CLIP_TEMPERATURE = 0.01


def vlm_region_scores(dense: Tensor, boxes: List[Tensor], stride: int, text_embeddings: Tensor,
                      temperature: float = CLIP_TEMPERATURE) -> Tensor:
    """Class probabilities of boxes from a frozen VLM's dense map.

    Each box is pooled from the dense map as :meth:`OpenCLIPRegion.region_features` pools it
    (one RoIAlign bin with adaptive sampling: the mean of the box on the map), so the score is
    the one CLIM's region-text training optimises; then a softmax over the classes of the cosine
    similarities to ``text_embeddings`` divided by ``temperature``.

    Args:
        dense (Tensor): Dense map in the text-embedding space, shape (B, D, H/s, W/s).
        boxes (List[Tensor]): B tensors of boxes (x1, y1, x2, y2) in input pixels, shape
            (K_i, 4).
        stride (int): Input pixels per cell s of ``dense``.
        text_embeddings (Tensor): One embedding per class, shape (C, D).
        temperature (float): Divisor of the cosine similarities. Defaults to 0.01.

    Returns:
        Tensor: Probabilities over the C classes, shape (sum K_i, C), image then box order.
    """
    regions = box_pool(dense, [image_boxes.to(dense) for image_boxes in boxes], stride)
    if regions.shape[0] == 0:
        return dense.new_zeros(0, text_embeddings.shape[0])
    similarities = F.normalize(regions, dim=-1) @ F.normalize(text_embeddings, dim=-1).T.to(dense)
    return (similarities / temperature).softmax(dim=-1)


def fvlm_fuse_scores(det_scores: Tensor,
                     vlm_scores: Tensor,
                     novel_mask: Tensor,
                     base_alpha: float = FVLM_BASE_ALPHA,
                     novel_beta: float = FVLM_NOVEL_BETA) -> Tensor:
    """F-VLM's geometric-mean fusion of detection and VLM scores.

    ``s_det ** (1 - alpha) * s_vlm ** alpha`` for the base classes and
    ``s_det ** (1 - beta) * s_vlm ** beta`` for the novel ones.

    Args:
        det_scores (Tensor): Detection-head probabilities of the classes, shape (N, C).
        vlm_scores (Tensor): VLM probabilities of the same classes, shape (N, C).
        novel_mask (Tensor): Bool, True for the novel classes, shape (C,).
        base_alpha (float): VLM weight of the base classes, in [0, 1]. Defaults to 0.35.
        novel_beta (float): VLM weight of the novel classes, in [0, 1]. Defaults to 0.65.

    Returns:
        Tensor: Fused scores of shape (N, C).
    """
    if det_scores.shape != vlm_scores.shape or novel_mask.shape != det_scores.shape[-1:]:
        raise ValueError(f'expected det_scores and vlm_scores of one shape (N, C) and novel_mask '
                         f'of shape (C,), got {tuple(det_scores.shape)}, '
                         f'{tuple(vlm_scores.shape)} and {tuple(novel_mask.shape)}')
    vlm_weight = torch.where(novel_mask, novel_beta, base_alpha).to(det_scores)
    return det_scores.pow(1 - vlm_weight) * vlm_scores.pow(vlm_weight)
