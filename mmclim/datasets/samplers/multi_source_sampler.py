# Copyright (c) mmclim contributors. All rights reserved.
import itertools
from typing import Dict, Iterator, List, Optional, Sequence, Sized, Tuple

import numpy as np
from mmdet.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import Sampler

# Aspect-ratio groups, as mmdet's samplers: 0 when width < height (portrait), else 1.
PORTRAIT, LANDSCAPE = 0, 1
GROUPS = (PORTRAIT, LANDSCAPE)
# Kinds of random streams, each seeded by ``(seed, kind, source, group)``.
INDEX_STREAM, GROUP_STREAM = 0, 1
# The ``group`` of the stream of an ungrouped source.
UNGROUPED = len(GROUPS)
WARNING = 30  # logging.WARNING


def aspect_group(width: float, height: float) -> int:
    """The aspect-ratio group of an image: :data:`PORTRAIT` if ``width < height``, else
    :data:`LANDSCAPE`."""
    return PORTRAIT if width < height else LANDSCAPE


@DATA_SAMPLERS.register_module()
class ExactMultiSourceSampler(Sampler):
    """Infinite sampler drawing a fixed number of images from each source of a ConcatDataset.

    Each batch of ``batch_size = sum(source_ratio)`` indices is ``source_ratio[0]`` images of
    source 0, then ``source_ratio[1]`` of source 1, and so on, in source order (which a
    multi-branch model relies on to split the batch). The images of all grouped sources of a
    batch share one aspect-ratio group (:func:`aspect_group` of the data infos' ``width`` and
    ``height``), drawn per batch with probability proportional to the group's size over the
    grouped sources; sources listed in ``ungrouped_sources`` (a mosaic source, whose output is
    square whatever its images; a source without image sizes) ignore the group.

    Compared with mmdet's ``MultiSourceSampler`` / ``GroupMultiSourceSampler`` (and the official
    Detic + CLIM ``CustomGroupMultiSourceSampler``): any number of sources is grouped; the
    counts are exactly ``source_ratio`` (mmdet rounds ``batch_size * ratio / sum`` and gives the
    remainder to source 0); the group draw uses a private generator seeded by ``seed`` instead
    of numpy's global state, so all ranks draw the same group sequence; and a grouped source
    without images of the drawn group takes images of the other group for that batch (warned
    once when the sampler is built) instead of failing.

    Distributed: every rank walks the same seeded stream of each (source, group) and takes the
    items ``rank, rank + world_size, ...`` of it, so the ranks' images are disjoint within an
    epoch of each stream. Each stream is a new permutation per pass (or ``0 .. n - 1`` without
    ``shuffle``). ``iter(sampler)`` restarts every stream from the seed, so a resumed run that
    skips the trained iterations sees the same data. Use it with ``IterBasedTrainLoop``;
    ``set_epoch`` does nothing.

    Example:
        >>> train_dataloader = dict(
        ...     batch_size=6,  # = sum(source_ratio), per GPU
        ...     batch_sampler=None,
        ...     sampler=dict(type='ExactMultiSourceSampler', batch_size=6,
        ...                  source_ratio=[2, 2, 2], ungrouped_sources=[2]),
        ...     dataset=dict(type='ConcatDataset', datasets=[detection, captions, mosaics]))

    Args:
        dataset (Sized): An ``mmengine.dataset.ConcatDataset`` (with ``datasets`` and
            ``cumulative_sizes``); source ``i`` is ``dataset.datasets[i]``.
        batch_size (int): Images per batch per GPU; must equal ``sum(source_ratio)``.
        source_ratio (Sequence[int]): Images of each source per batch, one positive int per
            source.
        shuffle (bool): Shuffle each source's images. Defaults to True.
        seed (int, optional): Seed of every random stream; must be the same on all ranks.
            Defaults to None (``mmengine.dist.sync_random_seed()``).
        ungrouped_sources (Sequence[int]): Sources not grouped by aspect ratio. Defaults to
            ``()`` (every source is grouped, and needs ``width`` and ``height``).
        rank (int, optional): This process's rank. Defaults to None (mmengine's
            ``get_dist_info()``).
        world_size (int, optional): Number of processes. Defaults to None (``get_dist_info()``).
    """

    def __init__(self,
                 dataset: Sized,
                 batch_size: int,
                 source_ratio: Sequence[int],
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 ungrouped_sources: Sequence[int] = (),
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        name = type(self).__name__
        if not (hasattr(dataset, 'datasets') and hasattr(dataset, 'cumulative_sizes')):
            raise TypeError(f'{name}: dataset must be a ConcatDataset (with datasets and '
                            f'cumulative_sizes), got {type(dataset).__name__}')
        num_sources = len(dataset.datasets)
        if (isinstance(source_ratio, (str, int)) or len(source_ratio) != num_sources or not all(
                isinstance(n, (int, np.integer)) and n >= 1 for n in source_ratio)):
            raise ValueError(f'{name}.source_ratio: expected {num_sources} positive ints (images '
                             f'per batch of each source of the ConcatDataset), got '
                             f'{source_ratio!r}')
        if batch_size != sum(source_ratio):
            raise ValueError(f'{name}.batch_size: expected sum(source_ratio) = '
                             f'{sum(source_ratio)} (source_ratio={list(source_ratio)}), got '
                             f'{batch_size!r}; train_dataloader.batch_size must equal it too')
        bad = [s for s in ungrouped_sources if not 0 <= s < num_sources]
        if bad or len(set(ungrouped_sources)) != len(ungrouped_sources):
            raise ValueError(f'{name}.ungrouped_sources: expected distinct source indices in '
                             f'[0, {num_sources}), got {list(ungrouped_sources)}')
        dist_rank, dist_world_size = get_dist_info()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f'{name}: expected 0 <= rank < world_size, got rank={self.rank}, '
                             f'world_size={self.world_size}')
        self.seed = sync_random_seed() if seed is None else seed
        if not (isinstance(self.seed, (int, np.integer)) and self.seed >= 0):
            raise ValueError(f'{name}.seed: expected a non-negative int, got {self.seed!r}')

        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.source_ratio = [int(n) for n in source_ratio]
        self.shuffle = shuffle
        self.ungrouped_sources = tuple(int(s) for s in ungrouped_sources)
        self.offsets = [0, *dataset.cumulative_sizes[:-1]]
        for source, source_dataset in enumerate(dataset.datasets):
            if len(source_dataset) == 0:
                raise ValueError(f'{name}: source {source} ({type(source_dataset).__name__}) of '
                                 f'the ConcatDataset is empty')
        # source -> per-group lists of the source's own indices (grouped sources only).
        self.group_indices: Dict[int, Tuple[List[int], ...]] = {
            source: self._group(source)
            for source in range(num_sources) if source not in self.ungrouped_sources
        }
        group_sizes = np.zeros(len(GROUPS), dtype=np.float64)
        for members in self.group_indices.values():
            group_sizes += [len(indices) for indices in members]
        self.group_ratio = group_sizes / max(group_sizes.sum(), 1)
        for source, members in self.group_indices.items():
            for group in GROUPS:
                if not members[group] and self.group_ratio[group] > 0:
                    print_log(
                        f'{name}: source {source} has no image of aspect group {group} '
                        f'({"portrait" if group == PORTRAIT else "landscape"}) while other '
                        f'sources have; in batches of that group it gives images of the other '
                        f'group', logger='current', level=WARNING)

    def _group(self, source: int) -> Tuple[List[int], ...]:
        """Split a grouped source's indices by :func:`aspect_group`."""
        members: Tuple[List[int], ...] = tuple([] for _ in GROUPS)
        source_dataset = self.dataset.datasets[source]
        for index in range(len(source_dataset)):
            info = source_dataset.get_data_info(index)
            if info.get('width') is None or info.get('height') is None:
                raise KeyError(
                    f'{type(self).__name__}: data info {index} of source {source} '
                    f'({type(source_dataset).__name__}) has no "width" and "height" to group it '
                    f'by aspect ratio; add them to its annotation, or list the source in '
                    f'ungrouped_sources=[{source}]')
            members[aspect_group(info['width'], info['height'])].append(index)
        return members

    def _stream(self, source: int, group: int, size: int) -> Iterator[int]:
        """This rank's share of an endless seeded walk over ``range(size)``."""
        rng = np.random.default_rng([self.seed, INDEX_STREAM, source, group])

        def endless() -> Iterator[int]:
            while True:
                yield from (rng.permutation(size).tolist() if self.shuffle else range(size))

        return itertools.islice(endless(), self.rank, None, self.world_size)

    def _dataset_indices(self, source: int, group: int, members: Sequence[int]) -> Iterator[int]:
        """The ConcatDataset indices of this rank's stream over ``members`` of ``source``."""
        offset = self.offsets[source]
        for i in self._stream(source, group, len(members)):
            yield offset + members[i]

    def _streams(self) -> Dict[Tuple[int, int], Iterator[int]]:
        """Fresh streams of dataset indices, by (source, group)."""
        streams = {}
        for source, source_dataset in enumerate(self.dataset.datasets):
            if source in self.group_indices:
                for group, members in enumerate(self.group_indices[source]):
                    if members:
                        streams[source, group] = self._dataset_indices(source, group, members)
            else:
                streams[source, UNGROUPED] = self._dataset_indices(
                    source, UNGROUPED, range(len(source_dataset)))
        return streams

    def __iter__(self) -> Iterator[int]:
        streams = self._streams()
        group_rng = np.random.default_rng([self.seed, GROUP_STREAM, 0, 0])
        while True:
            group = (int(group_rng.choice(len(GROUPS), p=self.group_ratio))
                     if self.group_indices else UNGROUPED)
            for source, count in enumerate(self.source_ratio):
                if source not in self.group_indices:
                    key = source, UNGROUPED
                elif (source, group) in streams:
                    key = source, group
                else:  # no image of this group in this source: the other group
                    key = source, LANDSCAPE if group == PORTRAIT else PORTRAIT
                yield from itertools.islice(streams[key], count)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Nothing: the sampler is infinite (``IterBasedTrainLoop``)."""

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(batch_size={self.batch_size}, '
                f'source_ratio={self.source_ratio}, shuffle={self.shuffle}, seed={self.seed}, '
                f'ungrouped_sources={self.ungrouped_sources}, rank={self.rank}, '
                f'world_size={self.world_size})')
