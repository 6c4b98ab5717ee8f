# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP's distillation of the teacher's region-concept scores (Zhong et al. 2022, Eq. 3).

The student's distribution over the whole concept pool for a region is pulled towards the
teacher's, as ``PretrainFastRCNN.loss_region_distill`` (microsoft/RegionCLIP
``detectron2/modeling/meta_arch/clip_rcnn.py``) does: ``F.kl_div(log p_student, p_teacher,
reduction='batchmean')``, i.e. KL(teacher || student) averaged over regions, both at the
temperature 0.01 and without a T^2 factor.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from .region_concept_loss import REGIONCLIP_TEMPERATURE


def concept_distillation_loss(region_feats: Tensor,
                              concept_pool: Tensor,
                              teacher_probs: Tensor,
                              temperature: float = REGIONCLIP_TEMPERATURE) -> Tensor:
    r"""KL divergence from the teacher's concept distribution to the student's.

    With the student's :math:`q_i = \mathrm{softmax}(\langle \hat r_i, \hat c_k \rangle_k / \tau)`
    over the C concepts and the teacher's :math:`p_i`, the loss is
    :math:`\frac{1}{K} \sum_i \sum_k p_{ik} (\log p_{ik} - \log q_{ik})` (terms with
    :math:`p_{ik} = 0` count 0). The official code takes ``softmax(...).log()``; ``log_softmax``
    gives the same value without its underflow.

    Args:
        region_feats (Tensor): Student region features, shape (K, D).
        concept_pool (Tensor): The concept embeddings, shape (C, D).
        teacher_probs (Tensor): The teacher's distribution over the pool per region, shape
            (K, C), rows summing to 1 (:func:`mmclim.models.utils.pseudo_concept_labels`).
        temperature (float): Divides the student's cosine similarities. Defaults to
            :data:`REGIONCLIP_TEMPERATURE`.

    Returns:
        Tensor: Scalar loss in float32 (float64 for float64 inputs); 0 connected to
        ``region_feats`` when K == 0.
    """
    if region_feats.dim() != 2 or concept_pool.dim() != 2 or (region_feats.shape[1]
                                                              != concept_pool.shape[1]):
        raise ValueError(f'region_feats {tuple(region_feats.shape)} and concept_pool '
                         f'{tuple(concept_pool.shape)} must have shapes (K, D) and (C, D)')
    if teacher_probs.shape != (region_feats.shape[0], concept_pool.shape[0]):
        raise ValueError(f'teacher_probs must have shape (K, C) = ({region_feats.shape[0]}, '
                         f'{concept_pool.shape[0]}), got {tuple(teacher_probs.shape)}')
    if not temperature > 0:
        raise ValueError(f'temperature must be positive, got {temperature!r}')
    dtype = torch.promote_types(region_feats.dtype, torch.float32)
    with torch.autocast(region_feats.device.type, enabled=False):
        if region_feats.shape[0] == 0:
            return region_feats.sum() * 0.0
        logits = (F.normalize(region_feats.to(dtype), dim=1)
                  @ F.normalize(concept_pool.to(dtype), dim=1).t() / temperature)
        return F.kl_div(logits.log_softmax(dim=1), teacher_probs.to(dtype),
                        reduction='batchmean')


@MODELS.register_module()
class ConceptDistillLoss(nn.Module):
    """RegionCLIP's region-score distillation; see :func:`concept_distillation_loss`.

    Args:
        temperature (float): Divides the student's cosine similarities. Defaults to 0.01
            (RegionCLIP ``MODEL.CLIP.CLSS_TEMP``).
        loss_weight (float): Weight of the loss. Defaults to 1.0 (RegionCLIP sums its three
            losses unweighted).
    """

    def __init__(self, temperature: float = REGIONCLIP_TEMPERATURE,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'{type(self).__name__}.temperature: expected a positive number, '
                             f'got {temperature!r}')
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, region_feats: Tensor, concept_pool: Tensor,
                teacher_probs: Tensor) -> Tensor:
        """The weighted loss; arguments as :func:`concept_distillation_loss`'s."""
        return self.loss_weight * concept_distillation_loss(region_feats, concept_pool,
                                                            teacher_probs, self.temperature)

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'
