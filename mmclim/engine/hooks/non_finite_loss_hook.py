# Copyright (c) mmclim contributors. All rights reserved.
import functools
import math
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as torch_dist
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import Tensor

# The optimizer wrapper attribute that marks it as guarded (and by which hook).
GUARD_ATTR = '_mmclim_non_finite_loss_hook'


class NonFiniteLossError(FloatingPointError):
    """A training step's loss is NaN or infinite and the run was configured to stop."""


def all_ranks_finite(loss: Tensor) -> bool:
    """Whether ``loss`` is finite on every rank: the same answer on all of them.

    Under a process group of more than one rank the flag is all-reduced (MAX of "non-finite"),
    so that every rank skips or stops together; a rank deciding alone would leave the others
    waiting in DDP's gradient all-reduce.

    Args:
        loss (Tensor): This rank's loss, any shape.

    Returns:
        bool: True when no rank's loss holds NaN or infinity.
    """
    bad = (~torch.isfinite(loss.detach())).any().to(torch.float32).reshape(1)
    if torch_dist.is_available() and torch_dist.is_initialized() \
            and torch_dist.get_world_size() > 1:
        torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
    return not bool(bad.item())


def non_finite_terms(log_vars: Dict[str, Any]) -> Dict[str, float]:
    """The entries of a model's parsed loss dict (``log_vars``) that are NaN or infinite.

    Args:
        log_vars (dict[str, Tensor | float]): ``train_step``'s outputs: ``'loss'`` (the total)
            and each loss term.

    Returns:
        dict[str, float]: The non-finite entries, in order, as floats.
    """
    bad = {}
    for key, value in log_vars.items():
        if isinstance(value, Tensor):
            value = value.detach().float().mean().item() if value.numel() else 0.0
        if isinstance(value, (int, float)) and not math.isfinite(value):
            bad[key] = float(value)
    return bad


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop the run, or skip the step, when a training loss is NaN or infinite.

    Every runner built after ``import mmclim`` has this hook, with ``action='stop'``, as its
    default hook ``non_finite_loss`` (:func:`mmclim.engine.default_hooks.install_default_hooks`).
    A config changes it, or turns it off, through ``default_hooks``::

        default_hooks = dict(non_finite_loss=dict(action='skip'))  # skip such steps
        default_hooks = dict(non_finite_loss=None)                  # mmengine's behaviour

    Mechanism: ``before_train`` wraps the optimizer wrapper's ``update_params`` (the call in
    ``BaseModel.train_step`` and in mmengine's DDP wrapper that runs backward, the optimizer step
    and ``zero_grad``). When the total loss is not finite on some rank (all-reduced, see
    :func:`all_ranks_finite`) the wrapper does none of these, so the parameters, gradients and
    optimizer state stay as they were. ``after_train_iter`` (at the highest priority, before
    any hook logs or saves) then names the iteration and each non-finite key of the model's loss
    dict and, with ``'stop'``, raises :class:`NonFiniteLossError`, so no checkpoint of the step is
    written; with ``'skip'`` it logs a warning and drops those entries from the outputs, so the
    logged averages stay finite, and training goes on.

    Args:
        action (str): ``'stop'`` or ``'skip'``. Defaults to ``'stop'``.
    """

    priority = 'HIGHEST'  # before RuntimeInfoHook records the outputs in the message hub
    ACTIONS = ('stop', 'skip')

    def __init__(self, action: str = 'stop') -> None:
        if action not in self.ACTIONS:
            raise ValueError(f'{type(self).__name__}: default_hooks.non_finite_loss.action must be '
                             f'one of {self.ACTIONS}, got {action!r}')
        self.action = action
        self.skipped_iters: List[int] = []
        self._step_skipped = False

    def _guard(self, optim_wrapper: OptimWrapper) -> None:
        owner = getattr(optim_wrapper, GUARD_ATTR, None)
        if owner is self:
            return
        if owner is not None:
            raise RuntimeError(f'two {type(self).__name__}s guard the same optimizer wrapper; '
                               'configure it once, as default_hooks.non_finite_loss')
        update_params = optim_wrapper.update_params

        @functools.wraps(update_params)
        def guarded_update_params(loss: Tensor, *args: Any, **kwargs: Any) -> None:
            if all_ranks_finite(loss):
                return update_params(loss, *args, **kwargs)
            self._step_skipped = True  # no backward, no step: after_train_iter reports it

        optim_wrapper.update_params = guarded_update_params
        setattr(optim_wrapper, GUARD_ATTR, self)

    def before_train(self, runner: Any) -> None:
        """Guard the runner's optimizer wrapper(s)."""
        optim_wrapper = runner.optim_wrapper
        wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) \
            else [optim_wrapper]
        for wrapper in wrappers:
            self._guard(wrapper)

    def after_train_iter(self,
                         runner: Any,
                         batch_idx: int,
                         data_batch: Optional[Any] = None,
                         outputs: Optional[dict] = None) -> None:
        """Stop (raise) or skip after a step whose loss was not finite."""
        if not self._step_skipped:
            return
        self._step_skipped = False
        iteration = runner.iter + 1  # as the log's 'Iter(train) [k/N]'
        bad = non_finite_terms(outputs or {})
        terms = ', '.join(f'{key}={value}' for key, value in bad.items()) or \
            'none on this rank (another rank had a non-finite loss)'
        message = f'non-finite loss at iteration {iteration} (epoch {runner.epoch + 1}): {terms}'
        if self.action == 'stop':
            message += ('; stopping the run before the optimizer step, so no checkpoint of it '
                        "is written (default_hooks.non_finite_loss.action='skip' skips such "
                        'steps instead)')
            runner.logger.error(message)
            raise NonFiniteLossError(message)
        self.skipped_iters.append(iteration)
        runner.logger.warning(f'{message}; step skipped, the parameters are unchanged '
                              f'({len(self.skipped_iters)} step(s) skipped in this run)')
        for key in bad:
            outputs.pop(key)
