# Copyright (c) mmclim contributors. All rights reserved.
"""Resume mmengine checkpoints under torch>=2.6, where ``torch.load`` defaults to
``weights_only=True``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so torch's restricted unpickler
refuses the non-tensor objects that mmengine itself writes into a checkpoint (the message hub's
``HistoryBuffer`` objects and the numpy arrays and scalars inside them). Rather than turning the
restricted unpickler off, we allow-list exactly those types: every other global in a checkpoint is
still refused, so loading an untrusted local checkpoint (resume, ``load_from``, ``tools/test.py``)
cannot run arbitrary code, and a TorchScript archive is refused by ``torch.load`` itself. Two
exceptions remain outside this module's reach: the environment variable
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns the restricted unpickler off for every ``torch.load``
that does not pass ``weights_only`` (all of mmengine's), and mmengine's downloads (``http(s)://``,
``torchvision://``, ``open-mmlab://``, ``mmcls://``, ...) go through ``torch.hub``'s
``load_state_dict_from_url``, which defaults to ``weights_only=False``;
:func:`load_url_checkpoints_as_data` closes the latter.

``HistoryBuffer.__getstate__`` also stores its statistics methods, which pickle writes as
``getattr(HistoryBuffer, 'min')``. Allow-listing the builtin ``getattr`` would let a checkpoint walk
to any attribute of any allowed object, so the name ``builtins.getattr`` is mapped to
:func:`history_buffer_statistic` instead, which resolves those methods and nothing else.
"""
import pickle
from typing import Any, List, Optional

import numpy as np
import torch
from mmengine.config import ConfigDict
from mmengine.logging import HistoryBuffer


def history_buffer_statistic(owner: Any, name: str) -> Any:
    """Stand-in for ``getattr`` when unpickling: only ``HistoryBuffer``'s statistics methods.

    Args:
        owner: The object whose attribute the checkpoint asks for; must be ``HistoryBuffer``.
        name (str): The attribute; must name a registered statistics method (``min``, ``max``,
            ``current``, ``mean`` or one added with ``HistoryBuffer.register_statistics``).

    Returns:
        Callable: The statistics method.
    """
    methods = HistoryBuffer._statistics_methods
    if owner is not HistoryBuffer or methods.get(name) is not getattr(HistoryBuffer, name, None):
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics '
            f'methods {sorted(methods)} are allowed')
    return methods[name]


def mmengine_checkpoint_globals() -> List[object]:
    """The types and functions mmengine writes into checkpoints, besides tensors.

    Returns:
        list: Globals safe to unpickle: mmengine's ``HistoryBuffer`` and ``ConfigDict``, numpy's
        array and scalar reconstruction with the concrete dtype classes, and
        :func:`history_buffer_statistic` registered under the name ``builtins.getattr``.
    """
    HistoryBuffer()  # registers the default statistics methods on the class
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [type(np.dtype(name)) for name in np.sctypeDict.values()
                     if np.dtype(name).kind in 'biufcSUV?']
    return [
        HistoryBuffer,
        ConfigDict,
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(set(dtype_classes), key=lambda cls: cls.__name__),
        (history_buffer_statistic, 'builtins.getattr'),
    ]


def allow_mmengine_checkpoint_types() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load(weights_only=True)``.

    Idempotent. No-op on torch versions without ``torch.serialization.add_safe_globals``.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_checkpoint_globals())


def load_url_weights_only(url: str,
                          model_dir: Optional[str] = None,
                          map_location: Any = None,
                          progress: bool = True,
                          **kwargs: Any) -> Any:
    """mmengine's ``load_url`` with ``weights_only=True`` (``torch.hub`` defaults to False).

    Args:
        url (str): The checkpoint's URL.
        model_dir (str, optional): Where downloads are cached. Defaults to None (torch's hub dir).
        map_location: See ``torch.load``. Defaults to None.
        progress (bool): Show a progress bar. Defaults to True.
        **kwargs: Further arguments of ``torch.hub.load_state_dict_from_url``.

    Returns:
        Any: The checkpoint, read by the restricted unpickler.
    """
    return torch.hub.load_state_dict_from_url(url, model_dir=model_dir, map_location=map_location,
                                              progress=progress, weights_only=True, **kwargs)


def load_url_checkpoints_as_data() -> None:
    """Make mmengine read downloaded checkpoints with ``weights_only=True``.

    mmengine 0.10.7's loaders for ``http(s)://``, ``torchvision://``, ``open-mmlab://``,
    ``openmmlab://``, ``modelzoo://`` and ``mmcls://`` all call
    ``mmengine.runner.checkpoint.load_url``, which is ``torch.hub.load_state_dict_from_url``
    with its default ``weights_only=False``: a downloaded checkpoint could run code. This
    replaces that one name with :func:`load_url_weights_only`. Idempotent.
    """
    from mmengine.runner import checkpoint
    checkpoint.load_url = load_url_weights_only
