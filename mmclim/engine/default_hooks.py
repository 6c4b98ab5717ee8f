# Copyright (c) mmclim contributors. All rights reserved.
"""Default hooks that every runner gets once ``import mmclim`` has run.

:func:`install_default_hooks` (called by ``import mmclim``) wraps mmengine's
``Runner.register_hooks`` so that the default hooks gain, besides mmengine's own
(``runtime_info``, ``timer``, ``logger``, ``checkpoint``, ...):

* ``non_finite_loss``: :class:`~mmclim.engine.hooks.NonFiniteLossHook` with ``action='stop'``.

A config configures it like mmengine's defaults: ``default_hooks = dict(non_finite_loss=dict(
action='skip'))`` (the type may be left out) or turns it off with ``non_finite_loss=None``. A
``NonFiniteLossHook`` listed in ``custom_hooks`` replaces the default one.
"""
import functools
from typing import Any, Dict, List, Optional, Union

from mmengine.hooks import Hook
from mmengine.runner import Runner

from .hooks import NonFiniteLossHook

NON_FINITE_LOSS_KEY = 'non_finite_loss'
HookCfg = Union[Hook, Dict[str, Any]]


def _is_non_finite_loss_hook(hook: Any) -> bool:
    if isinstance(hook, NonFiniteLossHook):
        return True
    if isinstance(hook, dict):
        kind = hook.get('type')
        return kind is NonFiniteLossHook or (isinstance(kind, str) and kind.split('.')[-1]
                                             == NonFiniteLossHook.__name__)
    return False


def with_mmclim_default_hooks(default_hooks: Optional[Dict[str, Optional[HookCfg]]],
                              custom_hooks: Optional[List[HookCfg]] = None
                              ) -> Dict[str, HookCfg]:
    """A config's ``default_hooks`` with mmclim's defaults added.

    Args:
        default_hooks (dict, optional): The config's ``default_hooks`` (name to hook, config or
            None).
        custom_hooks (list, optional): The config's ``custom_hooks``. Defaults to None.

    Returns:
        dict: ``default_hooks`` with ``non_finite_loss`` set to a ``NonFiniteLossHook`` config:
        the config's own entry (its ``type`` filled in when missing), or ``dict(type=
        NonFiniteLossHook)`` when it has none; the entry is dropped when it is None or when
        ``custom_hooks`` holds a ``NonFiniteLossHook``.
    """
    hooks = dict(default_hooks or {})
    entry = hooks.pop(NON_FINITE_LOSS_KEY, {})
    if entry is None or any(_is_non_finite_loss_hook(hook) for hook in custom_hooks or []):
        return hooks
    if isinstance(entry, dict) and 'type' not in entry:
        entry = dict(entry, type=NonFiniteLossHook)
    hooks[NON_FINITE_LOSS_KEY] = entry
    return hooks


def install_default_hooks() -> None:
    """Wrap ``Runner.register_hooks`` with :func:`with_mmclim_default_hooks`. Idempotent."""
    original = Runner.register_hooks
    if getattr(original, '_mmclim_default_hooks', False):
        return

    @functools.wraps(original)
    def register_hooks(self: Runner,
                       default_hooks: Optional[Dict[str, Optional[HookCfg]]] = None,
                       custom_hooks: Optional[List[HookCfg]] = None) -> None:
        original(self, with_mmclim_default_hooks(default_hooks, custom_hooks), custom_hooks)

    register_hooks._mmclim_default_hooks = True
    Runner.register_hooks = register_hooks
