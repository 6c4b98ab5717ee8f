# Copyright (c) mmclim contributors. All rights reserved.
"""The one check of "derive, do not type": numbers a module determines are filled into the
configs of the modules built from it, and a config that types them is refused."""
from typing import Any, Dict, Mapping


def with_derived(cfg: Mapping, field: str, source: str, **derived: Any) -> Dict[str, Any]:
    """``cfg`` with the values that ``source`` determines filled in.

    Args:
        cfg (Mapping): A module config.
        field (str): How the error names the config, e.g. ``'FVLM.neck'``.
        source (str): What determines the values, e.g. ``'the backbone'``.
        **derived: The values, e.g. ``in_channels=[768] * 4``.

    Returns:
        dict: A copy of ``cfg`` with ``derived`` added.

    Raises:
        ValueError: ``cfg`` sets one of them; the message names the field, the keys and the
            derived values.
    """
    typed = sorted(key for key in derived if key in cfg)
    if typed:
        raise ValueError(f'{field}: {typed} follow from {source} '
                         f'({", ".join(f"{k}={derived[k]!r}" for k in typed)}); remove them '
                         'from the config')
    return dict(cfg, **derived)
