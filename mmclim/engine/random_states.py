# Copyright (c) mmclim contributors. All rights reserved.
"""The process-wide random generators a training step draws from, as checkpointable data.

A step draws from Python's ``random``, numpy's global ``RandomState``, torch's CPU generator
and each CUDA device's generator. :func:`capture_random_states` records all of them in types
that ``torch.load(weights_only=True)`` reads (ints, floats, strings, lists, tensors) and
:func:`restore_random_states` sets them back. :func:`isolated_random_states` runs a block
without moving them, and :class:`RandomStream` is a private set of the three CPU generators
that a block draws from instead of the process's: the training data in the main process, so
that replaying the data after a resume leaves the model's draws alone.
"""
import contextlib
import hashlib
import random
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

# Keys of a captured state.
PYTHON, NUMPY, TORCH, CUDA = 'python', 'numpy', 'torch', 'cuda'

# The three CPU generators as their own getters return them.
CpuStates = Tuple[tuple, tuple, torch.Tensor]


def _capture_cpu() -> CpuStates:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _restore_cpu(states: CpuStates) -> None:
    python, numpy, torch_state = states
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(torch_state)


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture_random_states() -> Dict[str, Any]:
    """This process's generators, in types ``torch.load(weights_only=True)`` reads.

    Returns:
        dict: ``'python'`` (``random.getstate()`` with its tuple as a list), ``'numpy'``
        (``np.random.get_state()`` with the (624,) uint32 key as an int64 tensor), ``'torch'``
        (the CPU generator's uint8 state tensor) and ``'cuda'`` (one state tensor per visible
        device; empty when CUDA is not initialised).
    """
    (version, internal, gauss), numpy, torch_state = _capture_cpu()
    kind, key, pos, has_gauss, cached_gaussian = numpy
    return {
        PYTHON: [version, list(internal), gauss],
        NUMPY: [kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss),
                float(cached_gaussian)],
        TORCH: torch_state,
        CUDA: list(torch.cuda.get_rng_state_all()) if _cuda_in_use() else [],
    }


def restore_random_states(states: Dict[str, Any]) -> None:
    """Set this process's generators to ``states`` from :func:`capture_random_states`.

    The CUDA states are set when CUDA is available, for as many devices as both have.

    Args:
        states (dict): A captured state.
    """
    version, internal, gauss = states[PYTHON]
    kind, key, pos, has_gauss, cached_gaussian = states[NUMPY]
    _restore_cpu(((version, tuple(internal), gauss),
                  (kind, key.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian),
                  states[TORCH].cpu()))
    cuda: Sequence[torch.Tensor] = states[CUDA]
    if cuda and torch.cuda.is_available():
        for device in range(min(len(cuda), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda[device].cpu(), device)


@contextlib.contextmanager
def isolated_random_states() -> Iterator[None]:
    """Run a block, then put every generator back as it was before it (the block's draws do not
    count for the code after it)."""
    states = capture_random_states()
    try:
        yield
    finally:
        restore_random_states(states)


class RandomStream:
    """A private Python, numpy and torch CPU generator that ``with stream:`` blocks draw from.

    Inside the block, ``random``, ``np.random`` and torch's default CPU generator are the
    stream's; on leaving, the stream keeps where its generators got to and the process's are
    back as they were. So the draws of the code inside depend only on the seed and on what ran
    inside earlier blocks, not on what the rest of the process drew in between. Not re-entrant.

    Args:
        entropy (Sequence[int]): Non-negative ints seeding the stream (``np.random.SeedSequence``),
            e.g. ``(seed, rank, purpose)``.
    """

    def __init__(self, entropy: Sequence[int]) -> None:
        python_seed, numpy_seed, torch_seed = (
            int(value) for value in np.random.SeedSequence([int(e) for e in entropy])
            .generate_state(3))
        self._states: CpuStates = (random.Random(python_seed).getstate(),
                                   np.random.RandomState(numpy_seed).get_state(),
                                   torch.Generator().manual_seed(torch_seed).get_state())
        self._outer: Optional[CpuStates] = None

    def __enter__(self) -> 'RandomStream':
        if self._outer is not None:
            raise RuntimeError('RandomStream blocks cannot be nested')
        self._outer = _capture_cpu()
        _restore_cpu(self._states)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._states = _capture_cpu()
        outer, self._outer = self._outer, None
        _restore_cpu(outer)

    def digest(self) -> str:
        """sha256 (hex) of where the stream's generators are: equal digests, equal futures."""
        (version, internal, gauss), numpy, torch_state = self._states
        kind, key, pos, has_gauss, cached_gaussian = numpy
        parts: List[bytes] = [
            repr((version, internal, gauss, kind, pos, has_gauss, cached_gaussian)).encode(),
            key.tobytes(),
            torch_state.numpy().tobytes()
        ]
        return hashlib.sha256(b'\0'.join(parts)).hexdigest()
