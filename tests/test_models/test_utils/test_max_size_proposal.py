# Copyright (c) mmclim contributors. All rights reserved.
"""max_size_proposal: a hand-worked example (a proposal outside every box, one below the IoF
threshold, top-k cutting the largest, clamping changing which is largest, a proposal straddling
two boxes), the fallback, unchanged inputs, input checks, and a loop reference on random boxes."""
from typing import List

import pytest
import torch

from mmclim.models.utils import max_size_proposal

PSEUDO_BOXES = [
    [0.0, 0.0, 10.0, 10.0],  # B0
    [10.0, 0.0, 20.0, 12.0],  # B1
    [0.0, 20.0, 10.0, 30.0],  # B2: no proposal, falls back to itself
]
# (box, score, what happens), IoF = intersection / proposal area.
PROPOSALS = [
    ([1.0, 1.0, 5.0, 5.0], 0.9),  # B0, IoF 1, area 16
    ([-6.0, 0.0, 6.0, 10.0], 0.85),  # B0, IoF 60/120; area 120, clamped 60
    ([-2.0, 0.0, 9.0, 10.0], 0.7),  # B0, IoF 90/110; area 110, clamped 90: the answer for B0
    ([0.0, 0.0, 10.0, 9.5], 0.1),  # B0, IoF 1, area 95, but 4th by score: cut by top-3
    ([-40.0, 0.0, 10.0, 10.0], 0.95),  # B0, IoF 100/500 = 0.2 <= 0.3: dropped; clamped area 100
    ([30.0, 30.0, 40.0, 40.0], 0.99),  # outside every box
    ([8.0, 0.0, 20.0, 10.0], 0.5),  # IoF 20/120 with B0, 100/120 with B1: B1, clamped area 100
    ([12.0, 2.0, 18.0, 8.0], 0.6),  # B1, area 36
]
HAND_TOPK = 3
# B0: top 3 by score are rows 0, 1, 2, clamped areas 16, 60, 90 (row 1 has the largest area,
# 120, before clamping). B1: row 6 clamped to [10, 0, 20, 10] (area 100) beats row 7 (36).
EXPECTED = [[0.0, 0.0, 9.0, 10.0], [10.0, 0.0, 20.0, 10.0], [0.0, 20.0, 10.0, 30.0]]


def _hand_inputs() -> tuple:
    proposals = torch.tensor([box for box, _ in PROPOSALS])
    scores = torch.tensor([score for _, score in PROPOSALS])
    return proposals, scores, torch.tensor(PSEUDO_BOXES)


def test_hand_example_and_inputs_unchanged() -> None:
    proposals, scores, pseudo_boxes = _hand_inputs()
    copies = [proposals.clone(), scores.clone(), pseudo_boxes.clone()]
    result = max_size_proposal(proposals, scores, pseudo_boxes, topk=HAND_TOPK, iof_thr=0.3)
    assert result.tolist() == EXPECTED
    for original, copy in zip((proposals, scores, pseudo_boxes), copies):
        assert torch.equal(original, copy)
    result[:] = -1.0  # the result does not alias the pseudo boxes (the fallback row)
    assert torch.equal(pseudo_boxes, copies[2])


def test_top_k_and_iof_threshold_decide() -> None:
    proposals, scores, pseudo_boxes = _hand_inputs()
    # With the default top-128, row 3 (area 95) is kept and beats row 2 (90).
    assert max_size_proposal(proposals, scores, pseudo_boxes)[0].tolist() == [0, 0, 10, 9.5]
    # With an IoF threshold of 0.1, row 4 (IoF 0.2, best score) is kept: clamped, area 100.
    assert max_size_proposal(proposals, scores, pseudo_boxes, topk=HAND_TOPK,
                             iof_thr=0.1)[0].tolist() == [0, 0, 10, 10]
    # The threshold is exclusive: IoF 100/200 = 0.5 is kept above 0.49, not at 0.5 (fallback).
    half_inside, box = torch.tensor([[-10.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0, 10, 20]])
    assert max_size_proposal(half_inside, torch.ones(1), box,
                             iof_thr=0.49).tolist() == [[0, 0, 10, 10]]
    assert max_size_proposal(half_inside, torch.ones(1), box,
                             iof_thr=0.5).tolist() == [[0, 0, 10, 20]]


def test_fallback_without_proposals() -> None:
    pseudo_boxes = torch.tensor(PSEUDO_BOXES)
    result = max_size_proposal(torch.zeros(0, 4), torch.zeros(0), pseudo_boxes)
    assert torch.equal(result, pseudo_boxes) and result.data_ptr() != pseudo_boxes.data_ptr()
    # Every proposal outside: each box falls back to itself.
    outside = torch.tensor([[50.0, 50.0, 60.0, 60.0]])
    assert torch.equal(max_size_proposal(outside, torch.ones(1), pseudo_boxes), pseudo_boxes)
    assert max_size_proposal(outside, torch.ones(1), torch.zeros(0, 4)).shape == (0, 4)


def _reference(proposals: List[List[float]], scores: List[float], boxes: List[List[float]],
               topk: int, iof_thr: float) -> List[List[float]]:
    """The official steps as loops over Python floats (no tensor code of the function)."""

    def area(b: List[float]) -> float:
        return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)

    assigned: List[List[int]] = [[] for _ in boxes]
    for index, p in enumerate(proposals):
        iofs = []
        for b in boxes:
            inter = [max(p[0], b[0]), max(p[1], b[1]), min(p[2], b[2]), min(p[3], b[3])]
            iofs.append(area(inter) / area(p))
        best = max(range(len(boxes)), key=lambda g: iofs[g])
        if iofs[best] > iof_thr:
            assigned[best].append(index)
    result = []
    for g, b in enumerate(boxes):
        kept = sorted(assigned[g], key=lambda i: -scores[i])[:topk]
        if not kept:
            result.append(list(b))
            continue
        clamped = [[min(max(proposals[i][k], b[k % 2]), b[2 + k % 2]) for k in range(4)]
                   for i in kept]
        result.append(max(clamped, key=area))
    return result


def test_matches_a_loop_reference_on_random_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    num_proposals, cell = 300, 50.0
    corners = torch.rand(num_proposals, 2, generator=generator, dtype=torch.float64) * 2 * cell
    sizes = 1.0 + torch.rand(num_proposals, 2, generator=generator, dtype=torch.float64) * 40.0
    proposals = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(num_proposals, generator=generator, dtype=torch.float64)
    # A 2 x 2 mosaic of 50-pixel cells, plus a composed box over the top row (it gets only the
    # proposals straddling cells 0 and 1: equal IoFs go to the first box).
    boxes = torch.tensor([[0, 0, 50, 50], [50, 0, 100, 50], [0, 50, 50, 100],
                          [50, 50, 100, 100], [0, 0, 100, 50]], dtype=torch.float64)
    for topk, iof_thr in ((128, 0.3), (5, 0.5), (1, 0.0)):
        result = max_size_proposal(proposals, scores, boxes, topk=topk, iof_thr=iof_thr)
        expected = _reference(proposals.tolist(), scores.tolist(), boxes.tolist(), topk, iof_thr)
        assert torch.allclose(result, torch.tensor(expected, dtype=torch.float64)), (topk, iof_thr)


@pytest.mark.parametrize('kwargs, message', [
    (dict(scores=torch.ones(7)), r'scores must have shape \(8,\)'),
    (dict(proposals=torch.ones(8, 5)), r'proposals must have shape \(K, 4\)'),
    (dict(pseudo_boxes=torch.ones(3)), r'pseudo_boxes must have shape \(K, 4\)'),
    (dict(topk=0), 'topk must be a positive int'),
    (dict(iof_thr=1.0), r'iof_thr must be a number in \[0, 1\)'),
])
def test_invalid_inputs_name_the_argument(kwargs: dict, message: str) -> None:
    proposals, scores, pseudo_boxes = _hand_inputs()
    args = dict(proposals=proposals, scores=scores, pseudo_boxes=pseudo_boxes)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        max_size_proposal(**args)
