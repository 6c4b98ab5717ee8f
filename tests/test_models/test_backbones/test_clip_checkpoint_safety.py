# Copyright (c) mmclim contributors. All rights reserved.
"""Weights are data: reading a checkpoint never runs anything from the file.

The expected state dicts come from ``torch.jit.load(...).state_dict()`` called here in the test
(never by the code under test); the hostile files are written here byte by byte or with
``__reduce__`` payloads whose effect (a marker file, a line on stdout) is checked directly.
"""
import os
import pickle
import shlex
import struct
import zipfile
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from mmengine.runner import checkpoint as mmengine_checkpoint
from torch import Tensor, nn

import mmclim  # noqa: F401  (allow-lists mmengine's checkpoint types, as at run time)
from mmclim.engine.checkpoint_compat import load_url_checkpoints_as_data, load_url_weights_only
from mmclim.models.backbones import OpenCLIPRegion, read_clip_state_dict
from mmclim.models.backbones.torchscript_archive import read_torchscript_state_dict
from mmclim.structures import load_class_embeddings

OPENAI_METADATA = dict(input_resolution=224, context_length=77, vocab_size=49408)


class _Leaf(nn.Module):
    """Buffers registered before and after a parameter, a bias-less Linear, odd dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer('index', torch.arange(5))  # int64, before the parameter
        self.weight = nn.Parameter(torch.randn(2, 3).half())
        self.register_buffer('flags', torch.tensor([True, False, True]))
        self.register_buffer('empty', torch.zeros(0))
        self.register_buffer('brain', torch.randn(3).bfloat16())
        self.proj = nn.Linear(3, 2, bias=False)
        self.not_state = torch.ones(1)  # a plain tensor attribute: neither parameter nor buffer
        self.depth = 2

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x) + self.weight.float().sum() + self.not_state


class _Tree(nn.Module):
    """Nesting (a Sequential of modules inside a module), a 0-dim parameter, shared storage."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.randn(4, 6, dtype=torch.float64)
        self.register_buffer('table', table)
        self.register_buffer('columns', table[:, ::2])  # a strided view of the same storage
        self.scale = nn.Parameter(torch.tensor(2.5))
        self.leaf = _Leaf()
        self.blocks = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Sequential(_Leaf()))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.leaf(x)) * self.scale


class _LoadTimeCode(nn.Module):
    """A module whose TorchScript ``__setstate__`` runs (and prints) inside ``torch.jit.load``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[Tensor, bool]) -> None:
        print('LOAD_TIME_CODE_RAN')
        self.weight = state[0]
        self.training = state[1]


class _Payload:
    """Pickles as a call of ``function(*args)``: what a hostile checkpoint runs on load."""

    def __init__(self, function: Callable, *args: object) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> Tuple[Callable, Tuple[object, ...]]:
        return (self.function, self.args)


def _bits(tensor: Tensor) -> Tensor:
    """The tensor's bytes (for bitwise comparison of any dtype, NaN and -0 included)."""
    return tensor.reshape(-1).contiguous().view(torch.uint8)


def _assert_same_state_dict(actual: Dict[str, Tensor], expected: Dict[str, Tensor]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert actual[key].shape == value.shape, key
        assert actual[key].stride() == value.stride(), key
        assert actual[key].device.type == 'cpu', key
        assert torch.equal(_bits(actual[key]), _bits(value)), key


def _forbid_torchscript_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way into ``torch.jit.load`` fail loudly."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError('torch.jit.load must not be called')

    monkeypatch.setattr(torch.jit, 'load', refuse)
    monkeypatch.setattr(torch._C, 'import_ir_module', refuse)
    monkeypatch.setattr(torch._C, 'import_ir_module_from_buffer', refuse)


def _scripted_archive(tmp_path: Path, name: str = 'tree.pt') -> str:
    torch.manual_seed(0)
    path = str(tmp_path / name)
    torch.jit.save(torch.jit.script(_Tree()), path)
    return path


def _archive_root(path: str) -> str:
    with zipfile.ZipFile(path) as archive:
        return next(n for n in archive.namelist() if n.endswith('/data.pkl')).split('/')[0]


def _rewrite_archive(source: str, target: str, replace: Dict[str, bytes]) -> None:
    """Copy a zip record by record, replacing (or adding) the records named in ``replace``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, 'w') as new:
        for info in old.infolist():
            new.writestr(info, replace.get(info.filename, old.read(info.filename)))
        for name in set(replace) - set(old.namelist()):
            new.writestr(name, replace[name])


def _unicode(text: str) -> bytes:
    """Pickle opcode BINUNICODE."""
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def _module_hiding_payload(marker: Path) -> bytes:
    """A protocol-2 pickle of a ``__torch__`` module whose attribute ``x`` is
    ``builtins.open(marker, 'w')``, written opcode by opcode."""
    return (b'\x80\x02' + b'c__torch__\nM\n' + b')\x81' + b'}(' + _unicode('x')
            + b'cbuiltins\nopen\n' + b'(' + _unicode(str(marker)) + _unicode('w') + b'tR'
            + b'u' + b'b' + b'.')


def _module_with_tensor(key: str, numel: int, size: int) -> bytes:
    """A protocol-2 pickle of a ``__torch__`` module whose attribute ``w`` is a float32 tensor of
    ``size`` elements on the storage record ``key`` of ``numel`` elements."""
    storage = (b'(' + _unicode('storage') + b'ctorch\nFloatStorage\n' + _unicode(key)
               + _unicode('cpu') + b'K' + bytes([numel]) + b't' + b'Q')
    tensor = (b'ctorch._utils\n_rebuild_tensor_v2\n(' + storage + b'K\x00' + b'(K'
              + bytes([size]) + b't' + b'(K\x01t' + b'\x89' + b'ccollections\nOrderedDict\n)R'
              + b'tR')
    return b'\x80\x02c__torch__\nM\n)\x81}(' + _unicode('w') + tensor + b'ub.'


# ---------------------------------------------------------------------------------------------
# TorchScript archives: the same tensors as torch.jit.load, without running it
# ---------------------------------------------------------------------------------------------


def test_scripted_archive_reads_like_torch_jit_load(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = _scripted_archive(tmp_path)
    expected = torch.jit.load(path, map_location='cpu').state_dict()
    # The reference covers what the reader must get right.
    assert {value.dtype for value in expected.values()} >= {
        torch.float16, torch.float32, torch.float64, torch.int64, torch.bool, torch.bfloat16}
    assert 'leaf.not_state' not in expected and 'blocks.2.0.proj.weight' in expected
    assert list(expected)[:3] == ['scale', 'table', 'columns']  # parameters first
    assert expected['columns'].stride() == (6, 2)

    _forbid_torchscript_loading(monkeypatch)
    _assert_same_state_dict(read_torchscript_state_dict(path), expected)
    _assert_same_state_dict(read_clip_state_dict(path), expected)


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_traced_fp16_clip_archive_reads_like_torch_jit_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout of OpenAI's releases: a traced fp16 CLIP with its metadata buffers."""
    torch.manual_seed(0)
    clip = OpenCLIPRegion('mmclim-tiny-vit').clip.eval().half()
    for key, value in OPENAI_METADATA.items():
        clip.__dict__.pop(key, None)  # open_clip keeps context_length as a plain int
        clip.register_buffer(key, torch.tensor(value))
    traced = torch.jit.trace_module(
        clip, {'encode_image': (torch.randn(1, 3, 224, 224).half(), )}, check_trace=False)
    path = str(tmp_path / 'ViT-tiny.pt')
    torch.jit.save(traced, path)
    expected = torch.jit.load(path, map_location='cpu').state_dict()
    assert {'visual.conv1.weight', 'logit_scale', 'attn_mask', *OPENAI_METADATA} <= set(expected)

    _forbid_torchscript_loading(monkeypatch)
    _assert_same_state_dict(read_torchscript_state_dict(path), expected)
    without_metadata = {k: v for k, v in expected.items() if k not in OPENAI_METADATA}
    _assert_same_state_dict(read_clip_state_dict(path), without_metadata)


def test_big_endian_archive_is_byteswapped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    little = str(tmp_path / 'little.pt')
    torch.jit.save(torch.jit.script(nn.Linear(3, 2)), little)  # float32 storages only
    expected = torch.jit.load(little, map_location='cpu').state_dict()
    root = _archive_root(little)
    with zipfile.ZipFile(little) as archive:
        swapped = {name: np.frombuffer(archive.read(name), '<f4').astype('>f4').tobytes()
                   for name in archive.namelist() if name.startswith(f'{root}/data/')}
    swapped[f'{root}/byteorder'] = b'big'
    big = str(tmp_path / 'big.pt')
    _rewrite_archive(little, big, swapped)
    _assert_same_state_dict(read_torchscript_state_dict(big), expected)


def test_archive_with_load_time_code_is_refused_without_running_it(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    path = str(tmp_path / 'setstate.pt')
    torch.jit.save(torch.jit.script(_LoadTimeCode()), path)
    torch.jit.load(path)  # the archive's code really runs when torch loads it ...
    assert 'LOAD_TIME_CODE_RAN' in capfd.readouterr().out

    with pytest.raises(ValueError) as error:
        read_clip_state_dict(path)
    assert 'LOAD_TIME_CODE_RAN' not in capfd.readouterr().out  # ... but not when we read it
    message = str(error.value)
    assert path in message and '__setstate__' in message
    assert f"torch.save(torch.jit.load('{path}'" in message  # how to convert it


@pytest.mark.parametrize('hidden', [False, True], ids=['top_level', 'inside_module'])
def test_archive_with_pickled_call_is_refused_without_running_it(tmp_path: Path,
                                                                 hidden: bool) -> None:
    marker = tmp_path / 'pwned'
    if hidden:
        payload = _module_hiding_payload(marker)
        forbidden = 'builtins.open'
    else:
        payload = pickle.dumps(_Payload(os.system, f'touch {shlex.quote(str(marker))}'),
                               protocol=2)
        forbidden = f'{os.system.__module__}.system'  # posix.system
        pickle.loads(payload)  # the payload works when unpickled plainly
        assert marker.exists()
        marker.unlink()
    benign = _scripted_archive(tmp_path)
    hostile = str(tmp_path / 'hostile.pt')
    _rewrite_archive(benign, hostile, {f'{_archive_root(benign)}/data.pkl': payload})

    with pytest.raises(pickle.UnpicklingError) as error:
        read_clip_state_dict(hostile)
    assert forbidden in str(error.value) and hostile in str(error.value)
    assert not marker.exists()


def test_tensor_beyond_its_storage_is_refused(tmp_path: Path) -> None:
    """A view past the end of its record would expose uninitialised memory; torch would grow the
    storage silently."""
    benign = _scripted_archive(tmp_path)
    root = _archive_root(benign)
    records = {f'{root}/data/extra': np.arange(2, dtype='<f4').tobytes(),
               f'{root}/code/__torch__.py': b'class M(Module):\n  __parameters__ = []\n'
                                            b'  __buffers__ = ["w", ]\n  w : Tensor\n'}
    fits, too_long = str(tmp_path / 'fits.pt'), str(tmp_path / 'too_long.pt')
    _rewrite_archive(benign, fits, {f'{root}/data.pkl': _module_with_tensor('extra', 2, 2),
                                    **records})
    _assert_same_state_dict(read_clip_state_dict(fits), dict(w=torch.tensor([0., 1.])))
    _rewrite_archive(benign, too_long, {f'{root}/data.pkl': _module_with_tensor('extra', 2, 5),
                                        **records})
    with pytest.raises(pickle.UnpicklingError, match='needs 20 bytes of a storage of 8'):
        read_clip_state_dict(too_long)


def test_archive_without_data_pickle_names_the_conversion(tmp_path: Path) -> None:
    benign = _scripted_archive(tmp_path)
    path = str(tmp_path / 'no_data.pt')
    with zipfile.ZipFile(benign) as old, zipfile.ZipFile(path, 'w') as new:
        for info in old.infolist():
            if not info.filename.endswith('/data.pkl'):
                new.writestr(info, old.read(info.filename))
    with pytest.raises(ValueError, match='data.pkl') as error:
        read_clip_state_dict(path)
    assert 'torch.jit.load' in str(error.value) and path in str(error.value)


# ---------------------------------------------------------------------------------------------
# Pickles: weights_only with the allow-list; .npy: no pickles
# ---------------------------------------------------------------------------------------------


def test_plain_state_dict_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    expected = dict(weight=torch.randn(3, 2).half(), count=torch.tensor(7), **{
        key: torch.tensor(value) for key, value in OPENAI_METADATA.items()})
    path = str(tmp_path / 'plain.pt')
    torch.save(expected, path)
    loaded = read_clip_state_dict(path)
    _assert_same_state_dict(loaded, dict(weight=expected['weight'], count=expected['count']))


def test_pickle_with_foreign_global_is_refused_naming_the_file(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'hostile.pt')
    torch.save(dict(weight=torch.ones(2), extra=_Payload(open, str(marker), 'w')), path)
    with pytest.raises(pickle.UnpicklingError) as error:
        read_clip_state_dict(path)
    assert path in str(error.value) and f'{open.__module__}.open' in str(error.value)
    assert not marker.exists()


def test_class_embeddings_with_pickled_objects_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    path = tmp_path / 'embeddings.npy'
    np.save(path, np.array([_Payload(open, str(marker), 'w')], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match='allow_pickle'):
        load_class_embeddings(str(path))
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the file does run code when pickles are allowed
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# mmengine's local checkpoint loading (resume, load_from, tools/test.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings('ignore:.*looks like a TorchScript archive')
def test_mmengine_local_load_refuses_code(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)  # torch's opt-out
    marker = tmp_path / 'pwned'
    hostile = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict=dict(weight=torch.ones(2)), meta=_Payload(open, str(marker), 'w')),
               hostile)
    with pytest.raises(pickle.UnpicklingError, match=f'{open.__module__}.open'):
        mmengine_checkpoint._load_checkpoint(hostile, map_location='cpu')
    with pytest.raises(RuntimeError, match='TorchScript'):  # torch.load refuses to jit.load
        mmengine_checkpoint._load_checkpoint(_scripted_archive(tmp_path), map_location='cpu')
    assert not marker.exists()


def test_mmengine_downloads_read_as_data_once_patched(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """mmengine's http(s)/torchvision/open-mmlab loaders all end in ``load_url``, which
    ``import mmclim`` replaces (torch.hub's default, ``weights_only=False``, runs a payload)."""
    marker = tmp_path / 'pwned'
    hostile = tmp_path / 'hostile.pth'
    torch.save(dict(state_dict=dict(weight=torch.ones(2)), meta=_Payload(open, str(marker), 'w')),
               hostile)
    benign = tmp_path / 'benign.pth'
    torch.save(dict(state_dict=dict(weight=torch.arange(3))), benign)
    assert mmengine_checkpoint.load_url is load_url_weights_only  # installed on import

    torch.hub.load_state_dict_from_url(hostile.as_uri(), model_dir=str(tmp_path / 'hub'),
                                       weights_only=False)
    assert marker.exists()  # what mmengine's loader did before the patch
    marker.unlink()

    monkeypatch.setattr(mmengine_checkpoint, 'load_url', mmengine_checkpoint.load_url)  # restored
    load_url_checkpoints_as_data()  # idempotent
    with pytest.raises(pickle.UnpicklingError, match=f'{open.__module__}.open'):
        mmengine_checkpoint.load_from_http(hostile.as_uri(), model_dir=str(tmp_path / 'patched'))
    assert not marker.exists()
    loaded = mmengine_checkpoint.load_from_http(benign.as_uri(), model_dir=str(tmp_path / 'ok'))
    assert torch.equal(loaded['state_dict']['weight'], torch.arange(3))
