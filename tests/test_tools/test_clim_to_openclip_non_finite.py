# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/model_converters/clim_to_openclip.py`` never exports NaN or infinite weights."""
import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

# float16's largest finite value (IEEE 754 binary16: (2 - 2**-10) * 2**15).
FLOAT16_MAX = 65504.0


def _convert(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    """Run the converter's ``main`` in this process."""
    path = REPO_ROOT / 'tools' / 'model_converters' / 'clim_to_openclip.py'
    spec = importlib.util.spec_from_file_location('clim_to_openclip_under_test', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, 'argv', [str(path), *argv])
    tool.main()


def _checkpoint(path: Path, proj: torch.Tensor) -> Path:
    state_dict = {'clip.clip.logit_scale': torch.tensor(math.log(100.0)),
                  'clip.clip.visual.proj': proj,
                  'clip.clip.text_projection': torch.eye(2)}
    torch.save(dict(state_dict=state_dict, meta=dict(iter=1)), path)
    return path


def test_a_checkpoint_with_a_nan_tensor_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / 'iter_2.pth', torch.tensor([[1.0, math.nan], [0.0, 1.0]]))
    out = tmp_path / 'out.pt'
    with pytest.raises(ValueError, match=re.escape(
            f"refusing to convert {ckpt}: tensor 'clip.clip.visual.proj' holds 1 NaN")):
        _convert(monkeypatch, str(ckpt), str(out), '--alpha', '1')
    assert not out.exists()


def test_weights_that_overflow_float16_are_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    big = 2 * FLOAT16_MAX  # finite in float32, infinite in float16
    ckpt = _checkpoint(tmp_path / 'iter_2.pth', torch.tensor([[big, 0.0], [0.0, 1.0]]))
    out = tmp_path / 'out.pt'
    _convert(monkeypatch, str(ckpt), str(out), '--alpha', '1')  # float32: exported
    assert torch.load(out, weights_only=True)['visual.proj'][0, 0] == big
    out.unlink()
    with pytest.raises(ValueError, match=re.escape(
            f"refusing to write {out} (--dtype fp16): tensor 'visual.proj' holds 0 NaN and 1 "
            'infinite')):
        _convert(monkeypatch, str(ckpt), str(out), '--alpha', '1', '--dtype', 'fp16')
    assert not out.exists()
