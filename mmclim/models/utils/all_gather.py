# Copyright (c) mmclim contributors. All rights reserved.
"""All-gather with gradient over ``torch.distributed``, for ranks holding different numbers of rows.

``torch.distributed.all_gather`` neither propagates gradients nor accepts tensors of different
shapes on different ranks. A contrastive loss needs both: each rank holds as many region features
as its images have pseudo regions, and the negatives of one rank are the positives of another, so
gradients must flow back to the rank that produced each row.
"""
from typing import List, Tuple

import torch
import torch.distributed as dist
from mmengine.dist import get_dist_info
from torch import Tensor


class _AllGatherRows(torch.autograd.Function):
    """Concatenate the rows of every rank; the backward sums the gradient over ranks and returns
    this rank the gradient of its own rows."""

    @staticmethod
    def forward(ctx, tensor: Tensor, sizes: List[int], rank: int) -> Tensor:
        """Gather ``tensor`` (N_r, ...) of every rank r into (sum N_r, ...).

        Args:
            tensor (Tensor): Rows of this rank, shape (N_rank, ...), contiguous.
            sizes (list[int]): N_r of every rank r, in rank order.
            rank (int): Rank of this process.

        Returns:
            Tensor: Rows of all ranks in rank order, shape (sum N_r, ...).
        """
        ctx.sizes = sizes
        ctx.rank = rank
        # all_gather needs the same shape on every rank: pad to the largest count, then strip.
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[:tensor.shape[0]] = tensor
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded)
        return torch.cat([buffer[:size] for buffer, size in zip(buffers, sizes)])

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tuple[Tensor, None, None]:
        """Sum the gradient of the gathered rows over ranks and keep this rank's rows.

        Every rank's loss may depend on every rank's rows, so the gradient of this rank's rows is
        the sum over ranks of each rank's gradient for them.

        Args:
            grad_output (Tensor): Gradient of this rank's loss w.r.t. the gathered rows,
                shape (sum N_r, ...).

        Returns:
            tuple: Gradient for this rank's rows, shape (N_rank, ...), then None for ``sizes``
            and ``rank``.
        """
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        offset = sum(ctx.sizes[:ctx.rank])
        return grad[offset:offset + ctx.sizes[ctx.rank]], None, None


def all_gather_with_grad(tensor: Tensor) -> Tuple[Tensor, int]:
    """Gather the rows of ``tensor`` from all ranks, with gradient; ranks may hold different N_r.

    The row counts are gathered first, every rank's rows are padded to the largest count,
    gathered, and the padding is stripped. The backward all-reduces (sums) the gradient of the
    gathered rows over ranks and returns to each rank the slice of its own rows, so that after
    DDP averages parameter gradients over ranks they equal the gradient of the mean over ranks of
    the per-rank losses.

    This is a collective call: every rank of the default process group must call it, in the same
    order relative to other collectives, also a rank with N_r == 0, with tensors that agree in
    dtype, device type and every dimension but the first. The backward is a collective too; it
    runs on every rank whose loss depends on the result. If every rank has N_r == 0, nothing but
    the counts is communicated and ``tensor`` is returned.

    Without an initialised process group, or with a world size of 1, this is the identity.

    Args:
        tensor (Tensor): Rows of this rank, shape (N_rank, ...).

    Returns:
        tuple[Tensor, int]: The rows of all ranks in rank order, shape (sum N_r, ...), and the
        offset of this rank's first row in them (sum of N_r of the lower ranks; 0 without a
        process group), e.g. to turn local indices into labels of the gathered rows.
    """
    if tensor.dim() == 0:
        raise ValueError('all_gather_with_grad: tensor must have at least one dimension (rows), '
                         'got a 0-d tensor')
    rank, world_size = get_dist_info()
    if world_size == 1:
        return tensor, 0
    local_size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    size_buffers = [torch.empty_like(local_size) for _ in range(world_size)]
    dist.all_gather(size_buffers, local_size)
    sizes = [int(size.item()) for size in size_buffers]
    offset = sum(sizes[:rank])
    if max(sizes) == 0:
        return tensor, offset
    return _AllGatherRows.apply(tensor.contiguous(), sizes, rank), offset
