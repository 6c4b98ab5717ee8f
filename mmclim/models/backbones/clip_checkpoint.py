# Copyright (c) mmclim contributors. All rights reserved.
"""Reading and writing CLIP weights from local files.

Two layouts are read:

* OpenAI's released ``.pt`` files: TorchScript archives (their parameters and buffers) or plain
  state dicts, with fp16 weights and the metadata entries ``input_resolution``,
  ``context_length`` and ``vocab_size``;
* open_clip checkpoints: a state dict, possibly nested under ``state_dict`` and possibly with the
  ``module.`` prefix of (Distributed)DataParallel.

Weights are data: nothing in a checkpoint is run. TorchScript archives are read from their zip by
:func:`~.torchscript_archive.read_torchscript_state_dict` (never ``torch.jit.load``, which runs
the archive's code); other files by ``torch.load(weights_only=True)``, whose unpickler rebuilds
tensors and containers and refuses every other global not allow-listed with
``torch.serialization.add_safe_globals``.

open_clip's ``CLIP`` uses OpenAI's key names (``visual.*``, ``transformer.*``,
``token_embedding.weight``, ``positional_embedding``, ``ln_final.*``, ``text_projection``,
``logit_scale``), which is why :func:`save_clip_checkpoint` writes the model's own state dict.
"""
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Dict, List

import torch
from torch import Tensor, nn

from .torchscript_archive import read_torchscript_state_dict

# Entries of OpenAI's state dicts that describe the model rather than hold weights.
OPENAI_METADATA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
# Where open_clip's training script nests the weights, and the prefix (Distributed)DataParallel
# adds to every key.
NESTED_STATE_DICT_KEY = 'state_dict'
DATA_PARALLEL_PREFIX = 'module.'
# The record every TorchScript archive has and plain ``torch.save`` files lack.
TORCHSCRIPT_RECORD = 'constants.pkl'
# BatchNorm fills in a missing counter itself (OpenAI's ResNet weights may lack it).
OPTIONAL_KEY_SUFFIX = 'num_batches_tracked'


def _is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``) rather than ``torch.save``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rsplit('/', 1)[-1] == TORCHSCRIPT_RECORD for name in archive.namelist())


def read_clip_state_dict(path: str) -> Dict[str, Tensor]:
    """Read CLIP weights from a local OpenAI or open_clip checkpoint.

    Nothing in the file is run (see the module docstring).

    Args:
        path (str): A TorchScript archive (read as data, without ``torch.jit.load``), or a file
            written by ``torch.save`` holding a state dict, possibly nested under ``state_dict``
            and possibly with ``module.`` prefixes (read with ``weights_only=True``).

    Returns:
        Dict[str, Tensor]: The weights under open_clip ``CLIP`` (= OpenAI) key names, in the
        checkpoint's dtype, without OpenAI's metadata entries.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        pickle.UnpicklingError: The file asks for a global outside the allow-list; the message
            names the file and the global.
        ValueError: The file holds no state dict, or is a TorchScript archive whose weights
            cannot be read without running it (the message says how to convert it).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'CLIP checkpoint {path!r} does not exist')
    if _is_torchscript_archive(path):
        state_dict = read_torchscript_state_dict(path)
    else:
        try:
            state_dict = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f'CLIP checkpoint {path!r} is refused: it is not plain '
                                         f'weights ({error})') from error
    if not isinstance(state_dict, dict):
        raise ValueError(f'CLIP checkpoint {path!r}: expected a state dict, got '
                         f'{type(state_dict).__name__}')
    if isinstance(state_dict.get(NESTED_STATE_DICT_KEY), dict):
        state_dict = state_dict[NESTED_STATE_DICT_KEY]
    if state_dict and all(key.startswith(DATA_PARALLEL_PREFIX) for key in state_dict):
        state_dict = {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in state_dict.items()}
    return OrderedDict((key, value) for key, value in state_dict.items()
                       if key not in OPENAI_METADATA_KEYS)


def _first_mismatch(path: str, checkpoint: Dict[str, Tensor], expected: Dict[str, Tensor],
                    ignored: List[str]) -> str:
    """Describe the first key (model order, then checkpoint order) on which the two disagree."""
    problems = []
    for key, value in expected.items():
        if key not in checkpoint:
            if not key.endswith(OPTIONAL_KEY_SUFFIX):
                problems.append(f'key {key!r} is missing from the checkpoint')
        elif checkpoint[key].shape != value.shape:
            problems.append(f'key {key!r} has shape {tuple(checkpoint[key].shape)} in the '
                            f'checkpoint but {tuple(value.shape)} in the model')
    problems.extend(f'key {key!r} of the checkpoint is not in the model' for key in checkpoint
                    if key not in expected and key not in ignored)
    if not problems:
        return ''
    return (f'CLIP checkpoint {path!r} does not match the model architecture: first mismatched '
            f'{problems[0]} ({len(problems)} mismatched keys in all)')


def load_clip_checkpoint(model: nn.Module, path: str) -> None:
    """Load local CLIP weights into an open_clip ``CLIP`` model, strictly.

    Floating-point weights are cast to the model's dtype (OpenAI's fp16 weights become fp32).
    Checkpoint entries that are non-persistent buffers of the model (``attn_mask``, which
    TorchScript archives store) are skipped.

    Args:
        model (nn.Module): An open_clip ``CLIP`` model.
        path (str): See :func:`read_clip_state_dict`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A key is missing, unexpected or of another shape; the message names the path
            and the first such key (with both shapes for a shape mismatch).
    """
    checkpoint = read_clip_state_dict(path)
    expected = model.state_dict()
    non_persistent = [name for name, _ in model.named_buffers() if name not in expected]
    mismatch = _first_mismatch(path, checkpoint, expected, non_persistent)
    if mismatch:
        raise ValueError(mismatch)
    model.load_state_dict(
        {key: value.to(expected[key].dtype) if value.is_floating_point() else value
         for key, value in checkpoint.items() if key in expected})


def save_clip_checkpoint(model: nn.Module, path: str, dtype: torch.dtype = torch.float16) -> None:
    """Save the weights of an open_clip ``CLIP`` model as an OpenAI-format state dict.

    Args:
        model (nn.Module): An open_clip ``CLIP`` model.
        path (str): Output file, written with ``torch.save``.
        dtype (torch.dtype): dtype of the floating-point weights; OpenAI released fp16.
            Defaults to torch.float16.
    """
    state_dict = OrderedDict(
        (key, value.detach().to(dtype) if value.is_floating_point() else value.detach())
        for key, value in model.state_dict().items())
    torch.save(state_dict, path)
