# Copyright (c) mmclim contributors. All rights reserved.
import math
from typing import List

from mmdet.registry import PARAM_SCHEDULERS
from mmengine.optim.scheduler import CosineAnnealingLR


@PARAM_SCHEDULERS.register_module()
class WarmupCosineLR(CosineAnnealingLR):
    """open_clip's ``cosine_lr``: linear warm-up over ``warmup_iters`` steps, then a cosine decay
    over the remaining steps, in closed form per step.

    At step ``t`` (counted from ``begin``; ``T`` steps in all, ``W`` = ``warmup_iters``) the
    learning rate is ``base * (t + 1) / W`` while ``t < W``, then
    ``eta_min + (base - eta_min) * (1 + cos(pi * (t - W) / (T - W))) / 2``: the schedule of the
    official CLIM training (``src/training/scheduler.py``, ``--warmup 1000``). mmengine's own
    ``LinearLR`` and ``CosineAnnealingLR`` cannot express it when the length of training is
    only known in epochs: the cosine would have to begin at step ``W``. Here ``T`` comes from
    ``end`` (in epochs with ``convert_to_iter_based=True``, turned into steps by mmengine), and
    the warm-up is always in steps.

    Args:
        optimizer: Wrapped optimizer.
        warmup_iters (int): Warm-up steps W, fewer than the schedule's steps.
        **kwargs: ``CosineAnnealingLR`` arguments (``begin``, ``end``, ``eta_min``,
            ``by_epoch``, ...); ``T_max`` defaults to ``end - begin``.
    """

    def __init__(self, optimizer, warmup_iters: int, **kwargs) -> None:
        if not (isinstance(warmup_iters, int) and warmup_iters >= 1):
            raise ValueError(f'{type(self).__name__}.warmup_iters: expected a positive int, got '
                             f'{warmup_iters!r}')
        self.warmup_iters = warmup_iters
        super().__init__(optimizer, **kwargs)
        if self.T_max <= warmup_iters:
            raise ValueError(f'{type(self).__name__}.warmup_iters: {warmup_iters} warm-up steps '
                             f'leave no step of the {self.T_max}-step schedule for the cosine')

    @classmethod
    def build_iter_from_epoch(cls, *args, warmup_iters: int, **kwargs):
        """Build from epochs (``convert_to_iter_based=True``); ``warmup_iters`` stays in steps."""
        return super().build_iter_from_epoch(*args, warmup_iters=warmup_iters, **kwargs)

    def _get_value(self) -> List[float]:
        """The learning rate of every parameter group at step ``self.last_step``."""
        step = self.last_step
        if step < self.warmup_iters:
            return [base * (step + 1) / self.warmup_iters for base in self.base_values]
        progress = (step - self.warmup_iters) / (self.T_max - self.warmup_iters)
        factor = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_values]
