# Copyright (c) mmclim contributors. All rights reserved.
"""Default hooks that every runner gets once ``import mmclim`` has run.

:func:`install_default_hooks` (called by ``import mmclim``) wraps mmengine's
``Runner.register_hooks`` so that the default hooks gain, besides mmengine's own
(``runtime_info``, ``timer``, ``logger``, ``checkpoint``, ...):

* ``non_finite_loss``: :class:`~mmclim.engine.hooks.NonFiniteLossHook` with ``action='stop'``;
* ``exact_resume``: :class:`~mmclim.engine.hooks.ExactResumeHook`.

A config configures them like mmengine's defaults: ``default_hooks = dict(non_finite_loss=dict(
action='skip'))`` (the type may be left out) or turns one off with ``non_finite_loss=None``. A
hook of the same class listed in ``custom_hooks`` replaces the default one.
"""
import functools
from typing import Any, Dict, List, Optional, Type, Union

from mmengine.hooks import Hook
from mmengine.runner import Runner

from .hooks import ExactResumeHook, NonFiniteLossHook

# default_hooks key -> the class of the default hook.
MMCLIM_DEFAULT_HOOKS: Dict[str, Type[Hook]] = dict(
    non_finite_loss=NonFiniteLossHook, exact_resume=ExactResumeHook)
HookCfg = Union[Hook, Dict[str, Any]]


def _is_hook_of(hook: Any, cls: Type[Hook]) -> bool:
    """Whether ``hook`` (a hook or its config) is a ``cls``."""
    if isinstance(hook, cls):
        return True
    if isinstance(hook, dict):
        kind = hook.get('type')
        return kind is cls or (isinstance(kind, str) and kind.split('.')[-1] == cls.__name__)
    return False


def with_mmclim_default_hooks(default_hooks: Optional[Dict[str, Optional[HookCfg]]],
                              custom_hooks: Optional[List[HookCfg]] = None
                              ) -> Dict[str, HookCfg]:
    """A config's ``default_hooks`` with mmclim's defaults (:data:`MMCLIM_DEFAULT_HOOKS`) added.

    Args:
        default_hooks (dict, optional): The config's ``default_hooks`` (name to hook, config or
            None).
        custom_hooks (list, optional): The config's ``custom_hooks``. Defaults to None.

    Returns:
        dict: ``default_hooks`` with each of mmclim's keys set to a config of its hook: the
        config's own entry (its ``type`` filled in when missing), or ``dict(type=<class>)`` when
        it has none; the entry is dropped when it is None or when ``custom_hooks`` holds a hook
        of that class.
    """
    hooks = dict(default_hooks or {})
    for key, cls in MMCLIM_DEFAULT_HOOKS.items():
        entry = hooks.pop(key, {})
        if entry is None or any(_is_hook_of(hook, cls) for hook in custom_hooks or []):
            continue
        if isinstance(entry, dict) and 'type' not in entry:
            entry = dict(entry, type=cls)
        hooks[key] = entry
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
