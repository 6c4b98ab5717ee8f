# Copyright (c) mmclim contributors. All rights reserved.
"""The generators a step draws from are captured as data, restored, and isolated."""
import io
import random
from typing import List

import numpy as np
import pytest
import torch

from mmclim.engine import (RandomStream, capture_random_states, isolated_random_states,
                           restore_random_states)


def _draws() -> List[float]:
    """One draw from each CPU generator a step may use (numpy's normal caches a Gaussian)."""
    return [random.random(), float(np.random.normal()), float(np.random.normal()),
            float(torch.rand(()))]


def test_states_survive_a_weights_only_checkpoint_and_replay_the_draws() -> None:
    np.random.normal()  # leave a cached Gaussian in numpy's state
    states = capture_random_states()
    expected = _draws()
    buffer = io.BytesIO()
    torch.save(dict(meta=dict(states=states)), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)['meta']['states']
    _draws()
    restore_random_states(loaded)
    assert _draws() == expected


def test_isolated_blocks_leave_the_generators_where_they_were() -> None:
    states = capture_random_states()
    expected = _draws()
    restore_random_states(states)
    with isolated_random_states():
        _draws()
        torch.randn(10)
    assert _draws() == expected


def test_a_stream_depends_on_its_seed_and_its_own_blocks_only() -> None:
    states = capture_random_states()
    expected_outside = _draws()
    reference = RandomStream((0, 1, 2))
    with reference:
        first = _draws()
    with reference:
        second = _draws()
    assert first != second

    restore_random_states(states)
    stream = RandomStream((0, 1, 2))
    with stream:
        assert _draws() == first
    assert _draws() == expected_outside  # the process's draws did not move
    torch.randn(100)  # draws between blocks do not reach the stream
    with stream:
        assert _draws() == second
    assert stream.digest() == reference.digest() != RandomStream((0, 1, 2)).digest()
    with RandomStream((0, 2, 2)):
        assert _draws() != first


def test_stream_blocks_do_not_nest() -> None:
    stream = RandomStream((0, ))
    with stream, pytest.raises(RuntimeError, match='cannot be nested'):
        with stream:
            pass
