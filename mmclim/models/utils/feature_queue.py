# Copyright (c) mmclim contributors. All rights reserved.
"""A per-process FIFO queue of past embeddings and their ids, for contrastive losses.

The caption losses of Detic and BARON as ported by CLIM (``ovdet/methods/queues.py``, ``Queues``)
add the embeddings of past iterations as extra rows or columns: newest first, at most ``size``,
detached, per GPU (never gathered).
"""
from numbers import Integral
from typing import Dict, Tuple

import torch
import torch.nn as nn
from torch import Tensor


class FeatureQueue(nn.Module):
    """A FIFO queue of embeddings (L, D) and their int64 ids (L,), newest first, L <= ``size``.

    ``feats`` and ``ids`` are non-persistent buffers: they follow ``.to(device)`` and are not in
    the ``state_dict`` (each rank has its own queue, and exported weights do not carry it). Each
    rank's queue is saved in the checkpoint's per-rank state instead (:meth:`rank_state_dict`,
    :mod:`mmclim.engine.exact_resume`), so a resume continues with it. The feature size D is set
    by the first :meth:`push` (an empty (0, 0) queue until then). Under DDP keep
    ``broadcast_buffers=False`` (MMEngine's default), or rank 0 would overwrite the other ranks'
    queues.

    Args:
        size (int): Maximum number of queued rows; 0 disables the queue. >= 0.
        name (str): What is queued (e.g. ``'captions'``), for error messages. Defaults to
            ``'features'``.
        feats_arg (str): The caller's name of the embeddings it passes, for error messages.
            Defaults to ``'feats'``.
        ids_arg (str): The caller's name of the ids it passes, for error messages. Defaults to
            ``'ids'``.
    """

    def __init__(self,
                 size: int,
                 name: str = 'features',
                 feats_arg: str = 'feats',
                 ids_arg: str = 'ids') -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, Integral) or size < 0:
            raise ValueError(f'queue_size must be an int >= 0 (0 disables the queue), got '
                             f'{size!r}')
        self.size = int(size)
        self.name = name
        self.feats_arg = feats_arg
        self.ids_arg = ids_arg
        self.register_buffer('feats', torch.zeros(0, 0), persistent=False)
        self.register_buffer('ids', torch.zeros(0, dtype=torch.int64), persistent=False)

    def __len__(self) -> int:
        """Number L of queued rows."""
        return self.ids.shape[0]

    def _check(self, feats: Tensor, ids: Tensor) -> None:
        """Raise a ValueError unless ``feats`` (M, D) and ``ids`` (M,) int64 fit the queue."""
        if feats.dim() != 2:
            raise ValueError(f'{self.feats_arg} must be a 2-D tensor of shape (M, D), got shape '
                             f'{tuple(feats.shape)}')
        if ids.dtype != torch.int64 or ids.shape != (feats.shape[0], ):
            raise ValueError(f'{self.ids_arg} must be an int64 tensor of shape '
                             f'({feats.shape[0]},), got shape {tuple(ids.shape)} and dtype '
                             f'{ids.dtype}')
        if len(self) > 0 and feats.shape[1] != self.feats.shape[1]:
            raise ValueError(f'{self.feats_arg} {tuple(feats.shape)}: feature size must be '
                             f'that of the queued {self.name}, {self.feats.shape[1]}')

    def extend(self, feats: Tensor, ids: Tensor) -> Tuple[Tensor, Tensor]:
        """The current rows followed by the queued ones (the queue is not changed).

        Args:
            feats (Tensor): Current embeddings, shape (M, D).
            ids (Tensor): Their int64 ids, shape (M,).

        Returns:
            tuple[Tensor, Tensor]: Embeddings (M + L, D) in the dtype and device of ``feats``
            (the queued rows carry no gradient), and ids (M + L,).
        """
        self._check(feats, ids)
        if len(self) == 0:
            return feats, ids
        return torch.cat([feats, self.feats.to(feats)]), torch.cat([ids, self.ids.to(ids)])

    @torch.no_grad()
    def push(self, feats: Tensor, ids: Tensor) -> None:
        """Put rows at the front of the queue; the oldest beyond ``size`` fall out.

        Row 0 of ``feats`` becomes queue row 0 (newest first, as the official
        ``dequeue_and_enqueue``); with more than ``size`` rows only the first ones are kept.

        Args:
            feats (Tensor): Embeddings, shape (M, D); stored detached (a copy).
            ids (Tensor): Their int64 ids, shape (M,).
        """
        self._check(feats, ids)
        if self.size == 0 or feats.shape[0] == 0:
            return
        new_feats, new_ids = feats.detach()[:self.size], ids[:self.size]
        if len(self) == 0:
            self.feats, self.ids = new_feats.clone(), new_ids.clone()
            return
        kept = self.size - new_ids.shape[0]
        self.feats = torch.cat([new_feats, self.feats[:kept].to(new_feats)])
        self.ids = torch.cat([new_ids, self.ids[:kept].to(new_ids)])

    def rank_state_dict(self) -> Dict[str, Tensor]:
        """This rank's queue: ``feats`` (L, D) and ``ids`` (L,), for the checkpoint."""
        return dict(feats=self.feats, ids=self.ids)

    def load_rank_state_dict(self, state: Dict[str, Tensor]) -> None:
        """Restore the queue from :meth:`rank_state_dict`'s output, on the queue's device."""
        feats, ids = state['feats'], state['ids']
        if feats.dim() != 2 or ids.shape != (feats.shape[0], ) or ids.shape[0] > self.size:
            raise ValueError(f'saved {self.name} queue of {tuple(feats.shape)} embeddings and '
                             f'{tuple(ids.shape)} ids does not fit a queue of size {self.size}')
        self.feats, self.ids = feats.to(self.feats.device), ids.to(self.ids.device)

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return f'size={self.size}, name={self.name!r}'
