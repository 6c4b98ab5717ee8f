# Copyright (c) mmclim contributors. All rights reserved.
import math

import pytest
import torch
from mmengine.optim.scheduler import CosineAnnealingLR

from mmclim.engine import WarmupCosineLR

BASE_LR = 1e-5


def official_cosine_lr(step: int, warmup: int, steps: int) -> float:
    """open_clip's training/scheduler.py ``cosine_lr`` as the official CLIM code uses it."""
    if step < warmup:
        return BASE_LR * (step + 1) / warmup
    e, es = step - warmup, steps - warmup
    return 0.5 * (1 + math.cos(math.pi * e / es)) * BASE_LR


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)


def test_steps_follow_the_official_schedule() -> None:
    optimizer = _optimizer()
    scheduler = WarmupCosineLR(optimizer, warmup_iters=10, by_epoch=False, begin=0, end=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]['lr'])
        scheduler.step()
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(official_cosine_lr(step, 10, 100), rel=1e-9, abs=1e-15), step


def test_epoch_schedule_is_converted_to_steps() -> None:
    """With ``convert_to_iter_based`` the end is in epochs, the warm-up in steps."""
    optimizer = _optimizer()
    scheduler = WarmupCosineLR.build_iter_from_epoch(optimizer, warmup_iters=5, begin=0, end=3,
                                                     by_epoch=True, epoch_length=20)
    assert scheduler.T_max == 60 and scheduler.warmup_iters == 5
    lrs = []
    for _ in range(60):
        lrs.append(optimizer.param_groups[0]['lr'])
        scheduler.step()
    assert lrs == pytest.approx([official_cosine_lr(s, 5, 60) for s in range(60)], rel=1e-9)


def test_it_is_a_cosine_annealing_schedule_and_rejects_bad_warmups() -> None:
    assert issubclass(WarmupCosineLR, CosineAnnealingLR)
    with pytest.raises(ValueError, match='warmup_iters: 100 warm-up steps leave no step'):
        WarmupCosineLR(_optimizer(), warmup_iters=100, by_epoch=False, begin=0, end=100)
    with pytest.raises(ValueError, match='warmup_iters: expected a positive int'):
        WarmupCosineLR(_optimizer(), warmup_iters=0, by_epoch=False, begin=0, end=100)
