# Copyright (c) mmclim contributors. All rights reserved.
"""Contrastive loss between pseudo-region features and caption embeddings.

CLIM (paper section "Aligning Region and Text Representations") trains the feature of each pseudo
region of a mosaic to be similar to the embedding of its image's caption and dissimilar to the
other captions, with the symmetric InfoNCE loss of CLIP.
"""
import hashlib
from numbers import Real
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.dist import get_world_size
from torch import Tensor

from mmclim.models.utils.all_gather import all_gather_with_grad

# Bytes of the blake2b digest of a caption kept as its id: 8 bytes fill an int64.
CAPTION_ID_BYTES = 8
# Byte order used to read the digest as an integer; fixed so that ids agree across machines.
CAPTION_ID_BYTE_ORDER = 'little'
# The two directions of the symmetric loss (region->text and text->region) are averaged.
NUM_DIRECTIONS = 2


def caption_ids_from_texts(captions: Sequence[str],
                           device: Optional[Union[str, torch.device]] = None) -> Tensor:
    """Turn caption strings into ids for ``caption_ids``: equal strings get equal ids.

    The id is a blake2b hash of the UTF-8 string read as a signed int64, so it is the same in
    every process and on every machine (unlike Python's ``hash``, which is salted per process),
    as ids gathered across ranks must be. Strings are compared exactly; normalise them (case,
    whitespace) before calling if captions that differ only in that should count as equal. Two
    different captions get the same id with probability about 2**-64 per pair.

    Args:
        captions (Sequence[str]): N caption strings.
        device (str | torch.device, optional): Device of the result. Defaults to None (CPU).

    Returns:
        Tensor: Ids of shape (N,), dtype int64.
    """
    ids = []
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f'captions[{index}] must be a str, got {type(caption).__name__}')
        digest = hashlib.blake2b(caption.encode('utf-8'), digest_size=CAPTION_ID_BYTES).digest()
        ids.append(int.from_bytes(digest, CAPTION_ID_BYTE_ORDER, signed=True))
    return torch.tensor(ids, dtype=torch.int64, device=device)


def _check_inputs(region_feats: Tensor, text_feats: Tensor, logit_scale: Union[Tensor, float],
                  caption_ids: Optional[Tensor]) -> None:
    """Raise a ValueError naming the argument whose shape, dtype or value is not as expected."""
    for name, feats in (('region_feats', region_feats), ('text_feats', text_feats)):
        if feats.dim() != 2:
            raise ValueError(f'{name} must be a 2-D tensor of shape (N, D), '
                             f'got shape {tuple(feats.shape)}')
    if region_feats.shape != text_feats.shape:
        raise ValueError(f'region_feats {tuple(region_feats.shape)} and text_feats '
                         f'{tuple(text_feats.shape)} must have the same shape (N, D): row i of '
                         'region_feats is paired with row i of text_feats')
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError('logit_scale must be a scalar (a tensor with one element), '
                             f'got shape {tuple(logit_scale.shape)}')
    elif not isinstance(logit_scale, Real) or logit_scale <= 0:
        raise ValueError(f'logit_scale must be a positive number or a scalar tensor, '
                         f'got {logit_scale!r}')
    if caption_ids is not None and (caption_ids.shape != region_feats.shape[:1]
                                    or caption_ids.dtype != torch.int64):
        raise ValueError(f'caption_ids must be an int64 tensor of shape ({region_feats.shape[0]},) '
                         f'(one id per row of region_feats), got shape '
                         f'{tuple(caption_ids.shape)} and dtype {caption_ids.dtype}')


def contrastive_caption_loss(region_feats: Tensor,
                             text_feats: Tensor,
                             logit_scale: Union[Tensor, float],
                             normalize: bool = True,
                             gather: bool = True,
                             caption_ids: Optional[Tensor] = None) -> Tensor:
    r"""Symmetric InfoNCE loss between region features and the text embeddings paired with them.

    Row i of ``region_feats`` is the positive of row i of ``text_feats`` and every other row is a
    negative. With logits :math:`s_{ij} = \text{logit\_scale} \cdot \langle r_i, t_j \rangle`,
    the loss is the mean of the region->text cross-entropy (row i of :math:`s` with label i) and
    the text->region cross-entropy (column j with label j), each averaged over the rows.

    **Duplicate captions.** If two rows carry the same caption, each row's text is a false
    negative of the other row's region. Given ``caption_ids``, the logits of columns whose id
    equals the row's own id, other than the positive itself, are set to -inf, i.e. removed from
    the softmax, in both directions. Ids are compared across the gathered batch, so under
    torch.distributed they must agree across processes, as those of
    :func:`caption_ids_from_texts` do.

    **Distributed.** With ``gather=True`` and an initialised process group of R ranks, the
    negatives come from every rank: the (normalised) features of all ranks are gathered with
    :func:`all_gather_with_grad`, and each rank computes the cross-entropy of its own N_r rows
    against all M = sum N_r gathered columns, in both directions, with labels offset by the
    number of rows of the lower ranks. The summed cross-entropy of the local rows is divided by
    2 * M / R (not by 2 * N_r). With equal N_r this is the local mean; for any N_r the mean over
    ranks of the returned losses equals the loss of one process holding all M rows, and, since
    the backward of the gather sums gradients over ranks, DDP's average of the parameter
    gradients equals that process's gradients. With unequal N_r a single rank's value is
    therefore the local mean scaled by R * N_r / M (0 on a rank without rows), which is what a
    logger showing rank 0 only displays. This is a collective call: every rank must call it,
    including a rank with N_r == 0, and either all or none pass ``caption_ids``. With
    ``gather=False``, or without a process group, each process uses only its own rows.

    Args:
        region_feats (Tensor): Region features, shape (N, D).
        text_feats (Tensor): Text embeddings, shape (N, D); row i is paired with row i of
            ``region_feats``.
        logit_scale (Tensor | float): Multiplier of the cosine similarities (or of the dot
            products when ``normalize=False``), positive, a Python number or a tensor with one
            element. It is used as given: with CLIP's learned ``logit_scale`` parameter (a log
            temperature), pass ``logit_scale.exp()`` (clamped as CLIP does if wanted), not the
            parameter itself.
        normalize (bool): L2-normalise the rows of both feature tensors first. Defaults to True.
        gather (bool): Under torch.distributed, take negatives from all ranks (see above).
            Defaults to True.
        caption_ids (Tensor, optional): Int64 caption id per row, shape (N,); rows with equal
            ids are not negatives of each other. Defaults to None (every other row is a
            negative).

    Returns:
        Tensor: Scalar loss, computed in float32 (float64 for float64 inputs) under any
        autocast. With N == 0 it is 0 and, when the inputs require grad, still has a ``grad_fn``
        connected to them (through the gather when other ranks have rows), so the rank's
        backward runs, including the gather's all-reduce, and DDP does not stall.
    """
    _check_inputs(region_feats, text_feats, logit_scale, caption_ids)
    # Float32 under any autocast: bfloat16 logits at a logit scale of 100 step by 0.25 to 0.5.
    dtype = torch.promote_types(region_feats.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(region_feats.device.type, enabled=False):
        if isinstance(logit_scale, Tensor):
            logit_scale = logit_scale.to(dtype)
        return _symmetric_info_nce(region_feats.to(dtype), text_feats.to(dtype), logit_scale,
                                   normalize, gather, caption_ids)


def _symmetric_info_nce(region_feats: Tensor, text_feats: Tensor, logit_scale: Union[Tensor, float],
                        normalize: bool, gather: bool, caption_ids: Optional[Tensor]) -> Tensor:
    """The body of :func:`contrastive_caption_loss`, on checked float32 or float64 inputs."""
    if normalize:
        region_feats = F.normalize(region_feats, dim=1)
        text_feats = F.normalize(text_feats, dim=1)
    num_rows, feat_dim = region_feats.shape
    if gather:
        # One gather for both, so a single all-reduce runs in the backward.
        all_feats, offset = all_gather_with_grad(torch.cat([region_feats, text_feats], dim=1))
        all_regions, all_texts = all_feats.split(feat_dim, dim=1)
        world_size = get_world_size()
    else:
        all_regions, all_texts, offset, world_size = region_feats, text_feats, 0, 1
    num_total = all_regions.shape[0]
    if num_total == 0:
        return (region_feats.sum() + text_feats.sum()) * 0.0

    labels = torch.arange(num_rows, device=region_feats.device) + offset
    region_logits = logit_scale * region_feats @ all_texts.t()
    text_logits = logit_scale * text_feats @ all_regions.t()
    if caption_ids is not None:
        all_ids = all_gather_with_grad(caption_ids)[0] if gather else caption_ids
        false_negatives = caption_ids[:, None] == all_ids[None, :]
        false_negatives[torch.arange(num_rows, device=labels.device), labels] = False
        region_logits = region_logits.masked_fill(false_negatives, float('-inf'))
        text_logits = text_logits.masked_fill(false_negatives, float('-inf'))
    loss_sum = (
        F.cross_entropy(region_logits, labels, reduction='sum') +
        F.cross_entropy(text_logits, labels, reduction='sum'))
    rows_per_rank = num_total / world_size
    return loss_sum / (NUM_DIRECTIONS * rows_per_rank)


@MODELS.register_module()
class CLIMCaptionLoss(nn.Module):
    """Symmetric InfoNCE loss between pseudo-region features and caption embeddings (CLIM).

    See :func:`contrastive_caption_loss` for the loss, the handling of duplicate captions and the
    distributed semantics.

    Args:
        normalize (bool): L2-normalise the features first. Defaults to True.
        gather (bool): Under torch.distributed, take negatives from all ranks. Defaults to True.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        logit_scale (float, optional): A fixed multiplier of the similarities, used when
            ``forward`` is given none (a detector's caption branch has no CLIP logit scale to
            pass). Defaults to None (``forward`` must be given one).
    """

    def __init__(self,
                 normalize: bool = True,
                 gather: bool = True,
                 loss_weight: float = 1.0,
                 logit_scale: Optional[float] = None) -> None:
        super().__init__()
        if logit_scale is not None and not logit_scale > 0:
            raise ValueError(f'{type(self).__name__}.logit_scale: expected a positive number or '
                             f'None, got {logit_scale!r}')
        self.normalize = normalize
        self.gather = gather
        self.loss_weight = loss_weight
        self.logit_scale = logit_scale

    def forward(self,
                region_feats: Tensor,
                text_feats: Tensor,
                logit_scale: Union[Tensor, float, None] = None,
                caption_ids: Optional[Tensor] = None) -> Tensor:
        """Compute the weighted loss.

        Args:
            region_feats (Tensor): Region features, shape (N, D).
            text_feats (Tensor): Text embeddings paired row by row with ``region_feats``,
                shape (N, D).
            logit_scale (Tensor | float, optional): Multiplier of the similarities, already
                exponentiated (CLIP's ``logit_scale.exp()``), a positive number or a one-element
                tensor. Defaults to None (the module's ``logit_scale``).
            caption_ids (Tensor, optional): Int64 caption id per row, shape (N,); rows with
                equal ids are not negatives of each other. Defaults to None.

        Returns:
            Tensor: Scalar loss multiplied by ``loss_weight``.
        """
        if logit_scale is None:
            if self.logit_scale is None:
                raise ValueError(f'{type(self).__name__}: no logit_scale given, and the module '
                                 'has none (set logit_scale in its config)')
            logit_scale = self.logit_scale
        return self.loss_weight * contrastive_caption_loss(
            region_feats,
            text_feats,
            logit_scale,
            normalize=self.normalize,
            gather=self.gather,
            caption_ids=caption_ids)

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return (f'normalize={self.normalize}, gather={self.gather}, '
                f'loss_weight={self.loss_weight}, logit_scale={self.logit_scale}')
