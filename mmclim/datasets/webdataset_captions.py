# Copyright (c) mmclim contributors. All rights reserved.
"""Image-caption samples streamed from WebDataset tar shards, as img2dataset writes them.

**The shard format** (read here, written by ``tools/dataset_converters/captions_to_webdataset.py``
and by img2dataset): each shard ``00000.tar`` holds samples ``<key>.<image extension>`` (one of
:data:`IMAGE_EXTENSIONS`) with ``<key>.txt`` (a caption) and/or ``<key>.json`` (an object with
``"captions"``, a list, or ``"caption"``, a string, and optionally ``"id"``). The members of a
sample are consecutive in the tar.

**The index** (:func:`write_shard_index`, :func:`load_shard_index`): a json
``{"format": "mmclim-webdataset-index", "num_samples": N, "shards": {"00000.tar": n, ...}}``
giving each shard's sample count, its shards named relative to the index's folder. The counts
fix the epoch length and let a resumed run skip whole shards without opening them.
"""
import json
import logging
import math
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import DATASETS
from mmengine.dataset import Compose
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from torch.utils.data import IterableDataset, get_worker_info
from webdataset import gopen
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_expander

from .bad_image import EMPTY_IMAGE, TOO_SMALL_IMAGE, UNDECODABLE_IMAGE, BadImageError
from .caption_dataset import BAD_ENTRY_POLICIES, DEFAULT_MIN_IMAGE_SIZE, LOAD_ERRORS
from .skip_counter import NUM_REPORTED_IDS, SkipCounter

# The members of a sample, by extension (img2dataset's output; lower case, as webdataset
# lower-cases them when grouping). The first image extension present is the image.
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp')
CAPTION_EXTENSION = 'txt'
METADATA_EXTENSION = 'json'
# Fields of the ``<key>.json`` member: img2dataset writes ``caption``; the converter writes
# ``id`` and ``captions`` (every caption of the image).
METADATA_ID_FIELD = 'id'
METADATA_CAPTIONS_FIELD = 'captions'
METADATA_CAPTION_FIELD = 'caption'
# The index json (see the module docstring).
INDEX_FORMAT = 'mmclim-webdataset-index'
INDEX_FORMAT_FIELD = 'format'
INDEX_SHARDS_FIELD = 'shards'
INDEX_NUM_SAMPLES_FIELD = 'num_samples'
INDEX_FILE_NAME = 'index.json'
# The reasons a sample or a shard is counted under (``WebDatasetCaptions.bad_samples`` keys),
# besides the image reasons of :mod:`mmclim.datasets.bad_image`.
NO_IMAGE_MEMBER = 'samples without an image member'
NO_CAPTION = 'samples without a caption'
BAD_METADATA = 'samples whose json member is unreadable'
DROPPED_BY_TRANSFORM = 'samples a transform returned None for'
UNREADABLE_SHARD = 'shards that cannot be opened'
CORRUPT_SHARD = 'truncated or corrupt shards'


def write_shard_index(path: str, counts: Dict[str, int]) -> dict:
    """Write the index of a folder of shards.

    Args:
        path (str): The index json to write, in the shards' folder (or above it).
        counts (dict[str, int]): Shard path relative to the index's folder -> its number of
            samples.

    Returns:
        dict: What was written.
    """
    index = {INDEX_FORMAT_FIELD: INDEX_FORMAT, INDEX_NUM_SAMPLES_FIELD: sum(counts.values()),
             INDEX_SHARDS_FIELD: dict(counts)}
    with open(path, 'w') as file:
        json.dump(index, file, indent=1)
    return index


def load_shard_index(path: str) -> Dict[str, int]:
    """Read an index written by :func:`write_shard_index`, checking it.

    Args:
        path (str): The index json.

    Returns:
        dict[str, int]: Shard path relative to the index's folder -> its number of samples.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        ValueError: When it is not such an index: no ``format`` of :data:`INDEX_FORMAT`, shard
            counts that are not ints >= 0, or a ``num_samples`` that is not their sum.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'shard index {path} does not exist; write it with '
                                'tools/dataset_converters/captions_to_webdataset.py')
    with open(path) as file:
        index = json.load(file)
    if not isinstance(index, dict) or index.get(INDEX_FORMAT_FIELD) != INDEX_FORMAT:
        raise ValueError(f'{path} is not a shard index: expected "{INDEX_FORMAT_FIELD}": '
                         f'"{INDEX_FORMAT}"')
    counts = index.get(INDEX_SHARDS_FIELD)
    if not isinstance(counts, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
        raise ValueError(f'{path}: "{INDEX_SHARDS_FIELD}" must map shard names to sample counts '
                         f'(ints >= 0), got {str(counts):.200}')
    if index.get(INDEX_NUM_SAMPLES_FIELD) != sum(counts.values()):
        raise ValueError(f'{path}: "{INDEX_NUM_SAMPLES_FIELD}" is '
                         f'{index.get(INDEX_NUM_SAMPLES_FIELD)!r}, not the sum of the shard '
                         f'counts ({sum(counts.values())})')
    return counts


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    """The shards of an epoch in reading order: the same on every rank and worker.

    Args:
        num_shards (int): How many shards.
        seed (int): The dataset's seed.
        epoch (int): The epoch.
        shuffle (bool): Permute them (with ``(seed, epoch)``); else their given order.

    Returns:
        list[int]: The shard indices; position ``i`` goes to reader slot ``i % num_slots``.
    """
    if not shuffle:
        return list(range(num_shards))
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(num_shards)]


def reader_quota(counts: Sequence[int], num_slots: int) -> int:
    """How many samples each reader (a worker of a rank) yields per epoch.

    Dealt round-robin, every slot gets at least ``len(counts) // num_slots`` shards, so it holds
    at least the sum of that many smallest counts, whatever the epoch's shard order: that sum is
    every reader's quota, so that every rank yields the same number of samples per epoch.

    Args:
        counts (Sequence[int]): Samples per shard.
        num_slots (int): Readers: world size x dataloader workers per rank.

    Returns:
        int: The per-reader quota, > 0.

    Raises:
        ValueError: When there are fewer shards than readers, or the quota is 0.
    """
    per_slot = len(counts) // num_slots
    quota = sum(sorted(counts)[:per_slot])
    if quota == 0:
        raise ValueError(f'{len(counts)} shards ({sum(counts)} samples) cannot feed '
                         f'{num_slots} readers (world size x dataloader workers): every reader '
                         'needs at least one non-empty shard')
    return quota


@DATASETS.register_module()
class WebDatasetCaptions(IterableDataset):
    """Image-caption samples streamed from WebDataset tar shards (CC3M by img2dataset).

    Each sample (see the module docstring for the shard format) becomes a dict like a data info
    of :class:`~mmclim.datasets.CaptionDataset` with its image already decoded: ``img_id`` (the
    json's ``id``, else the sample key), ``img_path`` (``'<shard>#<key>'``), ``captions`` (the
    non-empty stripped captions: the json's ``captions``, else its ``caption``, else the
    ``.txt``), ``img``, ``img_shape`` and ``ori_shape``; the pipeline then runs on it.

    **The pipeline** must start with an mmcv ``LoadImageFromFile``, as the json datasets'
    pipelines (the shipped CLIM pipelines work unchanged). It is not run: its ``color_type``,
    ``imdecode_backend`` and ``to_float32`` decode the image bytes of the tar, so that an image
    gives the same pixels as through the json datasets. The transforms after it run in order.

    **Who reads what.** A reader is a dataloader worker of a rank (the rank's main process when
    ``num_workers=0``): slot ``rank * num_workers + worker_id`` of ``world_size * num_workers``.
    In epoch ``e`` the shards are ordered by :func:`shard_order` (permuted with ``(seed, e)``
    when ``shuffle``) and the shard at position ``i`` goes to slot ``i % (world_size *
    num_workers)``: readers read disjoint shards. With ``shuffle`` each shard's samples are also
    permuted (seeded with ``(seed, e, shard)``; this holds one shard's undecoded bytes in
    memory).

    **Equal epochs.** DDP hangs unless every rank yields as many samples, so each reader yields
    exactly :func:`reader_quota` samples per epoch, the least any slot can be dealt (the sum of
    the ``num_shards // num_readers`` smallest shards), and ``len(self)`` (the epoch length of a
    rank) is ``max(num_workers, 1)`` times that. A reader stops there; the samples it leaves are
    logged (info) and, with ``shuffle``, read in later epochs. When shards split evenly (as many
    samples per slot), an epoch reads every sample exactly once over all ranks and workers. A
    reader whose shards run out first (bad samples, a truncated shard) reads them again from
    the start of its epoch to fill its quota, with a warning.

    **Epochs.** ``__iter__`` yields one epoch and ends; the runner's loops then iterate the
    dataloader again (``IterBasedTrainLoop`` endlessly). The epoch read is the one last given to
    :meth:`set_epoch` (0 at first) plus the number of epochs this copy of the dataset has
    iterated since. That is right in the main process (``num_workers=0``) and with
    ``persistent_workers=True`` (each worker's copy counts its epochs) without calling
    :meth:`set_epoch`; with non-persistent workers, forked anew from the main process's copy
    every epoch, call :meth:`set_epoch` before each epoch (else every epoch reads epoch 0's
    order).

    **Bad data.** A sample without an image member or a caption, whose json is unreadable or
    whose image fails to decode or is under ``min_image_size``, a sample a later transform raises
    :class:`~mmclim.datasets.bad_image.BadImageError` for, a shard that cannot be opened and a
    truncated or corrupt tar (its samples before the damage are used) are bad: with
    ``on_bad_entry='skip'`` they are counted per reason in ``bad_samples`` (the first in
    ``bad_sample_names``), logged at the first and every ``BAD_IMAGE_LOG_INTERVAL``-th, and
    summarised by :meth:`summarize_bad_samples` (also when the process ends), per process as
    :class:`~mmclim.datasets.CaptionDataset` does; with ``'raise'`` a sample raises
    :class:`BadImageError` and a shard ``ValueError``, naming the shard and the key (the
    member). Samples a transform returns None for are counted too, never raised for.

    Args:
        shards (str | Sequence[str]): Shard files relative to ``data_root``: a brace pattern
            (``'cc3m/{00000..00331}.tar'``) or a list of paths or patterns.
        pipeline (Sequence[dict]): Transforms, the first an mmcv ``LoadImageFromFile`` (see
            above).
        data_root (str): Root of ``shards`` and ``index_file``. Defaults to ``''``.
        index_file (str, optional): The shard index (:func:`write_shard_index`) relative to
            ``data_root``; every shard must be in it. Defaults to None (then ``num_samples``).
        num_samples (int, optional): Without an index: the samples of all the shards, taken to
            hold ``num_samples // num_shards`` each (exact for evenly filled shards). Defaults to
            None.
        num_workers (int): The dataloader's ``num_workers``, which the split and the epoch
            length depend on; checked when iterating. Defaults to 0.
        shuffle (bool): Permute the shards and each shard's samples every epoch. Defaults to
            True.
        seed (int): Seed of the permutations, the same on every rank. Defaults to 0.
        on_bad_entry (str): ``'skip'`` or ``'raise'`` (see above). Defaults to ``'skip'``.
        min_image_size (int): Shorter side, in pixels, below which an image is bad. Defaults to
            :data:`~mmclim.datasets.caption_dataset.DEFAULT_MIN_IMAGE_SIZE` (8).

    Example:
        >>> dataset = WebDatasetCaptions(
        ...     data_root='data/cc3m/', shards='train/{00000..00331}.tar',
        ...     index_file='train/index.json', num_workers=4, pipeline=train_pipeline)
    """

    METAINFO: dict = dict()

    def __init__(self,
                 shards: Union[str, Sequence[str]],
                 pipeline: Sequence[dict],
                 data_root: str = '',
                 index_file: Optional[str] = None,
                 num_samples: Optional[int] = None,
                 num_workers: int = 0,
                 shuffle: bool = True,
                 seed: int = 0,
                 on_bad_entry: str = 'skip',
                 min_image_size: int = DEFAULT_MIN_IMAGE_SIZE) -> None:
        name = type(self).__name__
        if on_bad_entry not in BAD_ENTRY_POLICIES:
            raise ValueError(f'{name}: on_bad_entry must be one of {BAD_ENTRY_POLICIES}, got '
                             f'{on_bad_entry!r}')
        for field, value, least in (('min_image_size', min_image_size, 1),
                                    ('num_workers', num_workers, 0), ('seed', seed, 0)):
            if isinstance(value, bool) or not (isinstance(value, int) and value >= least):
                raise ValueError(f'{name}: {field} must be an int >= {least}, got {value!r}')
        self.data_root = data_root
        self.shard_paths = self._expand(shards)
        self.shard_counts = self._counts(index_file, num_samples)
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.on_bad_entry = on_bad_entry
        self.min_image_size = min_image_size
        self.pipeline = Compose(pipeline)
        self.decoder = self._check_pipeline(self.pipeline.transforms)
        # The epoch of the next ``__iter__``: the last ``set_epoch`` plus the iterations since.
        self._epoch = 0
        self._iterations = 0
        # Set by ``skip_samples``: (epoch, samples each worker of this rank consumed in it,
        # the worker whose batch came next).
        self._resume: Optional[Tuple[int, List[int], int]] = None
        # Bad samples and shards skipped by this process (see the class docstring).
        self._skips = SkipCounter('samples or shards skipped', 'samples')

    @property
    def metainfo(self) -> dict:
        """No classes: a caption dataset (what the runner's visualizer reads)."""
        return dict(self.METAINFO)

    def _expand(self, shards: Union[str, Sequence[str]]) -> List[str]:
        patterns = [shards] if isinstance(shards, str) else list(shards)
        paths = [self._join(path) for pattern in patterns for path in expand_urls(pattern)]
        if not paths:
            raise ValueError(f'{type(self).__name__}: shards {shards!r} names no shard')
        if len(set(paths)) != len(paths):
            raise ValueError(f'{type(self).__name__}: shards {shards!r} names a shard twice')
        return paths

    def _join(self, path: str) -> str:
        remote = '://' in path or path.startswith('pipe:')
        return path if remote or not self.data_root else osp.join(self.data_root, path)

    def _counts(self, index_file: Optional[str], num_samples: Optional[int]) -> List[int]:
        """Samples per shard, in the order of ``shard_paths``."""
        name = type(self).__name__
        if (index_file is None) == (num_samples is None):
            raise ValueError(f'{name}: give exactly one of index_file (per-shard sample counts, '
                             'written by tools/dataset_converters/captions_to_webdataset.py) and '
                             f'num_samples, got index_file={index_file!r}, '
                             f'num_samples={num_samples!r}')
        if num_samples is not None:
            if isinstance(num_samples, bool) or not (isinstance(num_samples, int)
                                                     and num_samples >= len(self.shard_paths)):
                raise ValueError(f'{name}: num_samples must be an int >= the number of shards '
                                 f'({len(self.shard_paths)}), got {num_samples!r}')
            return [num_samples // len(self.shard_paths)] * len(self.shard_paths)
        index_path = self._join(index_file)
        index = load_shard_index(index_path)
        folder = osp.dirname(index_path)
        names = [osp.relpath(path, folder) for path in self.shard_paths]
        missing = [name for name in names if name not in index]
        if missing:
            raise KeyError(f'{name}: shard index {index_path} lacks {len(missing)} of the '
                           f'{len(names)} shards (first: {missing[:NUM_REPORTED_IDS]})')
        return [index[name] for name in names]

    def _check_pipeline(self, transforms: Sequence[Any]) -> LoadImageFromFile:
        """The pipeline's leading image loader, which decodes the tar's images; see the class
        docstring."""
        name = type(self).__name__
        if not transforms or not isinstance(transforms[0], LoadImageFromFile):
            first = type(transforms[0]).__name__ if transforms else 'an empty pipeline'
            raise ValueError(f'{name}: pipeline[0] must be an mmcv LoadImageFromFile, whose '
                             'color_type, imdecode_backend and to_float32 decode the images of '
                             f'the shards (it is not run: the images come from the tar), got '
                             f'{first}')
        for index, transform in enumerate(transforms[1:], 1):
            if isinstance(transform, LoadImageFromFile):
                raise ValueError(f'{name}: pipeline[{index}] is a second image loader '
                                 f'({type(transform).__name__}); the image comes from the tar')
        return transforms[0]

    def _reader(self) -> Tuple[int, int, int]:
        """This process's rank, its dataloader worker id (0 in the main process) and the
        number of reader slots.

        Raises:
            ValueError: When the dataloader's worker count is not ``num_workers``.
        """
        rank, world_size = get_dist_info()
        info = get_worker_info()
        running = 0 if info is None else info.num_workers
        if running != self.num_workers:
            raise ValueError(f'{type(self).__name__}: built with num_workers={self.num_workers} '
                             f'but iterated by {running} dataloader workers; set the dataset\'s '
                             'num_workers to the dataloader\'s (the shard split and the epoch '
                             'length depend on it)')
        readers = max(self.num_workers, 1)
        worker = 0 if info is None else info.id
        return rank, worker, world_size * readers

    def _quota(self) -> int:
        """Samples each reader yields per epoch (:func:`reader_quota`)."""
        _, world_size = get_dist_info()
        try:
            return reader_quota(self.shard_counts, world_size * max(self.num_workers, 1))
        except ValueError as error:
            raise ValueError(f'{type(self).__name__} {self.shard_paths[0]}...: {error} '
                             f'(world size {world_size}, num_workers {self.num_workers})') from None

    def __len__(self) -> int:
        """Samples this rank yields per epoch: ``max(num_workers, 1)`` reader quotas."""
        return max(self.num_workers, 1) * self._quota()

    def set_epoch(self, epoch: int) -> None:
        """Read ``epoch`` at the next ``__iter__`` (and the following epochs after it).

        Args:
            epoch (int): The epoch, >= 0. A pending :meth:`skip_samples` for another epoch is
                dropped.
        """
        self._epoch, self._iterations = epoch, 0
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None

    def skip_samples(self, num_samples: int, batch_size: int, drop_last: bool = False) -> None:
        """Start the stream right after the samples this rank has consumed since the start.

        Call it before the dataloader is first iterated (before its workers start), e.g. on
        resume with ``num_samples = runner.iter * batch_size``. It works out the epoch these
        samples end in and, for each worker, how many of that epoch's samples it had yielded:
        the dataloader takes batch ``b`` of an epoch from worker ``b % num_workers``, and every
        worker yields ``ceil(quota / batch_size)`` batches per epoch (``floor`` with
        ``drop_last``: the short last batch is dropped). The next ``__iter__`` of each worker
        then reads that epoch and starts after the consumed samples: shards wholly consumed
        (by the index counts) are not opened, the shard it stopped in is read and its first
        samples dropped. As the new dataloader starts its round-robin at worker 0, worker ``j``
        continues the stream of the worker whose batch was ``j``-th next, so the batches come
        exactly as they would have without the interruption. Later epochs follow as usual.
        Exact while no sample of the consumed shards was bad; each bad one makes its worker's
        stream restart one sample earlier.

        Args:
            num_samples (int): Samples this rank consumed since epoch 0 began: iterations x
                ``batch_size``; a multiple of ``batch_size``.
            batch_size (int): The dataloader's per-rank batch size.
            drop_last (bool): The dataloader's ``drop_last``. Defaults to False.

        Raises:
            ValueError: When ``num_samples`` is not a multiple of ``batch_size``, or an epoch
                holds no batch.
        """
        name = type(self).__name__
        if batch_size < 1 or num_samples < 0 or num_samples % batch_size:
            raise ValueError(f'{name}: skip_samples needs num_samples (got {num_samples}), a '
                             f'multiple >= 0 of batch_size (got {batch_size})')
        quota, workers = self._quota(), max(self.num_workers, 1)
        per_worker = quota // batch_size if drop_last else math.ceil(quota / batch_size)
        if per_worker == 0:
            raise ValueError(f'{name}: a worker yields {quota} samples per epoch, no batch of '
                             f'{batch_size} with drop_last')
        epoch, batches = divmod(num_samples // batch_size, workers * per_worker)
        offsets = [min(quota, (batches // workers + (worker < batches % workers)) * batch_size)
                   for worker in range(workers)]
        self._epoch, self._iterations = epoch, 0
        self._resume = (epoch, offsets, batches % workers)

    def __iter__(self) -> Iterator[dict]:
        rank, worker, num_slots = self._reader()
        readers = max(self.num_workers, 1)
        epoch = self._epoch + self._iterations
        self._iterations += 1
        start, role = 0, worker
        if self._resume is not None:
            resume_epoch, offsets, next_worker = self._resume
            self._resume = None
            if resume_epoch == epoch:
                # A new dataloader takes its first batch from worker 0: worker j reads on for
                # the worker whose batch came j-th next, so the batches come in the same order.
                role = (worker + next_worker) % readers
                start = offsets[role]
        return self._read_epoch(epoch, rank * readers + role, num_slots, start)

    def _read_epoch(self, epoch: int, slot: int, num_slots: int, start: int) -> Iterator[dict]:
        """Yield reader ``slot``'s quota of epoch ``epoch``, after its first ``start``."""
        mine = shard_order(len(self.shard_paths), self.seed, epoch, self.shuffle)[slot::num_slots]
        quota = reader_quota(self.shard_counts, num_slots)
        held = sum(self.shard_counts[i] for i in mine)
        if held > quota:
            print_log(f'{type(self).__name__}: epoch {epoch}, reader {slot} of {num_slots} reads '
                      f'{quota} of the {held} samples of its {len(mine)} shards (every reader '
                      f'reads {quota}, the least one can be dealt); {held - quota} left over',
                      logger='current', level=logging.INFO)
        remaining, skip, first = quota - start, start, 0
        while first < len(mine) and remaining > 0 and self.shard_counts[mine[first]] <= skip:
            skip -= self.shard_counts[mine[first]]
            first += 1
        full_pass = start == 0
        while remaining > 0:
            read = 0
            for shard in mine[first:]:
                for data in self._shard_samples(shard, epoch, skip):
                    yield data
                    read += 1
                    remaining -= 1
                    if remaining == 0:
                        return
                skip = 0
            if read == 0 and full_pass:
                raise RuntimeError(f'{type(self).__name__}: reader {slot} of {num_slots} found no '
                                   f'usable sample in its {len(mine)} shards of epoch {epoch} '
                                   f'(first: {self.shard_paths[mine[0]]}); bad samples: '
                                   f'{self.bad_samples}')
            print_log(f'{type(self).__name__}: epoch {epoch}, reader {slot}: its shards ran out '
                      f'{remaining} samples short of its quota of {quota} (bad samples: '
                      f'{self.bad_samples}); reading them again from the start',
                      logger='current', level=logging.WARNING)
            first, skip, full_pass = 0, 0, True

    def _shard_samples(self, shard: int, epoch: int, skip: int) -> Iterator[dict]:
        """Shard ``shard``'s usable samples through the pipeline, in epoch ``epoch``'s order,
        after its first ``skip`` samples (dropped unread: not decoded, not checked)."""
        path = self.shard_paths[shard]
        samples: Iterator[dict] = self._read_shard(path)
        if self.shuffle:
            in_order = list(samples)
            permutation = np.random.default_rng([self.seed, epoch, shard]).permutation(
                len(in_order))
            samples = iter([in_order[i] for i in permutation])
        for position, sample in enumerate(samples):
            if position >= skip:
                data = self._prepare(path, sample)
                if data is not None:
                    yield data

    def _open_shard(self, path: str) -> Any:
        """Open a shard for reading (webdataset's ``gopen``: a local file, a URL, ``pipe:``)."""
        return gopen(path)

    def _read_shard(self, path: str) -> Iterator[dict]:
        """The raw samples of a shard (webdataset's dicts: ``__key__`` and member extension ->
        bytes), counting a shard that cannot be opened or is truncated or corrupt."""
        try:
            stream = self._open_shard(path)
        except OSError as error:
            self._bad_shard(path, UNREADABLE_SHARD, f'cannot be opened ({error})', error)
            return
        errors: List[Exception] = []
        members: List[str] = []

        def stop_shard(error: Exception) -> bool:
            errors.append(error)
            return False

        def note_member(member: str) -> bool:
            members[:] = [member]
            return True

        try:
            files = tar_file_expander([dict(url=path, stream=stream)], handler=stop_shard,
                                      select_files=note_member)
            yield from group_by_keys(files, handler=stop_shard)
        finally:
            stream.close()
        if errors:
            where = f'at or after member {members[0]}' if members else 'at its start'
            detail = f'{type(errors[0]).__name__}: {errors[0].args[0] if errors[0].args else ""}'
            self._bad_shard(path, CORRUPT_SHARD, f'is truncated or corrupt {where} ({detail})',
                            errors[0])

    def _bad_shard(self, path: str, reason: str, detail: str, error: Exception) -> None:
        message = f'{type(self).__name__}: shard {path} {detail}'
        if self.on_bad_entry == 'raise':
            raise ValueError(f"{message}; set on_bad_entry='skip' to train without it") from error
        self._count_bad(reason, path, message)

    def _prepare(self, path: str, sample: dict) -> Optional[dict]:
        """A raw sample through the pipeline; None when it is bad (and skipped) or dropped."""
        where = f'{path}#{sample["__key__"]}'
        try:
            data = self._data_info(where, sample)
            for transform in self.pipeline.transforms[1:]:
                data = transform(data)
                if data is None:
                    self._count_bad(DROPPED_BY_TRANSFORM, where,
                                    f'{type(self).__name__}: {type(transform).__name__} '
                                    f'returned None for sample {where}')
                    return None
            return data
        except BadImageError as error:
            message = f'{type(self).__name__}: shard {path} sample {sample["__key__"]}: {error}'
            if self.on_bad_entry == 'raise':
                raise BadImageError(error.path, error.reason,
                                    f"{message}; set on_bad_entry='skip' to train without "
                                    'it') from error
            self._count_bad(error.reason, where, message)
            return None

    def _data_info(self, where: str, sample: dict) -> dict:
        """The data info of a raw sample (see the class docstring).

        Raises:
            BadImageError: For a sample without an image member or a caption, with an
                unreadable json, or whose image fails to decode or is under
                ``min_image_size``.
        """
        extension = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if extension is None:
            members = sorted(k for k in sample if not k.startswith('__'))
            raise BadImageError(where, NO_IMAGE_MEMBER, f'sample {where} has no image member '
                                f'({", ".join(IMAGE_EXTENSIONS)}), only {members}')
        metadata: Any = {}
        if METADATA_EXTENSION in sample:
            try:
                metadata = json.loads(sample[METADATA_EXTENSION])
            except (ValueError, UnicodeDecodeError) as error:
                raise BadImageError(where, BAD_METADATA, f'sample {where}: its .json is not '
                                    f'json ({error})') from error
            if not isinstance(metadata, dict):
                raise BadImageError(where, BAD_METADATA, f'sample {where}: its .json holds '
                                    f'{type(metadata).__name__}, not an object')
        captions = self._captions(sample, metadata)
        if not captions:
            raise BadImageError(where, NO_CAPTION, f'sample {where} has no caption (json '
                                f'"{METADATA_CAPTIONS_FIELD}" or "{METADATA_CAPTION_FIELD}", or '
                                f'.{CAPTION_EXTENSION})')
        img = self._decode(where, sample[extension])
        img_id = metadata.get(METADATA_ID_FIELD, sample['__key__'])
        if isinstance(img_id, bool) or not isinstance(img_id, (int, str)):
            img_id = sample['__key__']
        return dict(img_id=img_id, img_path=where, captions=captions, img=img,
                    img_shape=img.shape[:2], ori_shape=img.shape[:2])

    @staticmethod
    def _captions(sample: dict, metadata: dict) -> List[str]:
        """The first non-empty of: the json's captions, its caption, the .txt."""
        text = sample.get(CAPTION_EXTENSION)
        sources = (metadata.get(METADATA_CAPTIONS_FIELD), metadata.get(METADATA_CAPTION_FIELD),
                   None if text is None else text.decode('utf-8', errors='replace'))
        for source in sources:
            values = [source] if isinstance(source, str) else source
            if isinstance(values, list):
                captions = [c.strip() for c in values if isinstance(c, str) and c.strip()]
                if captions:
                    return captions
        return []

    def _decode(self, where: str, data: bytes) -> np.ndarray:
        """Decode image bytes as the pipeline's loader would (see the class docstring)."""
        if not data:
            raise BadImageError(where, EMPTY_IMAGE, f'the image of sample {where} is empty')
        try:
            img = mmcv.imfrombytes(data, flag=self.decoder.color_type,
                                   backend=self.decoder.imdecode_backend)
        except LOAD_ERRORS as error:
            detail = f'{type(error).__name__}: {error}'.splitlines()[0]
            raise BadImageError(where, UNDECODABLE_IMAGE,
                                f'the image of sample {where} cannot be decoded ({detail})'
                                ) from error
        if img is None:
            raise BadImageError(where, UNDECODABLE_IMAGE,
                                f'the image of sample {where} cannot be decoded')
        if min(img.shape[:2]) < self.min_image_size:
            raise BadImageError(where, TOO_SMALL_IMAGE,
                                f'the image of sample {where} is {img.shape[0]}x{img.shape[1]} '
                                f'pixels, its shorter side under '
                                f'min_image_size={self.min_image_size}')
        return img.astype(np.float32) if self.decoder.to_float32 else img

    @property
    def bad_samples(self) -> Dict[str, int]:
        """Reason -> samples and shards this process skipped."""
        return self._skips.counts

    @property
    def bad_sample_names(self) -> List[str]:
        """The first samples (``'<shard>#<key>'``) and shards this process skipped."""
        return self._skips.first

    def _count_bad(self, reason: str, name: str, message: str) -> None:
        """Count and (the first, then every ``BAD_IMAGE_LOG_INTERVAL``-th) log a skip."""
        self._skips.count(self._report_name(), reason, name,
                          f"{message}; skipped (on_bad_entry='skip')")

    def _report_name(self) -> str:
        return f'{type(self).__name__} {self.shard_paths[0]}... ({len(self.shard_paths)} shards)'

    def summarize_bad_samples(self) -> Dict[str, int]:
        """Log the bad samples and shards this process skipped, and return their counts.

        Returns:
            dict: Reason -> number skipped (a copy of ``bad_samples``); empty when none.
        """
        return self._skips.summarize(self._report_name())
