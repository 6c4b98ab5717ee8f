# Copyright (c) mmclim contributors. All rights reserved.
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmclim  # noqa: F401  (applies the allow-list on import)


class _Untrusted:
    """A type no allow-list names: unpickling it must stay refused."""

    def __reduce__(self):
        return (print, ('this must never run',))


def _message_hub_checkpoint(path: Path) -> None:
    hub = MessageHub.get_instance('mmclim_test_checkpoint_compat')
    for step in range(3):
        hub.update_scalar('train/loss', 1.0 / (step + 1))
    hub.update_info('iter', 3)
    torch.save(dict(message_hub=hub.state_dict(), meta=dict(seed=np.int64(0), iter=3),
                    state_dict=dict(weight=torch.ones(2))), path)


def test_message_hub_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / 'ckpt.pth'
    _message_hub_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    np.testing.assert_allclose(buffer.data[0], [1.0, 0.5, 1 / 3])
    assert ckpt['meta']['seed'] == 0


def test_untrusted_globals_stay_refused(tmp_path: Path) -> None:
    path = tmp_path / 'evil.pth'
    torch.save(dict(payload=_Untrusted()), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_getattr_stand_in_refuses_other_attributes(tmp_path: Path) -> None:
    """A checkpoint that uses ``getattr`` to reach anything but a statistics method fails."""
    class _Walk:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'walk.pth'
    torch.save(dict(payload=_Walk()), path)
    with pytest.raises(pickle.UnpicklingError, match='only HistoryBuffer statistics'):
        torch.load(path, weights_only=True)
