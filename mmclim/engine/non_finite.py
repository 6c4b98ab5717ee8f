# Copyright (c) mmclim contributors. All rights reserved.
"""Find the tensors holding NaN or infinity in a nested checkpoint.

One function, used wherever a state is about to leave the process: the checkpoint writer
(:mod:`mmclim.engine.safe_checkpoint`) and ``tools/model_converters/clim_to_openclip.py`` refuse a
state with a non-finite tensor and name the first one. Integer and boolean tensors are always
finite and are not inspected.
"""
from typing import Any, Iterator, Optional, Tuple

import torch
from torch import Tensor

# Joins the keys of nested containers in a tensor's name: 'optimizer/state/0/momentum_buffer'.
# A state dict's own keys hold dots, so the separator is not a dot.
NAME_SEPARATOR = '/'


class NonFiniteTensorError(ValueError):
    """A state to be written (a checkpoint, a converted model) holds NaN or infinity."""


def iter_tensors(tree: Any, prefix: str = '') -> Iterator[Tuple[str, Tensor]]:
    """The tensors inside nested dicts, lists and tuples, in order, with their names.

    Args:
        tree: A tensor, or a dict / list / tuple nesting them; other leaves are skipped.
        prefix (str): Name of ``tree`` itself. Defaults to ``''``.

    Yields:
        tuple[str, Tensor]: The name (keys joined with ``'/'``) and the tensor.
    """
    if isinstance(tree, Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from iter_tensors(value, f'{prefix}{NAME_SEPARATOR}{key}' if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from iter_tensors(value, f'{prefix}{NAME_SEPARATOR}{index}' if prefix
                                    else str(index))


def count_non_finite(tensor: Tensor) -> Tuple[int, int]:
    """How many NaN and how many infinite values a tensor holds.

    Args:
        tensor (Tensor): Any shape and dtype; integer and boolean tensors count ``(0, 0)``.

    Returns:
        tuple[int, int]: ``(nan, inf)`` counts.
    """
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.device.type == 'meta':
        return 0, 0
    tensor = tensor.detach()
    return int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())


def first_non_finite(tree: Any) -> Optional[Tuple[str, Tensor]]:
    """The first tensor, in :func:`iter_tensors` order, holding NaN or infinity.

    Args:
        tree: A tensor or nested containers of tensors (a state dict, a checkpoint).

    Returns:
        tuple[str, Tensor] | None: Its name and the tensor, or None when every tensor is finite.
    """
    for name, tensor in iter_tensors(tree):
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.device.type != 'meta' \
                and not bool(torch.isfinite(tensor.detach()).all()):
            return name, tensor
    return None


def assert_finite(tree: Any, action: str) -> None:
    """Raise :class:`NonFiniteTensorError` naming the first non-finite tensor of ``tree``.

    Args:
        tree: A tensor or nested containers of tensors.
        action (str): What is refused, the start of the message, naming the file (e.g.
            ``'refusing to write checkpoint work_dirs/x/iter_3.pth'``).

    Raises:
        NonFiniteTensorError: ``'<action>: tensor 'state_dict/w' holds 2 NaN and 0 infinite
            value(s) of 6 (shape (2, 3), torch.float32)'``.
    """
    found = first_non_finite(tree)
    if found is None:
        return
    name, tensor = found
    nan, inf = count_non_finite(tensor)
    raise NonFiniteTensorError(
        f'{action}: tensor {name!r} holds {nan} NaN and {inf} infinite value(s) of '
        f'{tensor.numel()} (shape {tuple(tensor.shape)}, {tensor.dtype})')
