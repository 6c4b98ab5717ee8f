# Copyright (c) mmclim contributors. All rights reserved.
"""Checkpoints that survive a kill, carry a checksum and never hold NaN.

:func:`install_safe_checkpoints` runs on ``import mmclim`` (so every config that has
``custom_imports = dict(imports=['mmclim'])`` gets it) and changes mmengine 0.10.7 so:

* **Atomic writes.** ``Runner.save_checkpoint`` writes through :func:`safe_save_checkpoint`:
  the checkpoint is serialised in memory, written to a temporary file in the same folder
  (``.<name>.<pid>.<random>.tmp``), flushed, ``fsync``-ed and renamed into place with
  ``os.replace``; a kill at any moment leaves either the complete new file or none.
* **A checksum beside each checkpoint.** ``<checkpoint>.sha256`` holds the sha256 of the file,
  in ``sha256sum`` format (``sha256sum -c iter_100.pth.sha256`` checks it), written atomically
  after the checkpoint. ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py``) and
  ``Runner.resume`` (``--resume``) verify it first (:func:`verified_load_checkpoint`): a
  mismatch is a :class:`ChecksumMismatchError` naming the file, so a corrupted checkpoint is
  never trained on; a checkpoint without a checksum (downloaded, or written before mmclim)
  loads with a warning.
* **No non-finite checkpoint.** :func:`safe_save_checkpoint` refuses a checkpoint whose model
  or optimizer state holds NaN or infinity with a
  :class:`~mmclim.engine.non_finite.NonFiniteTensorError` naming the first such tensor; nothing
  is written and the previous checkpoint stays.
* **Old checkpoints go last.** mmengine's ``CheckpointHook`` deleted the checkpoint that
  ``max_keep_ckpts`` drops *before* writing the new one and wrote ``last_checkpoint`` with a
  truncating ``open``: a kill during the save lost the run. Its ``_save_checkpoint_with_step``
  now saves first, then writes ``last_checkpoint`` atomically, and only then removes the dropped
  checkpoint (and its checksum); ``_save_best_checkpoint`` likewise removes the previous best
  only after the new one is written. ``before_train`` removes the temporary files a killed save
  left and checksum files whose checkpoint is gone.

Checkpoints on other storage backends (``backend_args``, ``pavi://``) are checked for non-finite
tensors and then written by mmengine as before.
"""
import contextlib
import functools
import hashlib
import io
import logging
import os
import os.path as osp
import re
import uuid
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Union

import mmengine.runner
import mmengine.runner.runner as runner_module
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner.checkpoint import _load_checkpoint as mmengine_load_checkpoint
from mmengine.runner.checkpoint import save_checkpoint as mmengine_save_checkpoint

from .non_finite import assert_finite

CHECKSUM_SUFFIX = '.sha256'
# The file in the work dir naming the latest checkpoint (mmengine's find_latest_checkpoint).
LAST_CHECKPOINT_FILE = 'last_checkpoint'
# '.<checkpoint name>.<pid>.<8 hex digits>.tmp': where a checkpoint is written before its rename.
TEMPORARY_PATTERN = re.compile(r'^\..+\.\d+\.[0-9a-f]{8}\.tmp$')
SHA256_PATTERN = re.compile(r'^[0-9a-f]{64}$')
HASH_CHUNK_BYTES = 1 << 20
# Top-level checkpoint entries that are bookkeeping, not state: mmengine's message hub holds
# legitimate infinities (CheckpointHook's best score starts at inf).
UNCHECKED_ENTRIES = ('meta', 'message_hub')
# The message hub entries CheckpointHook updates before saving (the checkpoint records them).
HUB_KEYS = ('keep_ckpt_ids', 'last_ckpt')


class ChecksumMismatchError(ValueError):
    """A checkpoint's bytes do not match its ``.sha256`` file."""


def checksum_path(path: str) -> str:
    """The checksum file of a checkpoint: ``<path>.sha256``."""
    return f'{path}{CHECKSUM_SUFFIX}'


def fsync_directory(folder: str) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_file_atomically(data: Union[bytes, memoryview], path: str) -> None:
    """Write ``data`` to ``path`` so that a kill leaves either the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed and ``fsync``-ed, and the
    file is renamed over ``path`` with ``os.replace`` (atomic on POSIX within a file system);
    the folder is ``fsync``-ed after the rename. On an error the temporary file is removed.

    Args:
        data (bytes | memoryview): The content.
        path (str): The destination; its folder is created when missing.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = osp.join(folder,
                         f'.{osp.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(temporary, 'xb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    fsync_directory(folder)


def sha256_of_file(path: str) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for chunk in iter(lambda: file.read(HASH_CHUNK_BYTES), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksum(sidecar: str) -> str:
    """The sha256 recorded in a checksum file (``sha256sum`` format: ``<hex>  <name>``).

    Raises:
        ChecksumMismatchError: The file does not start with 64 lowercase hex digits.
    """
    with open(sidecar, encoding='utf-8', errors='replace') as file:
        text = file.read()
    fields = text.split()
    if not fields or not SHA256_PATTERN.match(fields[0]):
        raise ChecksumMismatchError(
            f'checksum file {sidecar} is malformed: expected "<64 hex digits>  <file name>", '
            f'got {text[:100]!r}')
    return fields[0]


def write_checkpoint_file(data: Union[bytes, memoryview], path: str) -> str:
    """Write a serialised checkpoint atomically, then its checksum file.

    A checksum file left by an earlier checkpoint of the same name is removed first, so that a
    kill between the two writes leaves a checkpoint without a checksum (loaded with a warning),
    never one paired with another file's checksum.

    Args:
        data (bytes | memoryview): The serialised checkpoint.
        path (str): Where it goes; the checksum goes to ``<path>.sha256``.

    Returns:
        str: The hex sha256 of ``data``.
    """
    sidecar = checksum_path(path)
    if osp.lexists(sidecar):
        os.remove(sidecar)
    digest = hashlib.sha256(data).hexdigest()
    write_file_atomically(data, path)
    write_file_atomically(f'{digest}  {osp.basename(path)}\n'.encode(), sidecar)
    return digest


def verify_checksum(path: str) -> bool:
    """Check a local checkpoint against its ``.sha256`` file.

    Args:
        path (str): The checkpoint.

    Returns:
        bool: True when it matches; False (after a warning) when it has no checksum file.

    Raises:
        ChecksumMismatchError: The file's sha256 is not the recorded one (or the checksum file
            is malformed); the message names both files.
    """
    sidecar = checksum_path(path)
    if not osp.isfile(sidecar):
        print_log(f'checkpoint {path} has no checksum file {sidecar} (checkpoints mmclim writes '
                  'have one; a downloaded one does not): loading it unverified',
                  logger='current', level=logging.WARNING)
        return False
    expected = read_checksum(sidecar)
    actual = sha256_of_file(path)
    if actual != expected:
        raise ChecksumMismatchError(
            f'checkpoint {path} is corrupted: its sha256 is {actual} but {sidecar} records '
            f'{expected} (written with the checkpoint); refusing to load it. Resume or load '
            'from an earlier checkpoint.')
    return True


def _is_local(filename: str, backend_args: Optional[dict]) -> bool:
    if filename.startswith('pavi://'):
        return False
    return isinstance(get_file_backend(filename, backend_args=backend_args), LocalBackend)


def safe_save_checkpoint(checkpoint: Dict[str, Any],
                         filename: str,
                         file_client_args: Optional[dict] = None,
                         backend_args: Optional[dict] = None) -> None:
    """mmengine's ``save_checkpoint``, refusing non-finite state, atomic and with a checksum.

    Args:
        checkpoint (dict): The checkpoint (``state_dict``, ``optimizer``, ``meta``, ...).
        filename (str): Where to write it.
        file_client_args (dict, optional): Deprecated mmengine argument; when given, mmengine
            writes the file. Defaults to None.
        backend_args (dict, optional): mmengine storage backend arguments; a non-local backend
            writes the file as mmengine does. Defaults to None.

    Raises:
        NonFiniteTensorError: A tensor outside ``meta`` and ``message_hub`` holds NaN or
            infinity; the message names the file and the tensor, and nothing is written.
    """
    filename = os.fspath(filename)
    state = {key: value for key, value in checkpoint.items() if key not in UNCHECKED_ENTRIES}
    assert_finite(state, f'refusing to write checkpoint {filename}')
    if file_client_args is not None or not _is_local(filename, backend_args):
        mmengine_save_checkpoint(checkpoint, filename, file_client_args=file_client_args,
                                 backend_args=backend_args)
        return
    with io.BytesIO() as stream:
        torch.save(checkpoint, stream)
        with stream.getbuffer() as data:
            write_checkpoint_file(data, filename)


def verified_load_checkpoint(filename: str,
                             map_location: Optional[Union[str, Callable]] = None,
                             logger: Optional[logging.Logger] = None) -> Any:
    """mmengine's ``_load_checkpoint`` after :func:`verify_checksum` for a local file.

    Args:
        filename (str): A local path, or a URL / ``open-mmlab://`` name (not verified).
        map_location (str | callable, optional): As for ``torch.load``. Defaults to None.
        logger (logging.Logger, optional): Passed to mmengine. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    path = os.fspath(filename)
    if '://' not in path and osp.isfile(path):
        verify_checksum(path)
    return mmengine_load_checkpoint(filename, map_location, logger)


def remove_checkpoint(backend: Any, path: str) -> None:
    """Remove a checkpoint (a file, or a folder for deepspeed) and its checksum file."""
    if backend.isfile(path):
        backend.remove(path)
        sidecar = checksum_path(path)
        if backend.isfile(sidecar):
            backend.remove(sidecar)
    elif backend.isdir(path):
        backend.rmtree(path)


def remove_stale_files(folder: str) -> List[str]:
    """Remove what a killed save left in a checkpoint folder.

    That is the temporary files of :func:`write_file_atomically` and the checksum files whose
    checkpoint is gone (e.g. pruned by mmengine for ``max_keep_ckpts`` when resuming).

    Args:
        folder (str): The checkpoint folder; missing folders are skipped.

    Returns:
        list[str]: The removed paths.
    """
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        orphan = name.endswith(CHECKSUM_SUFFIX) and not osp.exists(path[:-len(CHECKSUM_SUFFIX)])
        if (TEMPORARY_PATTERN.match(name) or orphan) and osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


class _DeferredRemovals:
    """A file backend whose ``remove`` and ``rmtree`` are recorded, to be done later."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.paths: List[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def remove(self, path: str) -> None:
        self.paths.append(path)

    def rmtree(self, path: str) -> None:
        self.paths.append(path)


def _save_checkpoint_with_step(self: CheckpointHook, runner: Any, step: int, meta: dict) -> None:
    """``CheckpointHook._save_checkpoint_with_step``, removing the dropped checkpoint last.

    Order: the message hub records the checkpoint bookkeeping (as mmengine does, so that the
    checkpoint holds it), the checkpoint is written (atomically), ``last_checkpoint`` is written
    atomically, and only then the checkpoint that ``max_keep_ckpts`` drops is removed. When the
    save fails (e.g. a non-finite tensor) the hub entries are restored and nothing is removed.
    """
    ckpt_filename = self.filename_tmpl.format(step)
    ckpt_path = self.file_backend.join_path(self.out_dir, ckpt_filename)
    keep_ckpt_ids: Optional[deque] = None
    dropped: List[int] = []
    # As mmengine: _save_checkpoint and _save_best_checkpoint may both save the same step.
    if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
        keep_ckpt_ids = deque(self.keep_ckpt_ids, self.max_keep_ckpts)
        if len(keep_ckpt_ids) == self.max_keep_ckpts:
            dropped.append(keep_ckpt_ids.popleft())
        keep_ckpt_ids.append(step)

    hub = runner.message_hub
    previous = {key: hub.get_info(key) for key in HUB_KEYS if key in hub.runtime_info}
    if keep_ckpt_ids is not None:
        hub.update_info('keep_ckpt_ids', list(keep_ckpt_ids))
    hub.update_info('last_ckpt', ckpt_path)
    try:
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
    except BaseException:
        for key in HUB_KEYS:
            if key in previous:
                hub.update_info(key, previous[key])
            else:
                hub.pop_info(key)
        raise
    self.last_ckpt = ckpt_path
    if keep_ckpt_ids is not None:
        self.keep_ckpt_ids = keep_ckpt_ids

    # Model parallel-like training pulls sharded states from all ranks but writes on one.
    if not is_main_process():
        return
    write_file_atomically(str(ckpt_path).encode(), osp.join(runner.work_dir, LAST_CHECKPOINT_FILE))
    for dropped_step in dropped:
        remove_checkpoint(self.file_backend, self.file_backend.join_path(
            self.out_dir, self.filename_tmpl.format(dropped_step)))


def _wrap_save_best_checkpoint(original: Callable) -> Callable:

    @functools.wraps(original)
    def _save_best_checkpoint(self: CheckpointHook, runner: Any, metrics: dict) -> None:
        """``CheckpointHook._save_best_checkpoint``, removing the previous best only after the
        new best (and any checkpoint it saves) is written."""
        backend = self.file_backend
        deferred = _DeferredRemovals(backend)
        self.file_backend = deferred
        try:
            original(self, runner, metrics)
        finally:
            self.file_backend = backend
        current = {getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in deferred.paths:
            if path not in current:
                remove_checkpoint(backend, path)

    return _save_best_checkpoint


def _wrap_before_train(original: Callable) -> Callable:

    @functools.wraps(original)
    def before_train(self: CheckpointHook, runner: Any) -> None:
        """``CheckpointHook.before_train``, then the removal of what a killed save left."""
        original(self, runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for path in remove_stale_files(str(self.out_dir)):
                runner.logger.info(f'removed {path}, left by an interrupted checkpoint save')

    return before_train


def install_safe_checkpoints() -> None:
    """Patch mmengine as the module docstring describes. Idempotent."""
    if getattr(CheckpointHook, '_mmclim_safe_checkpoints', False):
        return
    runner_module.save_checkpoint = safe_save_checkpoint
    mmengine.runner.save_checkpoint = safe_save_checkpoint  # CheckpointHook._publish_model
    runner_module._load_checkpoint = verified_load_checkpoint
    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step
    CheckpointHook._save_best_checkpoint = _wrap_save_best_checkpoint(
        CheckpointHook._save_best_checkpoint)
    CheckpointHook.before_train = _wrap_before_train(CheckpointHook.before_train)
    CheckpointHook._mmclim_safe_checkpoints = True
