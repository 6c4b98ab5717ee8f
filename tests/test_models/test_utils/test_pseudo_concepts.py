# Copyright (c) mmclim contributors. All rights reserved.
"""The teacher's pseudo concept labels on a hand-made case."""
import math

import pytest
import torch

from mmclim.models.utils import pseudo_concept_labels


def test_top_concept_labels_and_threshold() -> None:
    pool = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # Region 0 is concept 0, region 1 (unnormalised) concept 1; region 2 leans slightly to 0.
    regions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.1, 0.0, 1.0]])
    result = pseudo_concept_labels(regions, pool, temperature=1.0, threshold=0.6)
    sigmoid_1 = 1 / (1 + math.exp(-1))  # softmax of logits (1, 0)
    lean = 0.1 / math.sqrt(1.01)  # region 2's cosine with concept 0
    assert result.labels.tolist() == [0, 1, 0]
    assert result.probs[0].tolist() == pytest.approx([sigmoid_1, 1 - sigmoid_1], rel=1e-6)
    assert result.probs[1].tolist() == pytest.approx([1 - sigmoid_1, sigmoid_1], rel=1e-6)
    assert result.probs[2, 0].item() == pytest.approx(1 / (1 + math.exp(-lean)), rel=1e-6)
    assert result.keep.tolist() == [True, True, False]  # 0.52 < 0.6 < 0.73


def test_no_region_above_the_threshold_keeps_all_and_empty_input() -> None:
    pool = torch.eye(2)
    regions = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert pseudo_concept_labels(regions, pool, 1.0, threshold=0.9).keep.tolist() == [True, True]
    empty = pseudo_concept_labels(torch.zeros(0, 2), pool)
    assert empty.probs.shape == (0, 2) and empty.labels.numel() == 0
    with pytest.raises(ValueError, match='concept_pool'):
        pseudo_concept_labels(regions, torch.eye(3))
