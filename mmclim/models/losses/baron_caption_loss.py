# Copyright (c) mmclim contributors. All rights reserved.
"""BARON's caption loss: a soft-target contrastive loss between bags of regions and captions.

BARON (Wu et al., CVPR 2023, "Aligning Bag of Regions for Open-Vocabulary Object Detection")
reads each bag of regions of an image as a sentence of pseudo words with CLIP's text tower and
aligns the result with the embeddings of the image's captions. A (bag, caption) pair is positive
when both come from the same image (several permutations of a bag, and queued features of the
same image, are all positives), and the loss is the symmetric soft-target cross-entropy of UniCL
(the official ``BaronCaption.get_losses`` with ``SoftTargetCrossEntropy``,
``ovdet/methods/baron/``).
"""
from numbers import Real
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from mmclim.models.utils.feature_queue import FeatureQueue

# OV-COCO settings of the official code: ovdet/configs/baron/ov_coco/
# baron_caption_faster_rcnn_r50_caffe_c4_90k.py (``ovd_cfg``), line numbers there.
COCO_LOGIT_SCALE = 30.0  # L40: norm_temp
COCO_LOSS_WEIGHT = 10.0  # L40: loss_weight
COCO_QUEUE_SIZE = 1024  # L45: queue_cfg.lengths, for both queues
# Added to the number of positives of a row before dividing by it (official
# SoftTargetCrossEntropy, ovdet/methods/baron/utils.py): a row without positive contributes 0.
SOFT_CE_EPS = 1e-6
# The two directions (bags -> captions, captions -> bags) are averaged.
DIRECTION_WEIGHT = 0.5
# Argument names of soft_target_contrastive_loss, for its error messages.
_NAMES = ('feats_a', 'feats_b', 'ids_a', 'ids_b')


def _check_inputs(feats_a: Tensor, feats_b: Tensor, ids_a: Tensor, ids_b: Tensor,
                  logit_scale: float, names: Tuple[str, str, str, str]) -> None:
    """Raise a ValueError naming the argument whose shape, dtype or value is not as expected."""
    name_a, name_b, name_ids_a, name_ids_b = names
    for name, feats in ((name_a, feats_a), (name_b, feats_b)):
        if feats.dim() != 2:
            raise ValueError(f'{name} must be a 2-D tensor of shape (N, D), got shape '
                             f'{tuple(feats.shape)}')
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f'{name_a} {tuple(feats_a.shape)} and {name_b} '
                         f'{tuple(feats_b.shape)} must have the same feature size D')
    for name, ids, feats in ((name_ids_a, ids_a, feats_a), (name_ids_b, ids_b, feats_b)):
        if ids.dtype != torch.int64 or ids.shape != feats.shape[:1]:
            raise ValueError(f'{name} must be an int64 tensor of shape ({feats.shape[0]},) (one '
                             f'id per row), got shape {tuple(ids.shape)} and dtype {ids.dtype}')
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, Real) or logit_scale <= 0:
        raise ValueError(f'logit_scale must be a positive number, got {logit_scale!r}')


def _soft_target_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of sum(-t * log_softmax(x)) / (sum(t) + 1e-6); (R, C) -> scalar."""
    loss = (-targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    return (loss / (targets.sum(dim=1) + SOFT_CE_EPS)).mean()


def soft_target_contrastive_loss(feats_a: Tensor, feats_b: Tensor, ids_a: Tensor, ids_b: Tensor,
                                 logit_scale: float) -> Tensor:
    r"""Symmetric soft-target cross-entropy between two sets of unit vectors (BARON, UniCL).

    With targets :math:`T_{ij} = [\text{ids\_a}_i = \text{ids\_b}_j]` and
    :math:`\text{softCE}(X, T) = \frac{1}{R} \sum_i \frac{\sum_j -T_{ij} \log
    \text{softmax}(X_i)_j}{\sum_j T_{ij} + 10^{-6}}` (R rows; a row without positive adds 0 but
    counts in R), the loss is

    .. math::
        \tfrac12 \text{softCE}(s A B^\top, T) + \tfrac12 \text{softCE}(s B A^\top, T^\top).

    Args:
        feats_a (Tensor): Unit vectors, shape (N, D) (e.g. the bags' embeddings); used as given.
        feats_b (Tensor): Unit vectors, shape (M, D) (e.g. the captions' embeddings).
        ids_a (Tensor): Int64 id of each row of ``feats_a`` (e.g. its image), shape (N,).
        ids_b (Tensor): Int64 id of each row of ``feats_b``, shape (M,).
        logit_scale (float): Multiplier :math:`s` of the dot products (``norm_temp``), > 0.

    Returns:
        Tensor: Scalar loss, computed in float32 (float64 for float64 inputs) under any
        autocast. 0 when N or M is 0 (with a ``grad_fn`` to inputs that require grad).
    """
    _check_inputs(feats_a, feats_b, ids_a, ids_b, logit_scale, _NAMES)
    # Float32 under any autocast: at a logit scale of 30, bfloat16 logits would step by 0.125.
    dtype = torch.promote_types(feats_a.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(feats_a.device.type, enabled=False):
        feats_a, feats_b = feats_a.to(dtype), feats_b.to(device=feats_a.device, dtype=dtype)
        if feats_a.shape[0] == 0 or feats_b.shape[0] == 0:
            return (feats_a.sum() + feats_b.sum()) * 0.0
        targets = (ids_a.to(feats_a.device)[:, None] == ids_b.to(feats_a.device)[None, :]).to(dtype)
        logits = float(logit_scale) * feats_a @ feats_b.t()
        return (DIRECTION_WEIGHT * _soft_target_ce(logits, targets) +
                DIRECTION_WEIGHT * _soft_target_ce(logits.t(), targets.t()))


@MODELS.register_module()
class BaronCaptionLoss(nn.Module):
    """BARON's caption loss with FIFO queues of past bags and captions (official
    ``BaronCaption.get_losses``).

    The rows are the current bag embeddings followed by the queued ones, the columns the current
    caption embeddings followed by the queued ones; the loss is
    :func:`soft_target_contrastive_loss` of the two, times ``loss_weight``. After it, the current
    bags and captions (detached) are pushed to the front of their queues, which hold the newest
    ``queue_size`` of each, newest first.

    **Queues.** ``bag_queue`` and ``caption_queue``
    (:class:`~mmclim.models.utils.FeatureQueue`; the official ``clip_cap_text_features`` and
    ``clip_caption_features`` of ``ovdet/methods/queues.py``) hold non-persistent buffers: they
    follow ``.to(device)``, are not saved in checkpoints and start empty after a resume. They are
    per process and never gathered across GPUs, as the official ones; under DDP keep
    ``broadcast_buffers=False`` (MMEngine's default). As in the official code, a queued bag whose
    image's captions have left the caption queue (it holds one row per image, the bag queue up to
    ``max_perms``) is a row without positive: it adds 0 to the sum and counts in the mean.

    Args:
        logit_scale (float): Multiplier of the dot products of unit vectors (``norm_temp``).
            Defaults to 30.0 (OV-COCO).
        queue_size (int): Maximum number of queued bags, and of queued captions; 0 disables the
            queues. Defaults to 1024 (OV-COCO).
        loss_weight (float): Weight of the loss. Defaults to 10.0 (OV-COCO).
    """

    def __init__(self,
                 logit_scale: float = COCO_LOGIT_SCALE,
                 queue_size: int = COCO_QUEUE_SIZE,
                 loss_weight: float = COCO_LOSS_WEIGHT) -> None:
        super().__init__()
        if (isinstance(logit_scale, bool) or not isinstance(logit_scale, Real) or logit_scale <= 0):
            raise ValueError(f'logit_scale must be a positive number, got {logit_scale!r}')
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, Real):
            raise ValueError(f'loss_weight must be a number, got {loss_weight!r}')
        self.logit_scale = float(logit_scale)
        self.loss_weight = float(loss_weight)
        self.bag_queue = FeatureQueue(
            queue_size, name='bags', feats_arg='bag_feats', ids_arg='bag_ids')
        self.caption_queue = FeatureQueue(
            queue_size, name='captions', feats_arg='caption_feats', ids_arg='caption_ids')

    @property
    def queue_size(self) -> int:
        """Maximum number of queued bags, and of queued captions."""
        return self.bag_queue.size

    def forward(self, bag_feats: Tensor, caption_feats: Tensor, bag_ids: Tensor,
                caption_ids: Tensor) -> Tensor:
        """Compute the weighted loss on current and queued bags and captions, then enqueue.

        Args:
            bag_feats (Tensor): L2-normalised embeddings of the bags (each permutation of a bag
                is a row), shape (P, D).
            caption_feats (Tensor): L2-normalised caption embeddings, shape (M, D).
            bag_ids (Tensor): Int64 image id of each bag, shape (P,)
                (:func:`~mmclim.models.losses.image_ids_to_tensor` for string ids).
            caption_ids (Tensor): Int64 image id of each caption, shape (M,).

        Returns:
            Tensor: Scalar loss times ``loss_weight``.
        """
        names = ('bag_feats', 'caption_feats', 'bag_ids', 'caption_ids')
        _check_inputs(bag_feats, caption_feats, bag_ids, caption_ids, self.logit_scale, names)
        rows, row_ids = self.bag_queue.extend(bag_feats, bag_ids)
        columns, column_ids = self.caption_queue.extend(caption_feats, caption_ids)
        loss = soft_target_contrastive_loss(rows, columns, row_ids, column_ids, self.logit_scale)
        self.bag_queue.push(bag_feats, bag_ids)
        self.caption_queue.push(caption_feats, caption_ids)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return (f'logit_scale={self.logit_scale}, queue_size={self.queue_size}, '
                f'loss_weight={self.loss_weight}')
