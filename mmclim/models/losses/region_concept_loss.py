# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP's region-concept contrastive loss (Zhong et al. 2022, Eq. 2).

Each region proposal is pulled towards the embedding of its pseudo concept (the teacher's top
concept, :func:`mmclim.models.utils.pseudo_concept_labels`) and pushed from the concepts of the
other regions of the batch. As the official ``PretrainFastRCNN.loss_concept_contrastive``
(microsoft/RegionCLIP ``detectron2/modeling/meta_arch/clip_rcnn.py``) does, the columns are the
pseudo concepts of the batch's regions, not the whole pool, and every column carrying the row's
own concept is a positive: the loss of a row is minus the log of the softmax mass on its
positives (``MILCrossEntropy`` of ``detectron2/utils/comm.py``).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from mmclim.models.utils.all_gather import all_gather_with_grad

# RegionCLIP's MODEL.CLIP.CLSS_TEMP (configs/pretrain/RegionCLIP_RN50.yaml): the temperature of
# all three pre-training losses, fixed (CLIP's learned one is not used).
REGIONCLIP_TEMPERATURE = 0.01


def _check_rows(region_feats: Tensor, concept_embeds: Tensor, labels: Tensor,
                temperature: float) -> None:
    """Raise a ValueError naming the argument whose shape or value is not as expected."""
    if region_feats.dim() != 2 or concept_embeds.shape != region_feats.shape:
        raise ValueError(f'region_feats {tuple(region_feats.shape)} and concept_embeds '
                         f'{tuple(concept_embeds.shape)} must both have shape (K, D): row i of '
                         'concept_embeds is the pseudo concept of region i')
    if labels.shape != region_feats.shape[:1] or labels.dtype != torch.int64:
        raise ValueError(f'labels must be an int64 tensor of shape ({region_feats.shape[0]},) '
                         f'(the concept index of each region), got shape {tuple(labels.shape)} '
                         f'and dtype {labels.dtype}')
    if not temperature > 0:
        raise ValueError(f'temperature must be positive, got {temperature!r}')


def _gather_columns(concept_embeds: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """The pseudo concepts of every rank's regions (no gradient: concepts are fixed)."""
    gathered, _ = all_gather_with_grad(
        torch.cat([concept_embeds.detach(), labels[:, None].to(concept_embeds.dtype)], dim=1))
    return gathered[:, :-1], gathered[:, -1].round().long()


def region_concept_contrastive_loss(region_feats: Tensor,
                                    concept_embeds: Tensor,
                                    labels: Tensor,
                                    temperature: float = REGIONCLIP_TEMPERATURE,
                                    gather: bool = False) -> Tensor:
    r"""Multiple-instance contrastive loss between regions and the concepts of the batch.

    With :math:`s_{ij} = \langle \hat r_i, \hat c_j \rangle / \tau` (unit vectors) between region
    i and the pseudo concept of region j, and :math:`P_i = \{j : y_j = y_i\}`, the loss is
    :math:`\frac{1}{K}\sum_i -\log \sum_{j \in P_i} \mathrm{softmax}_j(s_{i\cdot})`, computed as
    ``logsumexp`` over :math:`P_i` minus ``logsumexp`` over all columns (the official code takes
    the log of summed softmax probabilities: the same value, without its underflow).

    **Distributed.** The official loss uses the regions of one GPU (``gather=False``). With
    ``gather=True`` and a process group the columns are the pseudo concepts of every rank's
    regions (more negatives; labels are pool indices, equal across ranks); the rows stay local
    and the result is their mean. It is then a collective call: every rank calls it, also one
    without regions.

    Args:
        region_feats (Tensor): Student region features, shape (K, D).
        concept_embeds (Tensor): The embedding of each region's pseudo concept, shape (K, D).
        labels (Tensor): The pseudo concept index of each region in the pool, int64 (K,).
        temperature (float): Divides the cosine similarities. Defaults to
            :data:`REGIONCLIP_TEMPERATURE`.
        gather (bool): Take the columns from all ranks. Defaults to False.

    Returns:
        Tensor: Scalar loss in float32 (float64 for float64 inputs); 0 connected to
        ``region_feats`` when K == 0.
    """
    _check_rows(region_feats, concept_embeds, labels, temperature)
    dtype = torch.promote_types(region_feats.dtype, torch.float32)
    with torch.autocast(region_feats.device.type, enabled=False):
        region_feats = F.normalize(region_feats.to(dtype), dim=1)
        concept_embeds = F.normalize(concept_embeds.to(dtype), dim=1)
        columns, column_labels = (_gather_columns(concept_embeds, labels) if gather else
                                  (concept_embeds, labels))
        if region_feats.shape[0] == 0:
            return region_feats.sum() * 0.0
        logits = region_feats @ columns.t() / temperature
        positives = labels[:, None] == column_labels[None, :]
        positive_mass = logits.masked_fill(~positives, float('-inf')).logsumexp(dim=1)
        return (logits.logsumexp(dim=1) - positive_mass).mean()


@MODELS.register_module()
class RegionConceptLoss(nn.Module):
    """RegionCLIP's region-concept contrastive loss; see :func:`region_concept_contrastive_loss`.

    Args:
        temperature (float): Divides the cosine similarities. Defaults to 0.01
            (RegionCLIP ``MODEL.CLIP.CLSS_TEMP``).
        gather (bool): Take the negative concepts from all ranks. Defaults to False (the
            official loss: the regions of one GPU).
        loss_weight (float): Weight of the loss. Defaults to 1.0 (RegionCLIP sums its three
            losses unweighted).
    """

    def __init__(self,
                 temperature: float = REGIONCLIP_TEMPERATURE,
                 gather: bool = False,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'{type(self).__name__}.temperature: expected a positive number, '
                             f'got {temperature!r}')
        self.temperature = temperature
        self.gather = gather
        self.loss_weight = loss_weight

    def forward(self, region_feats: Tensor, concept_embeds: Tensor, labels: Tensor) -> Tensor:
        """The weighted loss.

        Args:
            region_feats (Tensor): Student region features, shape (K, D).
            concept_embeds (Tensor): Each region's pseudo-concept embedding, shape (K, D).
            labels (Tensor): Each region's pseudo-concept index, int64 (K,).

        Returns:
            Tensor: Scalar loss multiplied by ``loss_weight``.
        """
        return self.loss_weight * region_concept_contrastive_loss(
            region_feats, concept_embeds, labels, self.temperature, self.gather)

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return (f'temperature={self.temperature}, gather={self.gather}, '
                f'loss_weight={self.loss_weight}')
