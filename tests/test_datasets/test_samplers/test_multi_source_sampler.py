# Copyright (c) mmclim contributors. All rights reserved.
import itertools
import logging
from typing import Dict, List, Optional, Tuple

import pytest
from mmdet.registry import DATA_SAMPLERS
from mmengine.dataset import BaseDataset, ConcatDataset
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from torch.utils.data import DataLoader

from mmclim.datasets import ExactMultiSourceSampler

PORTRAIT, LANDSCAPE = (30, 40), (40, 30)  # (width, height) of the fixture images


class _Infos(BaseDataset):
    """Data infos only (no images), for the sampler."""

    def __init__(self, infos: List[dict]) -> None:
        self._infos = infos
        super().__init__(serialize_data=False, pipeline=[])

    def load_data_list(self) -> List[dict]:
        return [dict(info) for info in self._infos]


def _source(source: int, sizes: List[Optional[Tuple[int, int]]]) -> _Infos:
    infos = []
    for index, size in enumerate(sizes):
        info = dict(source=source, index=index)
        if size is not None:
            info.update(width=size[0], height=size[1])
        infos.append(info)
    return _Infos(infos)


# Source 0 (detection): 4 portrait then 6 landscape images, dataset indices 0-9.
# Source 1 (captions): 2 portrait then 6 landscape, indices 10-17.
# Source 2 (mosaics): 6 images without sizes, indices 18-23.
SIZES = [[PORTRAIT] * 4 + [LANDSCAPE] * 6, [PORTRAIT] * 2 + [LANDSCAPE] * 6, [None] * 6]
OFFSETS = (0, 10, 18)
# The group of every grouped dataset index, written out from SIZES: 0 portrait, 1 landscape.
GROUP = {**{i: 0 for i in range(0, 4)}, **{i: 1 for i in range(4, 10)},
         **{i: 0 for i in range(10, 12)}, **{i: 1 for i in range(12, 18)}}


def three_sources(sizes=SIZES) -> ConcatDataset:
    return ConcatDataset([_source(s, source_sizes) for s, source_sizes in enumerate(sizes)])


def batches(sampler, num: int, batch_size: int) -> List[List[int]]:
    stream = iter(sampler)
    return [list(itertools.islice(stream, batch_size)) for _ in range(num)]


def test_each_batch_takes_the_counts_in_source_order() -> None:
    sampler = ExactMultiSourceSampler(three_sources(), batch_size=6, source_ratio=[2, 3, 1],
                                      seed=0, ungrouped_sources=[2], rank=0, world_size=1)
    groups = set()
    for batch in batches(sampler, 60, 6):
        assert all(0 <= i < 10 for i in batch[:2])
        assert all(10 <= i < 18 for i in batch[2:5])
        assert 18 <= batch[5] < 24
        # the grouped sources (0 and 1) share one aspect-ratio group per batch
        assert len({GROUP[i] for i in batch[:5]}) == 1
        groups.add(GROUP[batch[0]])
    assert groups == {0, 1}


def test_unshuffled_streams_by_hand() -> None:
    sizes = [[None] * 10, [None] * 6]  # dataset indices 0-9 and 10-15
    rank0 = ExactMultiSourceSampler(three_sources(sizes), batch_size=3, source_ratio=[2, 1],
                                    shuffle=False, seed=0, ungrouped_sources=[0, 1], rank=0,
                                    world_size=1)
    assert batches(rank0, 3, 3) == [[0, 1, 10], [2, 3, 11], [4, 5, 12]]
    # Rank 1 of 2 takes the items 1, 3, 5, ... of each source's stream.
    rank1 = ExactMultiSourceSampler(three_sources(sizes), batch_size=3, source_ratio=[2, 1],
                                    shuffle=False, seed=0, ungrouped_sources=[0, 1], rank=1,
                                    world_size=2)
    assert batches(rank1, 4, 3) == [[1, 3, 11], [5, 7, 13], [9, 1, 15], [3, 5, 11]]


def test_ranks_take_disjoint_shares_with_the_same_groups() -> None:
    per_rank: List[Dict[tuple, List[int]]] = []
    group_sequences = []
    for rank in (0, 1):
        sampler = ExactMultiSourceSampler(three_sources(), batch_size=5, source_ratio=[2, 2, 1],
                                          seed=3, ungrouped_sources=[2], rank=rank, world_size=2)
        drawn: Dict[tuple, List[int]] = {}
        sequence = []
        for batch in batches(sampler, 40, 5):
            group = GROUP[batch[0]]
            sequence.append(group)
            drawn.setdefault((0, group), []).extend(batch[:2])
            drawn.setdefault((1, group), []).extend(batch[2:4])
            drawn.setdefault((2, None), []).append(batch[4])
        per_rank.append(drawn)
        group_sequences.append(sequence)
    assert group_sequences[0] == group_sequences[1]  # every rank draws the same groups
    # Within the first pass over each stream, the ranks' shares are disjoint and cover it.
    members = {(0, 0): set(range(0, 4)), (0, 1): set(range(4, 10)), (1, 0): {10, 11},
               (1, 1): set(range(12, 18)), (2, None): set(range(18, 24))}
    for key, expected in members.items():
        half = len(expected) // 2
        first, second = (set(drawn[key][:half]) for drawn in per_rank)
        assert not first & second and first | second == expected, key


def test_seeded_and_restartable() -> None:
    def first_indices(seed: int, shuffle: bool = True) -> List[int]:
        sampler = ExactMultiSourceSampler(three_sources(), batch_size=6, source_ratio=[2, 2, 2],
                                          seed=seed, ungrouped_sources=[2], shuffle=shuffle,
                                          rank=0, world_size=1)
        return list(itertools.islice(iter(sampler), 120))

    assert first_indices(7) == first_indices(7)
    assert first_indices(7) != first_indices(8)
    sampler = ExactMultiSourceSampler(three_sources(), batch_size=6, source_ratio=[2, 2, 2],
                                      seed=7, ungrouped_sources=[2], rank=0, world_size=1)
    assert list(itertools.islice(iter(sampler), 120)) == first_indices(7)  # iter() restarts
    assert list(itertools.islice(iter(sampler), 120)) == first_indices(7)


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__()
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            self.messages.append(record.getMessage())


def test_source_without_a_group_falls_back_with_one_warning() -> None:
    # Source 1 has landscape images only: in portrait batches it gives landscape ones.
    sizes = [SIZES[0], [LANDSCAPE] * 6, SIZES[2]]
    handler = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        sampler = ExactMultiSourceSampler(three_sources(sizes), batch_size=4,
                                          source_ratio=[1, 2, 1], seed=0, ungrouped_sources=[2],
                                          rank=0, world_size=1)
    finally:
        logger.removeHandler(handler)
    assert len(handler.messages) == 1
    assert 'source 1 has no image of aspect group 0 (portrait)' in handler.messages[0]
    portrait_batches = 0
    for batch in batches(sampler, 40, 4):
        assert 0 <= batch[0] < 10 and all(10 <= i < 16 for i in batch[1:3])
        portrait_batches += batch[0] < 4
    assert portrait_batches > 0


def test_builds_from_the_registry_for_a_dataloader() -> None:
    init_default_scope('mmdet')
    dataset = three_sources()
    sampler = DATA_SAMPLERS.build(
        dict(type='ExactMultiSourceSampler', batch_size=6, source_ratio=[2, 2, 2],
             ungrouped_sources=[2]), default_args=dict(dataset=dataset, seed=1))
    assert isinstance(sampler, ExactMultiSourceSampler) and sampler.seed == 1
    assert len(sampler) == 24 and sampler.set_epoch(3) is None
    loader = DataLoader(dataset, batch_size=6, sampler=sampler, collate_fn=list)
    for batch in itertools.islice(loader, 5):
        assert [info['source'] for info in batch] == [0, 0, 1, 1, 2, 2]
    assert 'source_ratio=[2, 2, 2]' in repr(sampler)


def test_errors_name_the_field() -> None:
    dataset = three_sources()
    with pytest.raises(ValueError, match=r'batch_size: expected sum\(source_ratio\) = 6'):
        ExactMultiSourceSampler(dataset, batch_size=5, source_ratio=[2, 2, 2], seed=0,
                                ungrouped_sources=[2])
    with pytest.raises(ValueError, match='source_ratio: expected 3 positive ints'):
        ExactMultiSourceSampler(dataset, batch_size=4, source_ratio=[2, 2], seed=0)
    with pytest.raises(ValueError, match='source_ratio: expected 3 positive ints'):
        ExactMultiSourceSampler(dataset, batch_size=4, source_ratio=[2, 2, 0], seed=0)
    with pytest.raises(TypeError, match='must be a ConcatDataset'):
        ExactMultiSourceSampler(dataset.datasets[0], batch_size=2, source_ratio=[2], seed=0)
    with pytest.raises(KeyError, match=r'data info 0 of source 2 \(_Infos\) has no "width"'):
        ExactMultiSourceSampler(dataset, batch_size=6, source_ratio=[2, 2, 2], seed=0)
    with pytest.raises(ValueError, match='ungrouped_sources: expected distinct source indices'):
        ExactMultiSourceSampler(dataset, batch_size=6, source_ratio=[2, 2, 2], seed=0,
                                ungrouped_sources=[3])
    with pytest.raises(ValueError, match='source 1 .* is empty'):
        ExactMultiSourceSampler(three_sources([SIZES[0], [], SIZES[2]]), batch_size=6,
                                source_ratio=[2, 2, 2], seed=0, ungrouped_sources=[2])
    with pytest.raises(ValueError, match='0 <= rank < world_size'):
        ExactMultiSourceSampler(dataset, batch_size=6, source_ratio=[2, 2, 2], seed=0,
                                ungrouped_sources=[2], rank=2, world_size=2)
