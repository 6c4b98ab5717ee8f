# Copyright (c) mmclim contributors. All rights reserved.
"""Detic's max-size proposal: the region of a pseudo box that its image-level labels train.

Detic (Zhou et al., 2022) applies the image-label loss to the largest RPN proposal of an image.
CLIM's official port (``ovdet/ovdet/methods/detic/detic_tags.py``, ``sample``) does it per pseudo
box of a mosaic: proposals are assigned to the pseudo box that covers most of them, the top
scored ones are clamped to the box, and the largest is kept.
"""
from numbers import Integral, Real

import torch
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor

# OV-COCO and OV-LVIS sampling settings of the official port (ovdet/configs/detic/ov_coco/
# detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py L74: sampling_cfg=dict(topk=128, iof_thr=0.3)).
DEFAULT_TOPK = 128
DEFAULT_IOF_THR = 0.3


def _check_boxes(name: str, boxes: Tensor) -> None:
    """Raise a ValueError unless ``boxes`` has shape (K, 4)."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f'{name} must have shape (K, 4) (x1, y1, x2, y2), got '
                         f'{tuple(boxes.shape)}')


def max_size_proposal(proposals: Tensor,
                      scores: Tensor,
                      pseudo_boxes: Tensor,
                      topk: int = DEFAULT_TOPK,
                      iof_thr: float = DEFAULT_IOF_THR) -> Tensor:
    """The largest of the top-scored proposals inside each pseudo box, clamped to it.

    1. Each proposal is assigned to the pseudo box with the highest IoF, the intersection over
       the proposal's own area (ties: the first box), and kept if that IoF is > ``iof_thr``.
    2. Per pseudo box, the ``topk`` highest-scored of its proposals are kept.
    3. These are clamped to the pseudo box, and the one of largest clamped area is returned
       (ties: the higher score). A pseudo box without any kept proposal returns itself.

    Unlike the official code, which clamps the proposals in place, the inputs are not modified.

    Args:
        proposals (Tensor): Proposals ``(x1, y1, x2, y2)``, shape (P, 4).
        scores (Tensor): Their scores (e.g. RPN objectness), shape (P,).
        pseudo_boxes (Tensor): Pseudo boxes ``(x1, y1, x2, y2)``, shape (G, 4), e.g. the
            extents of the images pasted into a mosaic.
        topk (int): Proposals kept per pseudo box, by score. Defaults to 128.
        iof_thr (float): Minimum IoF (exclusive) of a proposal with its pseudo box, in [0, 1).
            Defaults to 0.3.

    Returns:
        Tensor: Shape (G, 4), dtype and device of ``proposals``: row g is the max-size
        proposal of ``pseudo_boxes[g]``, or that pseudo box itself.
    """
    _check_boxes('proposals', proposals)
    _check_boxes('pseudo_boxes', pseudo_boxes)
    if scores.shape != proposals.shape[:1]:
        raise ValueError(f'scores must have shape ({proposals.shape[0]},) (one per proposal), got '
                         f'{tuple(scores.shape)}')
    if isinstance(topk, bool) or not isinstance(topk, Integral) or topk < 1:
        raise ValueError(f'topk must be a positive int, got {topk!r}')
    if isinstance(iof_thr, bool) or not isinstance(iof_thr, Real) or not 0 <= iof_thr < 1:
        raise ValueError(f'iof_thr must be a number in [0, 1), got {iof_thr!r}')

    pseudo_boxes = pseudo_boxes.to(proposals)
    num_proposals, num_boxes = proposals.shape[0], pseudo_boxes.shape[0]
    if num_proposals == 0 or num_boxes == 0:
        return pseudo_boxes.clone()

    # mmdet's 'iof' divides the intersection by the area of its first argument: the proposal.
    iofs = bbox_overlaps(proposals, pseudo_boxes, mode='iof')  # (P, G)
    max_iofs, box_ids = iofs.max(dim=1)
    assigned = (box_ids[None, :] == torch.arange(num_boxes, device=box_ids.device)[:, None]) & (
        max_iofs > iof_thr)[None, :]  # (G, P)

    # Top-k by score among each box's proposals; unassigned ones are pushed below every score.
    masked_scores = scores.to(proposals)[None, :].expand(num_boxes, -1).masked_fill(
        ~assigned, float('-inf'))
    num_kept = min(int(topk), num_proposals)
    top_inds = masked_scores.topk(num_kept, dim=1).indices  # (G, k), best score first
    kept = assigned.gather(1, top_inds)  # (G, k)

    candidates = proposals[top_inds]  # (G, k, 4), a copy
    lower = pseudo_boxes[:, None, :2].repeat(1, 1, 2)  # (x1, y1, x1, y1) of each box
    upper = pseudo_boxes[:, None, 2:].repeat(1, 1, 2)  # (x2, y2, x2, y2)
    candidates = torch.minimum(torch.maximum(candidates, lower), upper)
    sizes = (candidates[..., 2:] - candidates[..., :2]).clamp(min=0)
    areas = (sizes[..., 0] * sizes[..., 1]).masked_fill(~kept, -1.0)
    # argmax returns the first maximum, i.e. the highest-scored of equal areas.
    best = areas.argmax(dim=1)
    chosen = candidates[torch.arange(num_boxes, device=best.device), best]
    return torch.where(kept.any(dim=1, keepdim=True), chosen, pseudo_boxes)
