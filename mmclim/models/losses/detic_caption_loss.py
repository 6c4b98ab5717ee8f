# Copyright (c) mmclim contributors. All rights reserved.
"""Detic's caption loss: a multi-positive binary cross-entropy between regions and captions.

Detic (Zhou et al., 2022) trains the feature of a whole-image region to score its image's caption
above the other captions of the batch, with a per-pair sigmoid (BCE) rather than a softmax. CLIM's
official mmdet port (``ovdet/ovdet/methods/detic/detic_caption.py``) applies it to the pseudo
regions of a mosaic and labels a (region, caption) pair positive when the caption's image is among
the region's images, so a composed region of several mosaic cells has several positives.
"""
import hashlib
from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from mmclim.models.utils.feature_queue import FeatureQueue

# Padding of ``region_image_ids`` rows that hold fewer image ids than the widest row.
IMAGE_ID_PAD = -1
# Bytes of the blake2b digest of an image id's text kept as its integer id.
IMAGE_ID_BYTES = 8
# Byte order used to read the digest; fixed so that ids agree across processes and machines.
IMAGE_ID_BYTE_ORDER = 'little'
# The digest is masked to 63 bits so that every id is a non-negative int64 (the pad is negative).
IMAGE_ID_MASK = (1 << 63) - 1

# OV-COCO settings of the official port: ovdet/configs/detic/ov_coco/
# detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py L65-71 (``detic_caption``).
COCO_LOGIT_SCALE = 25.0  # norm_temp
COCO_BIAS = -20.0  # bce_bias, an nn.Parameter there (detic_caption.py L31-34)
COCO_NEG_WEIGHT = 0.125  # cap_neg_weight
COCO_QUEUE_SIZE = 256  # queue_cfg.lengths
COCO_BASE_BATCH_SIZE = 4  # base_batch_size
COCO_CAPTION_WEIGHT = 0.1  # caption_weight

# Used when ``bias=None`` (the official ``bce_bias=None``, as on OV-LVIS): a fixed zero.
NO_BIAS = 0.0


def image_ids_to_tensor(ids: Sequence[Union[int, str]],
                        device: Optional[Union[str, torch.device]] = None) -> Tensor:
    """Turn image ids (ints or strings) into non-negative int64 ids: equal ids map to equal ints.

    One rule for every id: the id's text (``str(id)``, so the decimal digits of an int) is hashed
    with blake2b, 8 bytes read little-endian and masked to 63 bits. Hence the int ``5`` and the
    string ``'5'`` are the same image (as when one loader reads COCO ids as ints and another as
    strings), every result is >= 0 (never the pad :data:`IMAGE_ID_PAD`), and the ids are equal in
    every process and on every machine (unlike Python's salted ``hash``), as ids compared with a
    queue filled in earlier iterations must be. Ints are hashed too, so ids from this helper must
    not be mixed with raw ints in one loss: use it for all the ids of a run or for none. Two
    different ids collide with probability about 2**-63 per pair.

    Args:
        ids (Sequence[int | str]): N image ids; ints (Python or numpy integers, not bools) or
            strings.
        device (str | torch.device, optional): Device of the result. Defaults to None (CPU).

    Returns:
        Tensor: Ids of shape (N,), dtype int64, all >= 0.
    """
    values = []
    for index, image_id in enumerate(ids):
        if isinstance(image_id, bool) or not isinstance(image_id, (Integral, str)):
            raise TypeError(f'ids[{index}] must be an int or a str, got '
                            f'{type(image_id).__name__} {image_id!r}')
        text = image_id if isinstance(image_id, str) else str(int(image_id))
        digest = hashlib.blake2b(text.encode('utf-8'), digest_size=IMAGE_ID_BYTES).digest()
        values.append(int.from_bytes(digest, IMAGE_ID_BYTE_ORDER) & IMAGE_ID_MASK)
    return torch.tensor(values, dtype=torch.int64, device=device)


def check_scalar(name: str, value: Union[Tensor, float], positive: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a one-element tensor or a real
    number (> 0 if ``positive``).

    Args:
        name (str): The argument's name, for the message.
        value (Tensor | float): A number or a tensor of any shape with one element.
        positive (bool): Require a number > 0 (a tensor is not checked). Defaults to False.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f'{name} must be a number or a tensor with one element, got shape '
                             f'{tuple(value.shape)}')
    elif not isinstance(value, Real) or (positive and value <= 0):
        kind = 'a positive number' if positive else 'a real number'
        raise ValueError(f'{name} must be {kind} or a one-element tensor, got {value!r}')


def check_neg_weight(neg_weight: float) -> None:
    """Raise a ValueError unless ``neg_weight`` is a number >= 0.

    Args:
        neg_weight (float): The weight of the negative pairs of a Detic loss.
    """
    if isinstance(neg_weight, bool) or not isinstance(neg_weight, Real) or neg_weight < 0:
        raise ValueError(f'neg_weight must be a non-negative number, got {neg_weight!r}')


def make_logit_bias(bias: Optional[float], learn_bias: bool) -> Union[nn.Parameter, float]:
    """The bias added to the logits of the Detic losses, as the official ``bce_bias``.

    Args:
        bias (float, optional): Its (initial) value; None is a fixed :data:`NO_BIAS` (0).
        learn_bias (bool): Return an ``nn.Parameter`` of shape () initialised to ``bias``;
            otherwise the number itself. Ignored when ``bias`` is None.

    Returns:
        nn.Parameter | float: The bias.
    """
    if bias is None:
        return NO_BIAS
    if isinstance(bias, bool) or not isinstance(bias, Real):
        raise ValueError(f'bias must be a number or None, got {bias!r}')
    return nn.Parameter(torch.tensor(float(bias))) if learn_bias else float(bias)


def check_loss_settings(logit_scale: float, neg_weight: float,
                        base_batch_size: Optional[int]) -> None:
    """Raise a ValueError naming the setting of a Detic loss module that is out of range.

    Args:
        logit_scale (float): Must be a positive number.
        neg_weight (float): Must be a number >= 0.
        base_batch_size (int, optional): Must be a positive int or None.
    """
    check_scalar('logit_scale', logit_scale, positive=True)
    if isinstance(logit_scale, Tensor):
        raise ValueError(f'logit_scale must be a number, got a tensor {logit_scale!r}')
    check_neg_weight(neg_weight)
    if base_batch_size is not None and (isinstance(base_batch_size, bool)
                                        or not isinstance(base_batch_size, Integral)
                                        or base_batch_size <= 0):
        raise ValueError(f'base_batch_size must be a positive int or None, got '
                         f'{base_batch_size!r}')


def _check_inputs(region_feats: Tensor, text_feats: Tensor, region_image_ids: Tensor,
                  text_image_ids: Tensor, logit_scale: Union[Tensor, float],
                  bias: Union[Tensor, float], neg_weight: float) -> None:
    """Raise a ValueError naming the argument whose shape, dtype or value is not as expected."""
    for name, feats in (('region_feats', region_feats), ('text_feats', text_feats)):
        if feats.dim() != 2:
            raise ValueError(f'{name} must be a 2-D tensor, got shape {tuple(feats.shape)}')
    if region_feats.shape[1] != text_feats.shape[1]:
        raise ValueError(f'region_feats {tuple(region_feats.shape)} and text_feats '
                         f'{tuple(text_feats.shape)} must have the same feature size D')
    num_regions, num_texts = region_feats.shape[0], text_feats.shape[0]
    if (region_image_ids.dtype != torch.int64 or region_image_ids.dim() != 2
            or region_image_ids.shape[0] != num_regions):
        raise ValueError(f'region_image_ids must be an int64 tensor of shape ({num_regions}, K) '
                         f'(the image ids of each row of region_feats, padded with '
                         f'{IMAGE_ID_PAD}), got shape {tuple(region_image_ids.shape)} and dtype '
                         f'{region_image_ids.dtype}')
    if text_image_ids.dtype != torch.int64 or text_image_ids.shape != (num_texts, ):
        raise ValueError(f'text_image_ids must be an int64 tensor of shape ({num_texts},) (the '
                         f'image id of each row of text_feats), got shape '
                         f'{tuple(text_image_ids.shape)} and dtype {text_image_ids.dtype}')
    if ((region_image_ids < 0) & (region_image_ids != IMAGE_ID_PAD)).any():
        raise ValueError(f'region_image_ids: image ids must be >= 0 (or the pad {IMAGE_ID_PAD}), '
                         f'got {region_image_ids.min().item()}')
    if (text_image_ids < 0).any():
        raise ValueError(f'text_image_ids: image ids must be >= 0, got '
                         f'{text_image_ids.min().item()}')
    check_scalar('logit_scale', logit_scale, positive=True)
    check_scalar('bias', bias)
    check_neg_weight(neg_weight)


def detic_caption_loss(region_feats: Tensor, text_feats: Tensor, region_image_ids: Tensor,
                       text_image_ids: Tensor, logit_scale: Union[Tensor, float],
                       bias: Union[Tensor, float], neg_weight: float) -> Tensor:
    r"""Multi-positive BCE between region features and caption embeddings (Detic, CLIM port).

    With :math:`r_i` the L2-normalised region features and :math:`t_j` the caption embeddings,
    the logits are :math:`s_{ij} = \text{logit\_scale} \cdot \langle r_i, t_j \rangle + \text{bias}`
    and the pair (i, j) is positive when ``text_image_ids[j]`` is among ``region_image_ids[i]``
    (a composed region of several mosaic cells has several image ids; a duplicated image of a
    mosaic, or a queued caption of the same image, are positives too). The loss is

    .. math::
        \frac{1}{N} \sum_i \sum_j w_{ij} \, \text{BCE}(s_{ij}, y_{ij}),\quad
        w_{ij} = 1 / |\{j : y_{ij} = 1\}| \text{ if } y_{ij} = 1 \text{ else neg\_weight}.

    Args:
        region_feats (Tensor): Region features, shape (N, D); normalised here.
        text_feats (Tensor): Caption embeddings, shape (M, D), already L2-normalised (as CLIP's
            ``encode_text(normalize=True)`` gives them); used as given.
        region_image_ids (Tensor): Int64 image ids of each region, shape (N, K), padded with
            :data:`IMAGE_ID_PAD` (-1); ids must be >= 0.
        text_image_ids (Tensor): Int64 image id of each caption, shape (M,), >= 0.
        logit_scale (Tensor | float): Multiplier of the cosine similarities (Detic's
            ``norm_temp``), a positive number or a one-element tensor.
        bias (Tensor | float): Added to every logit, a number or a one-element tensor (a
            learnable parameter gets its gradient through it).
        neg_weight (float): Weight of each negative pair, >= 0.

    Returns:
        Tensor: Scalar loss, computed in float32 (float64 for float64 inputs) under any
        autocast. With N == 0 it is 0 and, when the inputs (or ``bias``) require grad, still has
        a ``grad_fn`` connected to them.

    Raises:
        ValueError: If a region has no positive caption (the official code asserts this): every
        region must have at least one caption of one of its images among the columns.
    """
    _check_inputs(region_feats, text_feats, region_image_ids, text_image_ids, logit_scale, bias,
                  neg_weight)
    labels = (region_image_ids[:, :, None] == text_image_ids[None, None, :].to(
        region_image_ids.device)).any(dim=1)
    num_pos = labels.sum(dim=1, keepdim=True)
    if (num_pos == 0).any():
        row = int((num_pos[:, 0] == 0).nonzero()[0, 0])
        raise ValueError(
            f'region_image_ids: region {row} (image ids '
            f'{region_image_ids[row].tolist()}) has no positive caption among the '
            f'{text_image_ids.shape[0]} columns (text_image_ids); every region needs a '
            'caption of one of its images')
    return weighted_cosine_bce(region_feats, text_feats, labels, 1.0 / num_pos,
                               neg_weight, logit_scale, bias)


def weighted_cosine_bce(region_feats: Tensor, column_feats: Tensor, targets: Tensor,
                        pos_weights: Union[Tensor, float], neg_weight: float,
                        logit_scale: Union[Tensor, float], bias: Union[Tensor, float]) -> Tensor:
    r"""The BCE core of Detic's caption and tag losses, on checked inputs.

    Logits :math:`s_{ij} = \text{logit\_scale} \cdot \langle \hat r_i, c_j \rangle +
    \text{bias}` (regions normalised here, columns used as given); the loss is
    :math:`\frac{1}{N} \sum_i \sum_j w_{ij} \text{BCE}(s_{ij}, y_{ij})` with ``pos_weights`` on
    the targets and ``neg_weight`` elsewhere.

    Args:
        region_feats (Tensor): Shape (N, D).
        column_feats (Tensor): Shape (M, D), unit rows (captions or class embeddings).
        targets (Tensor): Shape (N, M), 0 or 1 (bool or float).
        pos_weights (Tensor | float): Weight of the positives, broadcast to (N, M) (e.g. (N, 1)).
        neg_weight (float): Weight of the negatives.
        logit_scale (Tensor | float): Multiplier of the cosine similarities.
        bias (Tensor | float): Added to every logit.

    Returns:
        Tensor: Scalar loss, computed in float32 (float64 for float64 inputs) under any
        autocast; 0 with a ``grad_fn`` to the inputs (and a tensor ``bias``) when N == 0.
    """
    # Float32 under any autocast: at a logit scale of 25-50 and a bias of -20, bfloat16 logits
    # would step by 0.125 or more.
    dtype = torch.promote_types(region_feats.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(region_feats.device.type, enabled=False):
        if isinstance(logit_scale, Tensor):
            logit_scale = logit_scale.to(dtype).reshape(())
        if isinstance(bias, Tensor):
            bias = bias.to(dtype).reshape(())
        region_feats, column_feats = region_feats.to(dtype), column_feats.to(dtype)
        if region_feats.shape[0] == 0:
            zero = (region_feats.sum() + column_feats.sum()) * 0.0
            return zero + bias * 0.0 if isinstance(bias, Tensor) else zero
        targets = targets.to(device=region_feats.device, dtype=dtype)
        if isinstance(pos_weights, Tensor):
            pos_weights = pos_weights.to(device=region_feats.device, dtype=dtype)
        logits = logit_scale * F.normalize(region_feats, dim=1) @ column_feats.t() + bias
        weights = targets * pos_weights + neg_weight * (1.0 - targets)
        loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weights,
                                                  reduction='none')
        return loss.sum(dim=1).mean()


@MODELS.register_module()
class DeticCaptionLoss(nn.Module):
    """Detic's caption loss with a FIFO queue of past captions, as in CLIM's official port.

    See :func:`detic_caption_loss` for the loss. The columns are the current captions followed by
    the queued ones; after the loss, the current captions (detached) are pushed to the front of
    the queue, so it holds the newest ``queue_size`` captions, newest first. The loss is then
    multiplied by ``N / base_batch_size`` (N regions) when ``base_batch_size`` is set, and by
    ``loss_weight``.

    **Queue.** The queue (``queue``, a :class:`~mmclim.models.utils.FeatureQueue`; read it as
    ``queue_feats`` (L, D) and ``queue_image_ids`` (L,), L <= ``queue_size``) holds
    non-persistent buffers: it follows ``.to(device)``, is not saved in checkpoints and starts
    empty after a resume. It is per process and never gathered across GPUs: the
    official port (``ovdet/ovdet/methods/queues.py``) replaced the all-gather of the caption batch
    of the original Detic (``sync_caption_batch``) with this per-GPU queue, and we follow it.
    Under DDP keep ``broadcast_buffers=False`` (MMEngine's default), or rank 0 would overwrite
    the other ranks' queues. Call :meth:`enqueue` yourself with ``update_queue=False`` to compute
    the loss several times (e.g. at each stage of a cascade) and enqueue once.

    Args:
        logit_scale (float): Multiplier of the cosine similarities (``norm_temp``).
            Defaults to 25.0 (OV-COCO; 50.0 on OV-LVIS).
        bias (float, optional): Initial value of the bias added to every logit (``bce_bias``);
            None is a fixed 0. Defaults to -20.0 (OV-COCO; None on OV-LVIS).
        learn_bias (bool): Make the bias an ``nn.Parameter``; otherwise it is a fixed number.
            Ignored when ``bias`` is None. Defaults to True.
        neg_weight (float): Weight of each negative pair (``cap_neg_weight``). Defaults to 0.125.
        queue_size (int): Number of past captions kept as extra columns; 0 disables the queue.
            Defaults to 256.
        base_batch_size (int, optional): When set, the loss is multiplied by
            ``num_regions / base_batch_size``. Defaults to 4 (OV-COCO; None on OV-LVIS).
        loss_weight (float): Weight of the loss (``caption_weight``). Defaults to 0.1 (OV-COCO;
            1.0 on OV-LVIS).
    """

    def __init__(self,
                 logit_scale: float = COCO_LOGIT_SCALE,
                 bias: Optional[float] = COCO_BIAS,
                 learn_bias: bool = True,
                 neg_weight: float = COCO_NEG_WEIGHT,
                 queue_size: int = COCO_QUEUE_SIZE,
                 base_batch_size: Optional[int] = COCO_BASE_BATCH_SIZE,
                 loss_weight: float = COCO_CAPTION_WEIGHT) -> None:
        super().__init__()
        check_loss_settings(logit_scale, neg_weight, base_batch_size)
        self.logit_scale = float(logit_scale)
        self.bias = make_logit_bias(bias, learn_bias)
        self.neg_weight = float(neg_weight)
        self.base_batch_size = base_batch_size
        self.loss_weight = loss_weight
        self.queue = FeatureQueue(queue_size, name='captions', feats_arg='text_feats',
                                  ids_arg='text_image_ids')

    @property
    def queue_size(self) -> int:
        """Maximum number of queued captions."""
        return self.queue.size

    @property
    def queue_feats(self) -> Tensor:
        """The queued caption embeddings, shape (L, D), newest first."""
        return self.queue.feats

    @property
    def queue_image_ids(self) -> Tensor:
        """The image ids of the queued captions, shape (L,)."""
        return self.queue.ids

    def forward(self,
                region_feats: Tensor,
                text_feats: Tensor,
                region_image_ids: Tensor,
                text_image_ids: Tensor,
                update_queue: bool = True) -> Tensor:
        """Compute the weighted loss against the current and queued captions, then enqueue.

        Args:
            region_feats (Tensor): Region features, shape (N, D).
            text_feats (Tensor): L2-normalised embeddings of the current captions, shape (M, D).
            region_image_ids (Tensor): Int64 image ids of each region, shape (N, K), padded with
                :data:`IMAGE_ID_PAD` (-1); ids >= 0 (:func:`image_ids_to_tensor` for string ids).
            text_image_ids (Tensor): Int64 image id of each current caption, shape (M,).
            update_queue (bool): Push the current captions into the queue after the loss.
                Defaults to True.

        Returns:
            Tensor: Scalar loss, times ``N / base_batch_size`` if set, times ``loss_weight``.
        """
        columns, column_ids = self.queue.extend(text_feats, text_image_ids)
        loss = detic_caption_loss(region_feats, columns, region_image_ids, column_ids,
                                  self.logit_scale, self.bias, self.neg_weight)
        if update_queue:
            self.enqueue(text_feats, text_image_ids)
        if self.base_batch_size is not None:
            loss = loss * (region_feats.shape[0] / self.base_batch_size)
        return self.loss_weight * loss

    @torch.no_grad()
    def enqueue(self, text_feats: Tensor, text_image_ids: Tensor) -> None:
        """Push captions to the front of the queue; the oldest beyond ``queue_size`` fall out.

        Row 0 of ``text_feats`` becomes queue row 0 (newest first, as the official
        ``dequeue_and_enqueue``); with more than ``queue_size`` rows only the first ones are kept.

        Args:
            text_feats (Tensor): Caption embeddings, shape (M, D); stored detached (a copy).
            text_image_ids (Tensor): Int64 image id of each caption, shape (M,), >= 0.
        """
        # The queue checks the shapes and dtype; the ids must also be >= 0 (the pad is -1).
        if text_image_ids.dtype == torch.int64 and (text_image_ids < 0).any():
            raise ValueError(f'text_image_ids: image ids must be >= 0, got '
                             f'{text_image_ids.min().item()}')
        self.queue.push(text_feats, text_image_ids)

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        bias = 'learnable' if isinstance(self.bias, nn.Parameter) else self.bias
        return (f'logit_scale={self.logit_scale}, bias={bias}, neg_weight={self.neg_weight}, '
                f'queue_size={self.queue_size}, base_batch_size={self.base_batch_size}, '
                f'loss_weight={self.loss_weight}')
