# Copyright (c) mmclim contributors. All rights reserved.
"""Detic's image-label (tag) loss on the max-size proposal of each pseudo region.

Detic (Zhou et al., 2022) trains the feature of the largest proposal of an image
(:func:`~mmclim.models.utils.max_size_proposal`) to classify the image-level labels (tags) of
that image, with a per-class sigmoid (BCE) against the class embeddings. CLIM's official port
(``ovdet/ovdet/methods/detic/detic_tags.py``) applies it to each pseudo region of a mosaic.
"""
from numbers import Integral
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from torch import Tensor

from .detic_caption_loss import (check_loss_settings, check_neg_weight, check_scalar,
                                 make_logit_bias, weighted_cosine_bce)

# OV-COCO settings of the official port: ovdet/configs/detic/ov_coco/
# detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py L72-78 (``detic_tags``).
COCO_LOGIT_SCALE = 25.0  # norm_temp
COCO_BIAS = -20.0  # bce_bias, an nn.Parameter there (detic_tags.py L27-30)
COCO_NEG_WEIGHT = 1.0  # tag_neg_weight
COCO_BASE_BATCH_SIZE = None  # base_batch_size
COCO_TAG_WEIGHT = 0.1 / 3  # tag_weight


def tags_to_multi_hot(tags: Sequence[Sequence[int]], num_classes: int,
                      device: Optional[Union[str, torch.device]] = None) -> Tensor:
    """Multi-hot targets from the list of tag labels of each region.

    Args:
        tags (Sequence[Sequence[int]]): N lists (or 1-D integer tensors) of class indices in
            [0, ``num_classes``); a list may be empty (an all-negative row) or repeat a label.
        num_classes (int): C, the number of classes.
        device (str | torch.device, optional): Device of the result. Defaults to None (CPU).

    Returns:
        Tensor: Float32 targets of shape (N, C), 1 at each region's tags and 0 elsewhere.
    """
    targets = torch.zeros(len(tags), num_classes)
    for row, labels in enumerate(tags):
        if isinstance(labels, Tensor):
            labels = labels.tolist()
        for label in labels:
            if isinstance(label, bool) or not isinstance(label, Integral):
                raise ValueError(f'tags[{row}] must hold int class indices, got {label!r}')
            if not 0 <= label < num_classes:
                raise ValueError(f'tags[{row}]: label {label} is outside [0, {num_classes}) '
                                 f'(the {num_classes} rows of class_embeds)')
            targets[row, label] = 1.0
    return targets.to(device)


def _check_inputs(region_feats: Tensor, class_embeds: Tensor, tag_targets: Tensor,
                  logit_scale: Union[Tensor, float], bias: Union[Tensor, float],
                  neg_weight: float) -> None:
    """Raise a ValueError naming the argument whose shape or value is not as expected."""
    for name, feats in (('region_feats', region_feats), ('class_embeds', class_embeds)):
        if feats.dim() != 2:
            raise ValueError(f'{name} must be a 2-D tensor, got shape {tuple(feats.shape)}')
    if region_feats.shape[1] != class_embeds.shape[1]:
        raise ValueError(f'region_feats {tuple(region_feats.shape)} and class_embeds '
                         f'{tuple(class_embeds.shape)} must have the same feature size D')
    expected = (region_feats.shape[0], class_embeds.shape[0])
    if tag_targets.shape != expected:
        raise ValueError(f'tag_targets must have shape {expected} (regions, classes), got '
                         f'{tuple(tag_targets.shape)}')
    if not ((tag_targets == 0) | (tag_targets == 1)).all():
        raise ValueError('tag_targets must hold only 0 and 1 (multi-hot)')
    check_scalar('logit_scale', logit_scale, positive=True)
    check_scalar('bias', bias)
    check_neg_weight(neg_weight)


def detic_tag_loss(region_feats: Tensor, class_embeds: Tensor, tag_targets: Tensor,
                   logit_scale: Union[Tensor, float], bias: Union[Tensor, float],
                   neg_weight: float) -> Tensor:
    r"""Multi-label BCE between region features and class embeddings (Detic's image labels).

    With :math:`r_i` the L2-normalised region features and :math:`e_c` the class embeddings, the
    logits are :math:`s_{ic} = \text{logit\_scale} \cdot \langle r_i, e_c \rangle + \text{bias}`
    and the loss is :math:`\frac{1}{N} \sum_i \sum_c w_{ic} \text{BCE}(s_{ic}, y_{ic})` with
    :math:`w_{ic} = 1` on tags and ``neg_weight`` elsewhere. A region without tags contributes
    its negatives.

    Args:
        region_feats (Tensor): Region features, shape (N, D); normalised here.
        class_embeds (Tensor): Class embeddings, shape (C, D), already L2-normalised (the
            official port normalises them at load); used as given.
        tag_targets (Tensor): Multi-hot targets, shape (N, C), values 0 or 1 (any dtype).
        logit_scale (Tensor | float): Multiplier of the cosine similarities (``norm_temp``), a
            positive number or a one-element tensor.
        bias (Tensor | float): Added to every logit, a number or a one-element tensor.
        neg_weight (float): Weight of each negative (region, class) pair, >= 0.

    Returns:
        Tensor: Scalar loss, computed in float32 (float64 for float64 inputs) under any
        autocast. With N == 0 it is 0 and, when the inputs (or ``bias``) require grad, still has
        a ``grad_fn`` connected to them.
    """
    _check_inputs(region_feats, class_embeds, tag_targets, logit_scale, bias, neg_weight)
    return weighted_cosine_bce(region_feats, class_embeds, tag_targets, 1.0, neg_weight,
                               logit_scale, bias)


@MODELS.register_module()
class DeticTagLoss(nn.Module):
    """Detic's image-label loss on the max-size proposals, as in CLIM's official port.

    See :func:`detic_tag_loss`. The loss is multiplied by ``N / base_batch_size`` (N regions)
    when ``base_batch_size`` is set, and by ``loss_weight``. The defaults are the OV-COCO
    settings; OV-LVIS uses ``logit_scale=50.0, bias=None, loss_weight=0.1``.

    Args:
        logit_scale (float): Multiplier of the cosine similarities (``norm_temp``).
            Defaults to 25.0.
        bias (float, optional): Initial value of the bias added to every logit (``bce_bias``);
            None is a fixed 0. Defaults to -20.0.
        learn_bias (bool): Make the bias an ``nn.Parameter``; otherwise it is a fixed number.
            Ignored when ``bias`` is None. Defaults to True.
        neg_weight (float): Weight of each negative pair (``tag_neg_weight``). Defaults to 1.0.
        base_batch_size (int, optional): When set, the loss is multiplied by
            ``num_regions / base_batch_size``. Defaults to None.
        loss_weight (float): Weight of the loss (``tag_weight``). Defaults to 0.1 / 3.
    """

    def __init__(self,
                 logit_scale: float = COCO_LOGIT_SCALE,
                 bias: Optional[float] = COCO_BIAS,
                 learn_bias: bool = True,
                 neg_weight: float = COCO_NEG_WEIGHT,
                 base_batch_size: Optional[int] = COCO_BASE_BATCH_SIZE,
                 loss_weight: float = COCO_TAG_WEIGHT) -> None:
        super().__init__()
        check_loss_settings(logit_scale, neg_weight, base_batch_size)
        self.logit_scale = float(logit_scale)
        self.bias = make_logit_bias(bias, learn_bias)
        self.neg_weight = float(neg_weight)
        self.base_batch_size = base_batch_size
        self.loss_weight = loss_weight

    def forward(self, region_feats: Tensor, class_embeds: Tensor,
                tags: Union[Sequence[Sequence[int]], Tensor]) -> Tensor:
        """Compute the weighted loss.

        Args:
            region_feats (Tensor): Features of the max-size proposals, shape (N, D).
            class_embeds (Tensor): L2-normalised class embeddings, shape (C, D).
            tags (Sequence[Sequence[int]] | Tensor): The tag labels of each region, N lists of
                class indices in [0, C) (a composed region lists its members' tags), or a
                multi-hot tensor of shape (N, C).

        Returns:
            Tensor: Scalar loss, times ``N / base_batch_size`` if set, times ``loss_weight``.
        """
        if isinstance(tags, Tensor):
            targets = tags
        else:
            if len(tags) != region_feats.shape[0]:
                raise ValueError(f'tags must hold one label list per region, got {len(tags)} '
                                 f'lists for {region_feats.shape[0]} rows of region_feats')
            targets = tags_to_multi_hot(tags, class_embeds.shape[0], device=region_feats.device)
        loss = detic_tag_loss(region_feats, class_embeds, targets, self.logit_scale, self.bias,
                              self.neg_weight)
        if self.base_batch_size is not None:
            loss = loss * (region_feats.shape[0] / self.base_batch_size)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        bias = 'learnable' if isinstance(self.bias, nn.Parameter) else self.bias
        return (f'logit_scale={self.logit_scale}, bias={bias}, neg_weight={self.neg_weight}, '
                f'base_batch_size={self.base_batch_size}, loss_weight={self.loss_weight}')
