# Copyright (c) mmclim contributors. All rights reserved.
"""Make the reference LVIS API (``lvis==0.5.3``) run under numpy>=1.24.

``lvis.eval.LVISEval.accumulate`` casts with ``np.float``, an alias numpy 1.24 removed, so
mmdet's ``LVISMetric`` crashes. We give ``lvis.eval`` (and only it) a view of numpy that still has
the removed scalar aliases, each mapped to the builtin it always meant. numpy itself is not
modified, and LVIS's own arithmetic runs unchanged, so results are the reference API's.
"""
import builtins
import types
from typing import Any

import numpy as np

# The aliases numpy 1.24 removed; each was the builtin of the same name.
REMOVED_NUMPY_ALIASES = ('bool', 'float', 'int', 'object', 'str')


class _NumpyWithRemovedAliases(types.ModuleType):
    """numpy, plus the scalar aliases of :data:`REMOVED_NUMPY_ALIASES`."""

    def __init__(self) -> None:
        super().__init__('numpy')
        for alias in REMOVED_NUMPY_ALIASES:
            setattr(self, alias, getattr(builtins, alias))

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def patch_lvis_numpy_aliases() -> bool:
    """Give ``lvis.eval`` a numpy with the removed aliases, when numpy lacks them.

    Returns:
        bool: True if ``lvis.eval`` was patched (or already was), False when lvis is not
        installed or numpy still has the aliases.
    """
    if hasattr(np, 'float'):
        return False
    try:
        import lvis.eval
    except ImportError:
        return False
    if not isinstance(lvis.eval.np, _NumpyWithRemovedAliases):
        lvis.eval.np = _NumpyWithRemovedAliases()
    return True
