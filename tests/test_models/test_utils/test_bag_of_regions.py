# Copyright (c) mmclim contributors. All rights reserved.
"""Bags of regions: sample_bag on hand-made proposals of one mosaic cell (each filter removes the
proposal built to fail it, and lets it through once relaxed), boxes_in_frame, the sine box
encoding worked by hand, BoxPositionalEmbedding, random_permutations and drop_words."""
import math
from typing import Set, Tuple

import pytest
import torch

from mmclim.models.utils import (BAG_SAMPLING_DEFAULTS, BoxPositionalEmbedding, boxes_in_frame,
                                 drop_words, random_permutations, sample_bag, sine_box_encoding)

# The top-left cell of a 2x2 mosaic of 200 x 200: its right neighbour starts at x = 100.
FRAME = [0.0, 0.0, 100.0, 100.0]
# Thresholds of the hand example (the official ones, with a lower objectness threshold).
SETTINGS = dict(
    topk=128,
    shape_ratio_thr=0.25,
    area_ratio_thr=0.01,
    objectness_thr=0.5,
    nms_thr=0.2,
    max_num=10,
    inside_thr=0.5)
# (box, score): what happens to it with SETTINGS.
PROPOSALS = [
    ([10.0, 10.0, 40.0, 40.0], 0.9),  # 0: kept
    ([60.0, 10.0, 90.0, 40.0], 0.8),  # 1: kept
    ([92.0, 10.0, 132.0, 40.0], 0.95),  # 2: 8 * 30 of 40 * 30 inside (0.2 < 0.5): dropped
    ([80.0, 60.0, 110.0, 90.0], 0.7),  # 3: 20 of its 30 wide inside (0.67): clipped to x2 = 100
    ([10.0, 60.0, 70.0, 70.0], 0.86),  # 4: width / height 60 / 10 = 6 >= 4: shape filter
    ([50.0, 50.0, 55.0, 55.0], 0.84),  # 5: area 25 / 10000 = 0.0025 <= 0.01: area filter
    ([40.0, 75.0, 60.0, 95.0], 0.3),  # 6: score 0.3 <= 0.5: objectness filter
    ([12.0, 12.0, 42.0, 42.0], 0.6),  # 7: IoU 784 / 1016 = 0.77 > 0.2 with 0 (better): NMS
]
CLIPPED_3 = (80.0, 60.0, 100.0, 90.0)
EXPECTED = {(10.0, 10.0, 40.0, 40.0), (60.0, 10.0, 90.0, 40.0), CLIPPED_3}


def _inputs(offset: Tuple[float, float] = (0.0, 0.0)) -> Tuple[torch.Tensor, ...]:
    shift = torch.tensor([offset[0], offset[1], offset[0], offset[1]])
    boxes = torch.tensor([box for box, _ in PROPOSALS]) + shift
    scores = torch.tensor([score for _, score in PROPOSALS])
    return boxes, scores, torch.tensor(FRAME) + shift


def _as_set(boxes: torch.Tensor) -> Set[Tuple[float, ...]]:
    rows = [tuple(row) for row in boxes.tolist()]
    assert len(rows) == len(set(rows))
    return set(rows)


def _sample(seed: int = 0, **changes) -> torch.Tensor:
    boxes, scores, frame = _inputs()
    settings = dict(SETTINGS, **changes)
    return sample_bag(
        boxes, scores, frame, generator=torch.Generator().manual_seed(seed), **settings)


def test_hand_example_keeps_the_expected_boxes_inside_the_frame() -> None:
    result = _sample()
    assert result.shape == (3, 4) and result.dtype == torch.float32
    assert _as_set(result) == EXPECTED
    assert (result[:, :2] >= 0).all() and (result[:, 2:] <= 100).all()
    # The same cell elsewhere in the mosaic gives the same bag, shifted.
    boxes, scores, frame = _inputs(offset=(100.0, 100.0))
    shifted = sample_bag(boxes, scores, frame, **SETTINGS)
    assert _as_set(shifted - 100.0) == EXPECTED


@pytest.mark.parametrize(
    'relaxed, index, box',
    [
        (dict(shape_ratio_thr=0.1), 4, (10.0, 60.0, 70.0, 70.0)),
        (dict(area_ratio_thr=0.001), 5, (50.0, 50.0, 55.0, 55.0)),
        (dict(objectness_thr=0.2), 6, (40.0, 75.0, 60.0, 95.0)),
        (dict(nms_thr=0.9), 7, (12.0, 12.0, 42.0, 42.0)),
        # Inside-fraction 0.2 >= 0.1: proposal 2 comes back, clipped to the frame.
        (dict(inside_thr=0.1), 2, (92.0, 10.0, 100.0, 40.0)),
    ])
def test_each_filter_removes_its_proposal(relaxed: dict, index: int, box: tuple) -> None:
    assert PROPOSALS[index][0][:2] == list(box[:2])  # that proposal (clipped at x2 for 2)
    assert box not in _as_set(_sample())
    assert _as_set(_sample(**relaxed)) == EXPECTED | {box}


def test_fallback_is_the_best_proposal_inside_the_frame() -> None:
    # Nothing passes a 0.99 objectness threshold: the best-scored proposal inside the frame is
    # 0 (0.9); proposal 2 (0.95) is outside it.
    assert _sample(objectness_thr=0.99).tolist() == [[10.0, 10.0, 40.0, 40.0]]


def test_topk_is_taken_among_the_proposals_inside() -> None:
    # Inside by score: 0 (0.9), 4 (0.86), 5 (0.84), 1 (0.8), 3, 7, 6. The top 4 hold 0 and 1
    # and the two that fail the filters; top 2 leaves 0 alone. Had the top-k been taken before
    # the inside filter, proposal 2 (0.95) would have cut proposal 1 from the top 4.
    assert _as_set(_sample(topk=4)) == {(10.0, 10.0, 40.0, 40.0), (60.0, 10.0, 90.0, 40.0)}
    assert _sample(topk=2).tolist() == [[10.0, 10.0, 40.0, 40.0]]


def test_at_most_max_num_drawn_uniformly() -> None:
    subsets = set()
    for seed in range(20):
        result = _sample(seed, max_num=2)
        assert result.shape == (2, 4)
        assert _as_set(result) <= EXPECTED
        subsets.add(frozenset(_as_set(result)))
    assert len(subsets) == 3  # every pair of the 3 boxes is drawn


def test_empty_inputs_give_no_box() -> None:
    frame = torch.tensor(FRAME)
    empty = sample_bag(torch.zeros(0, 4), torch.zeros(0), frame, **SETTINGS)
    assert empty.shape == (0, 4)
    outside = torch.tensor([[92.0, 10.0, 132.0, 40.0], [150.0, 0.0, 190.0, 50.0]])
    assert sample_bag(outside, torch.ones(2), frame, **SETTINGS).shape == (0, 4)


def test_defaults_are_the_official_numbers_and_run() -> None:
    assert BAG_SAMPLING_DEFAULTS == dict(
        topk=128,
        shape_ratio_thr=0.25,
        area_ratio_thr=0.01,
        objectness_thr=0.85,
        nms_thr=0.2,
        max_num=10,
        inside_thr=0.5)
    boxes, scores, frame = _inputs()
    # With objectness > 0.85: 0 (0.9) and 4 (0.86, shape filter) are left: 0 alone.
    assert sample_bag(boxes, scores, frame,
                      **BAG_SAMPLING_DEFAULTS).tolist() == [[10.0, 10.0, 40.0, 40.0]]


@pytest.mark.parametrize('changes, message', [
    (dict(boxes=torch.zeros(2, 3)), r'boxes must have shape \(P, 4\)'),
    (dict(scores=torch.zeros(3)), r'scores must have shape \(8,\)'),
    (dict(frame=torch.tensor([0.0, 0.0, 0.0, 10.0])), 'frame must have x2 > x1'),
    (dict(frame=torch.zeros(2, 2)), r'frame must have shape \(4,\)'),
    (dict(topk=0), 'topk must be an int >= 1'),
    (dict(shape_ratio_thr=1.0), r'shape_ratio_thr must be a number in \(0.0, 1.0\)'),
    (dict(area_ratio_thr=-0.1), 'area_ratio_thr must be a number in'),
    (dict(objectness_thr=float('nan')), 'objectness_thr must be a number'),
    (dict(nms_thr=1.5), 'nms_thr must be a number in'),
    (dict(max_num=2.0), 'max_num must be an int >= 1'),
    (dict(inside_thr=0.0), r'inside_thr must be a number in \(0.0, 1.0\]'),
])
def test_invalid_arguments_are_named(changes: dict, message: str) -> None:
    boxes, scores, frame = _inputs()
    kwargs = dict(SETTINGS, boxes=boxes, scores=scores, frame=frame)
    kwargs.update(changes)
    with pytest.raises(ValueError, match=message):
        sample_bag(**kwargs)


def test_normalize_boxes_hand_case() -> None:
    frame = torch.tensor([10.0, 20.0, 50.0, 100.0])  # 40 wide, 80 high
    boxes = torch.tensor([[20.0, 40.0, 30.0, 60.0], [10.0, 20.0, 50.0, 100.0]])
    # ((20 - 10) / 40, (40 - 20) / 80, (30 - 10) / 40, (60 - 20) / 80)
    assert boxes_in_frame(boxes, frame).tolist() == [[0.25, 0.25, 0.5, 0.5], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match=r'boxes must have shape \(N, 4\)'):
        boxes_in_frame(torch.zeros(4), frame)


def test_sine_box_encoding_by_hand() -> None:
    temperature, scale = 1.2, 2 * math.pi
    box = [0.5, 0.25, 0.2, 0.4]  # cx, cy, w, h
    # num_feats 4: exponents floor(i / 2) - 4 // 4 = -1, -1, 0, 0 for i = 0..3; sin at even i.
    expected = []
    for c in box:
        expected += [
            math.sin(scale * c / temperature),
            math.cos(scale * c / temperature),
            math.sin(scale * c),
            math.cos(scale * c)
        ]
    result = sine_box_encoding(torch.tensor([box], dtype=torch.float64), 4, temperature, scale)
    assert result.shape == (1, 16)
    assert result[0].tolist() == pytest.approx(expected, abs=1e-12)
    # num_feats 6: exponents -1, -1, 0, 0, 1, 1.
    six = sine_box_encoding(torch.tensor([box], dtype=torch.float64), 6, temperature, scale)
    c = box[1]
    assert six[0, 6:12].tolist() == pytest.approx([
        math.sin(scale * c / temperature),
        math.cos(scale * c / temperature),
        math.sin(scale * c),
        math.cos(scale * c),
        math.sin(scale * c * temperature),
        math.cos(scale * c * temperature)
    ],
                                                  abs=1e-12)


def test_box_positional_embedding_shape_and_box_dependence() -> None:
    torch.manual_seed(0)
    embed = BoxPositionalEmbedding(num_words=3, word_dim=8, num_feats=4)
    boxes = torch.tensor([[0.2, 0.1, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0]])
    out = embed(boxes)
    assert out.shape == (2, 3, 8)
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    # Box 0 as (cx, cy, w, h), by hand: (0.4, 0.3, 0.4, 0.4).
    features = sine_box_encoding(torch.tensor([[0.4, 0.3, 0.4, 0.4]]), 4, 1.2, 2 * math.pi)
    torch.testing.assert_close(out[0], embed.pos_proj(features).view(3, 8))
    layers = [type(layer).__name__ for layer in embed.pos_proj]
    assert layers == ['Linear', 'LayerNorm', 'Linear']
    assert embed.pos_proj[0].in_features == 16 and embed.pos_proj[2].out_features == 24
    with pytest.raises(ValueError, match='word_dim must be an int >= 1'):
        BoxPositionalEmbedding(num_words=3, word_dim=0)


@pytest.mark.parametrize('n, max_perms, count', [(3, 4, 4), (2, 4, 2), (1, 4, 1), (0, 4, 1),
                                                 (4, 30, 24), (11, 4, 4)])
def test_random_permutations_are_distinct(n: int, max_perms: int, count: int) -> None:
    perms = random_permutations(n, max_perms, generator=torch.Generator().manual_seed(n))
    assert len(perms) == count
    assert len({tuple(p) for p in perms}) == count
    for perm in perms:
        assert sorted(perm) == list(range(n))


def test_random_permutations_follow_the_generator() -> None:
    first = random_permutations(5, 4, generator=torch.Generator().manual_seed(3))
    again = random_permutations(5, 4, generator=torch.Generator().manual_seed(3))
    assert first == again
    with pytest.raises(ValueError, match='max_perms must be an int >= 1'):
        random_permutations(3, 0)


def test_drop_words() -> None:
    assert drop_words(5, 4, 0.5, training=False).all()
    generator = torch.Generator().manual_seed(0)
    keep = drop_words(10000, 4, 0.5, training=True, generator=generator)
    assert keep.shape == (10000, 4) and keep.dtype == torch.bool
    assert keep.any(dim=1).all()
    # Each word is dropped with p = 0.5, but an all-dropped row (p^4) gets its first word back:
    # the dropped fraction is p - p^4 / 4 = 0.484375.
    assert (~keep).float().mean().item() == pytest.approx(0.5 - 0.5**4 / 4, abs=0.01)
    assert drop_words(3, 4, 0.0, training=True).all()
    assert drop_words(3, 4, 1.0, training=True).tolist() == [[True, False, False, False]] * 3
    assert drop_words(0, 4, 0.5, training=True).shape == (0, 4)
    with pytest.raises(ValueError, match=r'drop_ratio must be a number in \[0.0, 1.0\]'):
        drop_words(3, 4, 1.5, training=True)
