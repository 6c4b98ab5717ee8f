# Copyright (c) mmclim contributors. All rights reserved.
"""F-VLM's scores: cosine logits against class embeddings, and the test-time score fusion.

F-VLM (Kuo et al., ICLR 2023) scores each region twice against the same class embeddings (the
class-name text embeddings and a learned background embedding): by the trained detector head,
whose projected region feature gives :func:`cosine_logits` with a learned scale, and by the
frozen VLM, whose region embedding gives :func:`cosine_logits` with a fixed scale. Both go
through a softmax over the classes and background; :func:`fvlm_fuse_scores` combines them per
class by a weighted geometric mean, leaning on the VLM more for the novel classes the detector
never saw.
"""
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_logits(features: Tensor, embeddings: Tensor,
                  logit_scale: Union[float, Tensor]) -> Tensor:
    """Scaled cosine similarities of features with class embeddings.

    Args:
        features (Tensor): Region features in the embedding space, shape (N, D).
        embeddings (Tensor): One embedding per class (background included), shape (K, D).
        logit_scale (float | Tensor): The multiplier of the similarities (a scalar; the
            inverse of a softmax temperature).

    Returns:
        Tensor: ``logit_scale * cos(features_n, embeddings_k)``, shape (N, K).
    """
    features = F.normalize(features, dim=-1)
    return logit_scale * features @ F.normalize(embeddings, dim=-1).to(features).T


def fvlm_fuse_scores(det_scores: Tensor, vlm_scores: Tensor, novel_mask: Tensor,
                     base_alpha: float, novel_beta: float) -> Tensor:
    """F-VLM's geometric-mean fusion of detection and VLM scores.

    ``s_det ** (1 - alpha) * s_vlm ** alpha`` for the base classes and
    ``s_det ** (1 - beta) * s_vlm ** beta`` for the novel ones (F-VLM, Sec. 3.3; the official
    ``FVLMConvFCBBoxHead.pred_cls_logits``).

    Args:
        det_scores (Tensor): Detection-head probabilities of the classes, shape (N, C).
        vlm_scores (Tensor): VLM probabilities of the same classes, shape (N, C).
        novel_mask (Tensor): Bool, True for the novel classes, shape (C,).
        base_alpha (float): VLM weight of the base classes, in [0, 1].
        novel_beta (float): VLM weight of the novel classes, in [0, 1].

    Returns:
        Tensor: Fused scores of shape (N, C).
    """
    if det_scores.shape != vlm_scores.shape or novel_mask.shape != det_scores.shape[-1:]:
        raise ValueError(f'expected det_scores and vlm_scores of one shape (N, C) and novel_mask '
                         f'of shape (C,), got {tuple(det_scores.shape)}, '
                         f'{tuple(vlm_scores.shape)} and {tuple(novel_mask.shape)}')
    vlm_weight = torch.where(novel_mask, novel_beta, base_alpha).to(det_scores)
    return det_scores.pow(1 - vlm_weight) * vlm_scores.pow(vlm_weight)
