# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP's pseudo region-text pairs: each proposal labelled with the teacher's top concept."""
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

# microsoft/RegionCLIP clip_rcnn.py get_psuedo_concept_labels: the teacher's softmax temperature
# (s_temp=0.01, hard-coded) and configs/pretrain/RegionCLIP_RN50.yaml MODEL.CLIP.CONCEPT_THRES.
TEACHER_TEMPERATURE = 0.01
CONCEPT_THRESHOLD = 0.1


class PseudoConcepts(NamedTuple):
    """The teacher's reading of P regions against a pool of C concepts.

    Attributes:
        probs (Tensor): Softmax over the pool per region, shape (P, C).
        labels (Tensor): Index of each region's top concept, int64 (P,).
        keep (Tensor): Regions that become region-concept pairs, bool (P,).
    """
    probs: Tensor
    labels: Tensor
    keep: Tensor


def pseudo_concept_labels(region_feats: Tensor,
                          concept_pool: Tensor,
                          temperature: float = TEACHER_TEMPERATURE,
                          threshold: float = CONCEPT_THRESHOLD) -> PseudoConcepts:
    """Label regions with the concept the teacher finds most similar.

    The teacher's region features and the concepts are L2-normalised, their cosine
    similarities divided by ``temperature`` and turned into a softmax over the pool; a region's
    pseudo label is its top concept, and it is kept when that concept's probability exceeds
    ``threshold``. If no region passes, all are kept (the official fallback,
    ``keep_regions = max_scores > 0.0``).

    Args:
        region_feats (Tensor): The teacher's region features, shape (P, D).
        concept_pool (Tensor): Concept text embeddings, shape (C, D).
        temperature (float): Divides the similarities. Defaults to
            :data:`TEACHER_TEMPERATURE`.
        threshold (float): Least top probability of a kept region. Defaults to
            :data:`CONCEPT_THRESHOLD`.

    Returns:
        PseudoConcepts: Probabilities (P, C), labels (P,) and the kept mask (P,).
    """
    if region_feats.dim() != 2 or concept_pool.dim() != 2 or (region_feats.shape[1]
                                                              != concept_pool.shape[1]):
        raise ValueError(f'region_feats {tuple(region_feats.shape)} and concept_pool '
                         f'{tuple(concept_pool.shape)} must have shapes (P, D) and (C, D)')
    if not temperature > 0:
        raise ValueError(f'temperature must be positive, got {temperature!r}')
    logits = (F.normalize(region_feats.float(), dim=1)
              @ F.normalize(concept_pool.float(), dim=1).t() / temperature)
    probs = logits.softmax(dim=1)
    top, labels = probs.max(dim=1)
    keep = top > threshold
    if not keep.any():
        keep = top > 0.0
    return PseudoConcepts(probs, labels, keep)
