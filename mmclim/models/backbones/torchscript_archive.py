# Copyright (c) mmclim contributors. All rights reserved.
"""Read the weights of a TorchScript archive as data, without running anything from the file.

``torch.jit.load`` compiles the archive's TorchScript source (``<root>/code/``) and runs its
load-time methods, so a hostile archive can act on the machine that loads it. OpenAI released CLIP
as TorchScript archives, so every user loads one. :func:`read_torchscript_state_dict` reads the
same tensors from the zip itself:

* ``<root>/data.pkl`` pickles the module tree: each module is a ``__torch__.*`` class instance
  whose state is a dict of its attributes, each tensor a ``torch._utils._rebuild_tensor_v2`` call
  on a persistent id ``('storage', torch.<T>Storage, key, location, numel)``. It is unpickled by
  :class:`TorchScriptUnpickler`, whose allow-list holds only what rebuilds tensors and containers;
  ``__torch__`` classes become inert :class:`ScriptObjectState` records of their state, and any
  other global is refused.
* ``<root>/data/<key>`` holds the raw bytes of each storage, in the order of the ``byteorder``
  record (little-endian when there is none, as ``torch.load`` assumes).
* ``<root>/code/<qualifier>.py`` declares which attributes of each module class are parameters
  and buffers (``__parameters__ = [...]``, ``__buffers__ = [...]``). Those two literal lists and
  the class headers are read as text; the source is never compiled or run.

The result equals ``torch.jit.load(path, map_location='cpu').state_dict()``: per module its
parameters, then its buffers, then its submodules, each in attribute order, under dotted names.
Archives whose weights cannot be read this way (no ``data.pkl``, a module class with its own
``__setstate__``, quantized or sparse tensors) are refused with the command that converts them once,
in a trusted environment, into a plain state dict (:data:`CONVERSION_COMMAND`).
"""
import ast
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple, Type

import torch
from torch import Tensor

# How to turn an archive this module cannot read into a ``torch.save`` state dict; run it only
# where the archive is trusted, since ``torch.jit.load`` runs the archive's code.
CONVERSION_COMMAND = ('python -c "import torch; torch.save(torch.jit.load(\'{path}\', '
                      'map_location=\'cpu\').state_dict(), \'{path}.state_dict.pt\')"')
# Records of an archive, relative to its root folder.
DATA_RECORD = 'data.pkl'
STORAGE_FOLDER = 'data'
CODE_FOLDER = 'code'
BYTEORDER_RECORD = 'byteorder'
# torch.load's assumption for files without a byteorder record.
DEFAULT_BYTEORDER = 'little'
# The qualifier of every TorchScript class, and the base class of TorchScript modules.
TORCHSCRIPT_NAMESPACE = '__torch__'
MODULE_BASE_CLASS = 'Module'
# The persistent-id tag of a storage (``torch/csrc/jit/serialization/unpickler.cpp``).
STORAGE_PERSISTENT_ID = 'storage'
# The ``torch.<T>Storage`` names that TorchScript writes for each dtype.
STORAGE_DTYPES = {
    'BoolStorage': torch.bool,
    'ByteStorage': torch.uint8,
    'CharStorage': torch.int8,
    'ShortStorage': torch.int16,
    'IntStorage': torch.int32,
    'LongStorage': torch.int64,
    'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16,
    'FloatStorage': torch.float32,
    'DoubleStorage': torch.float64,
    'ComplexFloatStorage': torch.complex64,
    'ComplexDoubleStorage': torch.complex128,
}

_CLASS_HEADER = re.compile(r'^class\s+(\w+)\s*\(\s*([\w.]*)\s*\)\s*:[ \t]*$', re.MULTILINE)
_NEXT_TOP_LEVEL_LINE = re.compile(r'^\S', re.MULTILINE)
_SETSTATE_METHOD = re.compile(r'^\s+def\s+__setstate__\s*\(', re.MULTILINE)


def _declared_names(body: str, declaration: str) -> Optional[List[str]]:
    """The literal list ``<declaration> = [...]`` of a class body, or None if it has none."""
    match = re.search(rf'^\s+{declaration}\s*=\s*(\[[^\]]*\])\s*$', body, re.MULTILINE)
    if match is None:
        return None
    names = ast.literal_eval(match.group(1))  # a list of string literals, never evaluated code
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f'{declaration} is not a list of names: {match.group(1)}')
    return names


class ScriptClassInfo(NamedTuple):
    """What an archive's source declares about one TorchScript class.

    Attributes:
        is_module (bool): The class derives from ``Module``.
        parameters (tuple[str]): Its ``__parameters__``.
        buffers (tuple[str]): Its ``__buffers__``.
        has_setstate (bool): It defines ``__setstate__``, so its pickled state is not its
            attributes.
    """
    is_module: bool
    parameters: Tuple[str, ...]
    buffers: Tuple[str, ...]
    has_setstate: bool


class ScriptObjectState:
    """Inert stand-in for an instance of a ``__torch__`` class: its pickled state, nothing run.

    Attributes:
        qualified_name (str): The TorchScript class, e.g.
            ``__torch__.torch.nn.modules.linear.Linear`` (set on the subclass that
            :meth:`TorchScriptUnpickler.find_class` makes per class).
        state (Any): What the pickle's ``BUILD`` gave: for modules without ``__setstate__`` a dict
            of the attributes in attribute order. None until then.
    """
    qualified_name = ''
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType(NamedTuple):
    """Stand-in for ``torch.<T>Storage`` inside a persistent id: the dtype, nothing callable."""
    name: str
    dtype: torch.dtype


class _LoadedStorage(NamedTuple):
    """A storage record read from the zip, with the dtype its persistent id gives."""
    storage: torch.UntypedStorage
    dtype: torch.dtype


def _restore_type_tag(value: Any, type_str: str) -> Any:
    """``torch.jit._pickle.restore_type_tag``: the static type of a container; not needed."""
    return value


def _build_list(data: List[Any]) -> List[Any]:
    """``torch.jit._pickle.build_{int,double,bool,tensor}list`` of older archives."""
    return data


def _rebuild_tensor_v2(storage: _LoadedStorage, storage_offset: int, size: Tuple[int, ...],
                       stride: Tuple[int, ...], requires_grad: bool, backward_hooks: Any,
                       metadata: Any = None) -> Tensor:
    """``torch._utils._rebuild_tensor_v2`` for the allow-list: a view of a loaded storage.

    ``requires_grad``, the (never saved) backward hooks and the metadata are dropped: a state
    dict holds detached tensors.
    """
    if not isinstance(storage, _LoadedStorage):
        raise pickle.UnpicklingError(f'tensor without a storage (got {type(storage).__name__})')
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(value, int) and value >= 0
                    for value in (storage_offset, *size, *stride))):
        raise pickle.UnpicklingError(
            f'tensor with malformed geometry: offset {storage_offset!r}, size {size!r}, '
            f'stride {stride!r}')
    last = storage_offset + sum((dim - 1) * step for dim, step in zip(size, stride))
    needed = 0 if 0 in size else (last + 1) * storage.dtype.itemsize
    if needed > storage.storage.nbytes():
        raise pickle.UnpicklingError(
            f'tensor of size {size}, stride {stride} and offset {storage_offset} needs '
            f'{needed} bytes of a storage of {storage.storage.nbytes()}')
    tensor = torch.empty((0, ), dtype=storage.dtype)
    return tensor.set_(storage.storage, storage_offset, size, stride)


class TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl`` with an allow-list and storages read from the zip.

    Allowed globals: ``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict``, the
    ``torch.jit._pickle`` container helpers, ``torch.device``, ``builtins.complex``, the
    ``torch.<T>Storage`` names of :data:`STORAGE_DTYPES` (as dtype markers, never called), and
    ``__torch__.*`` classes as :class:`ScriptObjectState` records. Everything else raises
    :class:`pickle.UnpicklingError` naming the global and the file.

    Args:
        file: The open ``data.pkl`` record.
        archive (zipfile.ZipFile): The archive, read for the storage records.
        root (str): The archive's root folder.
        path (str): The archive's path, named in errors.
    """

    _ALLOWED = {
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
        ('collections', 'OrderedDict'): OrderedDict,
        ('torch.jit._pickle', 'restore_type_tag'): _restore_type_tag,
        ('torch.jit._pickle', 'build_intlist'): _build_list,
        ('torch.jit._pickle', 'build_doublelist'): _build_list,
        ('torch.jit._pickle', 'build_boollist'): _build_list,
        ('torch.jit._pickle', 'build_tensorlist'): _build_list,
        ('torch', 'device'): torch.device,
        ('builtins', 'complex'): complex,
    }
    # Globals TorchScript writes for tensors this reader does not rebuild.
    _UNSUPPORTED = {
        ('torch._utils', '_rebuild_qtensor'): 'a quantized tensor',
        ('torch._utils', '_rebuild_sparse_tensor'): 'a sparse tensor',
        ('torch._tensor', '_rebuild_from_type_v2'): 'a tensor subclass',
        ('torch.distributed.rpc', 'rref'): 'a remote reference',
    }

    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str, path: str) -> None:
        super().__init__(file, encoding='utf-8')
        self.archive = archive
        self.root = root
        self.path = path
        self.swap_bytes = _byteorder(archive, root, path) != sys.byteorder
        self._storages: Dict[str, torch.UntypedStorage] = {}
        self._classes: Dict[str, Type[ScriptObjectState]] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global through the allow-list (see the class docstring)."""
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == 'torch' and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if module == TORCHSCRIPT_NAMESPACE or module.startswith(f'{TORCHSCRIPT_NAMESPACE}.'):
            qualified_name = f'{module}.{name}'
            if qualified_name not in self._classes:
                self._classes[qualified_name] = type(
                    name, (ScriptObjectState, ), dict(qualified_name=qualified_name))
            return self._classes[qualified_name]
        if (module, name) in self._UNSUPPORTED:
            raise pickle.UnpicklingError(
                f'TorchScript archive {self.path!r}: {self.root}/{DATA_RECORD} holds '
                f'{self._UNSUPPORTED[(module, name)]} ({module}.{name}), which is not read '
                f'without running the archive. {_conversion_advice(self.path)}')
        raise pickle.UnpicklingError(
            f'TorchScript archive {self.path!r}: {self.root}/{DATA_RECORD} asks for the global '
            f'{module}.{name}, which a weights file does not need; refused (only tensors, '
            f'containers and __torch__ module records are read)')

    def persistent_load(self, pid: Any) -> _LoadedStorage:
        """Read the storage of a persistent id ``('storage', <T>Storage, key, location, numel)``.

        The location is ignored: weights are read to the CPU.
        """
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == STORAGE_PERSISTENT_ID
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(
                f'TorchScript archive {self.path!r}: unexpected persistent id {pid!r} in '
                f'{self.root}/{DATA_RECORD}; expected (\'storage\', torch.<T>Storage, key, '
                'location, numel)')
        _, storage_type, key, _, numel = pid
        num_bytes = numel * storage_type.dtype.itemsize
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, num_bytes, storage_type.dtype)
        storage = self._storages[key]
        if storage.nbytes() < num_bytes:
            raise pickle.UnpicklingError(
                f'TorchScript archive {self.path!r}: storage {key!r} has {storage.nbytes()} '
                f'bytes but {numel} elements of {storage_type.dtype} need {num_bytes}')
        return _LoadedStorage(storage, storage_type.dtype)

    def _read_storage(self, key: str, num_bytes: int, dtype: torch.dtype) -> torch.UntypedStorage:
        """The bytes of ``<root>/data/<key>`` as a CPU storage, in this machine's byte order."""
        if num_bytes == 0:
            return torch.UntypedStorage(0)
        record = f'{self.root}/{STORAGE_FOLDER}/{key}'
        try:
            data = self.archive.read(record)
        except KeyError:
            raise pickle.UnpicklingError(
                f'TorchScript archive {self.path!r} has no record {record!r}, which '
                f'{self.root}/{DATA_RECORD} refers to') from None
        storage = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else \
            torch.UntypedStorage(0)
        if self.swap_bytes:
            storage.byteswap(dtype)
        return storage


def _byteorder(archive: zipfile.ZipFile, root: str, path: str) -> str:
    """The byte order of the archive's storages (its ``byteorder`` record)."""
    record = f'{root}/{BYTEORDER_RECORD}'
    if record not in archive.namelist():
        return DEFAULT_BYTEORDER
    byteorder = archive.read(record).decode('ascii', 'replace').strip()
    if byteorder not in ('little', 'big'):
        raise ValueError(f'TorchScript archive {path!r}: record {record!r} says {byteorder!r}; '
                         "expected 'little' or 'big'")
    return byteorder


def _conversion_advice(path: str) -> str:
    """How to turn a trusted archive this module cannot read into a plain state dict."""
    return ('If you trust the file, convert it once into a plain state dict and load that '
            f'instead: {CONVERSION_COMMAND.format(path=path)}')


def _unreadable(path: str, reason: str) -> ValueError:
    """The error for an archive whose weights cannot be read without running its code."""
    return ValueError(f'TorchScript archive {path!r}: {reason}, so its weights cannot be read '
                      f'without running the code inside it. {_conversion_advice(path)}')


def _archive_root(archive: zipfile.ZipFile, path: str) -> str:
    """The one top-level folder holding ``data.pkl``."""
    roots = sorted(name[:-len(DATA_RECORD) - 1] for name in archive.namelist()
                   if name.count('/') == 1 and name.endswith(f'/{DATA_RECORD}'))
    if len(roots) != 1:
        raise _unreadable(path, f'expected one <root>/{DATA_RECORD} record, found {len(roots)} '
                          f'({roots}) (archives older than torch 1.4 keep their weights elsewhere)')
    return roots[0]


class _ClassDeclarations:
    """Reads (as text) and caches what ``<root>/code/`` declares about each class."""

    def __init__(self, archive: zipfile.ZipFile, root: str, path: str) -> None:
        self.archive = archive
        self.root = root
        self.path = path
        self._files: Dict[str, Dict[str, ScriptClassInfo]] = {}

    def __getitem__(self, qualified_name: str) -> ScriptClassInfo:
        qualifier, _, name = qualified_name.rpartition('.')
        if qualifier not in self._files:
            self._files[qualifier] = self._read(qualifier)
        classes = self._files[qualifier]
        if name not in classes:
            raise _unreadable(self.path, f'class {qualified_name} is not defined in '
                              f'{self._record(qualifier)}')
        return classes[name]

    def _record(self, qualifier: str) -> str:
        return f'{self.root}/{CODE_FOLDER}/{qualifier.replace(".", "/")}.py'

    def _read(self, qualifier: str) -> Dict[str, ScriptClassInfo]:
        record = self._record(qualifier)
        try:
            source = self.archive.read(record).decode('utf-8')
        except KeyError:
            raise _unreadable(self.path, f'it has no source record {record!r}') from None
        classes = {}
        for header in _CLASS_HEADER.finditer(source):
            end = _NEXT_TOP_LEVEL_LINE.search(source, header.end())
            body = source[header.end():end.start() if end else len(source)]
            try:
                parameters = _declared_names(body, '__parameters__')
                buffers = _declared_names(body, '__buffers__')
            except (ValueError, SyntaxError) as error:
                raise _unreadable(self.path, f'class {header.group(1)} of {record}: {error}')
            classes[header.group(1)] = ScriptClassInfo(
                is_module=header.group(2) == MODULE_BASE_CLASS,
                parameters=tuple(parameters or ()),
                buffers=tuple(buffers or ()),
                has_setstate=_SETSTATE_METHOD.search(body) is not None)
        return classes


def _flatten_module(module: ScriptObjectState, prefix: str, classes: _ClassDeclarations,
                    path: str, out: Dict[str, Tensor], active: Set[int]) -> None:
    """Add ``module``'s parameters, then buffers, then submodules' entries to ``out``."""
    info = classes[module.qualified_name]
    if info.has_setstate:
        raise _unreadable(path, f'module {prefix or "<root>"} ({module.qualified_name}) '
                          'defines __setstate__ (its pickled state is not its attributes)')
    if not isinstance(module.state, dict):
        raise _unreadable(path, f'module {prefix or "<root>"} ({module.qualified_name}) has '
                          f'state of type {type(module.state).__name__}, not its attributes')
    if id(module) in active:
        raise ValueError(f'TorchScript archive {path!r}: module {prefix} contains itself')
    active.add(id(module))
    for names in (info.parameters, info.buffers):
        for name, value in module.state.items():
            if name in names and isinstance(value, Tensor):
                out[f'{prefix}{name}'] = value
    for name, value in module.state.items():
        if isinstance(value, ScriptObjectState) and classes[value.qualified_name].is_module:
            _flatten_module(value, f'{prefix}{name}.', classes, path, out, active)
    active.remove(id(module))


def read_torchscript_state_dict(path: str) -> Dict[str, Tensor]:
    """Read a TorchScript archive's parameters and buffers without running anything from it.

    Args:
        path (str): A file written by ``torch.jit.save`` (torch >= 1.4; OpenAI's CLIP ``.pt``).

    Returns:
        Dict[str, Tensor]: Equal to ``torch.jit.load(path, map_location='cpu').state_dict()``:
        the same keys in the same order, dtypes and values, on the CPU.

    Raises:
        pickle.UnpicklingError: ``data.pkl`` asks for a global outside the allow-list (the
            message names the global and the file) or is malformed.
        ValueError: The weights cannot be read without running the archive's code; the message
            gives the command that converts a trusted archive into a plain state dict.
    """
    with zipfile.ZipFile(path) as archive:
        root = _archive_root(archive, path)
        with archive.open(f'{root}/{DATA_RECORD}') as data:
            unpickler = TorchScriptUnpickler(data, archive, root, path)
            try:
                module = unpickler.load()
            except pickle.UnpicklingError:
                raise
            except Exception as error:  # a malformed pickle fails in many ways; name the file
                raise pickle.UnpicklingError(
                    f'TorchScript archive {path!r}: cannot read {root}/{DATA_RECORD}: '
                    f'{type(error).__name__}: {error}') from error
        classes = _ClassDeclarations(archive, root, path)
        if not (isinstance(module, ScriptObjectState) and classes[module.qualified_name].is_module):
            raise _unreadable(path, f'{root}/{DATA_RECORD} holds {type(module).__name__}, not a '
                              'TorchScript module')
        state_dict: Dict[str, Tensor] = OrderedDict()
        _flatten_module(module, '', classes, path, state_dict, set())
    return state_dict
