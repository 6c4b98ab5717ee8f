# Copyright (c) mmclim contributors. All rights reserved.
"""BaronCaptionLoss: the soft-target contrastive loss on a hand-worked example, its two halves,
the bag and caption queues (FIFO, newest first, capped, detached, not saved), loss_weight, empty
input and input checks."""
import math
from typing import List

import pytest
import torch
from mmdet.registry import MODELS

from mmclim.models.losses import BaronCaptionLoss, soft_target_contrastive_loss
from mmclim.models.utils import FeatureQueue

# Hand example in 2-D: three bags (two of image 7, one of image 9) and three captions (images 7,
# 9 and 4: no bag of image 4, so caption row 2 has no positive).
BAGS = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
CAPTIONS = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]
BAG_IDS = [7, 7, 9]
CAPTION_IDS = [7, 9, 4]
SCALE = 2.0
EPS = 1e-6  # the official soft cross-entropy divides by (number of positives + 1e-6)
TOLERANCE = 1e-12
# Dot products bag i . caption j, by hand, times SCALE:
#   bag 0: [1, 0.8, 0]        -> [2, 1.6, 0]
#   bag 1: [0, 0.6, 1]        -> [0, 1.2, 2]
#   bag 2: [0.6, 0.96, 0.8]   -> [1.2, 1.92, 1.6]
LOGITS = [[2.0, 1.6, 0.0], [0.0, 1.2, 2.0], [1.2, 1.92, 1.6]]


def _lse(values: List[float]) -> float:
    return math.log(sum(math.exp(v) for v in values))


def _column(j: int) -> List[float]:
    return [row[j] for row in LOGITS]


# Bags -> captions: row i's positives are the captions of its image.
BAG_HALF = ((_lse(LOGITS[0]) - 2.0) / (1 + EPS) + (_lse(LOGITS[1]) - 0.0) / (1 + EPS) +
            (_lse(LOGITS[2]) - 1.92) / (1 + EPS)) / 3
# Captions -> bags (the transposed logits): caption 0 has bags 0 and 1, caption 1 has bag 2,
# caption 2 none (adds 0, counts in the mean).
CAPTION_HALF = ((2 * _lse(_column(0)) - 2.0 - 0.0) / (2 + EPS) + (_lse(_column(1)) - 1.92) /
                (1 + EPS) + 0.0) / 3
EXPECTED = 0.5 * BAG_HALF + 0.5 * CAPTION_HALF


def _tensor(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _ids(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def test_hand_computed_loss_and_symmetric_halves() -> None:
    bags, captions = _tensor(BAGS), _tensor(CAPTIONS)
    loss = soft_target_contrastive_loss(bags, captions, _ids(BAG_IDS), _ids(CAPTION_IDS), SCALE)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(EXPECTED, abs=TOLERANCE)
    swapped = soft_target_contrastive_loss(captions, bags, _ids(CAPTION_IDS), _ids(BAG_IDS), SCALE)
    assert swapped.item() == pytest.approx(EXPECTED, abs=TOLERANCE)
    # The halves are not equal here, so a one-sided loss would not give EXPECTED.
    assert abs(BAG_HALF - CAPTION_HALF) > 0.1


def test_gradient_reaches_both_sides() -> None:
    bags = _tensor(BAGS).requires_grad_()
    captions = _tensor(CAPTIONS).requires_grad_()
    soft_target_contrastive_loss(bags, captions, _ids(BAG_IDS), _ids(CAPTION_IDS), SCALE).backward()
    assert bags.grad.abs().sum() > 0 and captions.grad.abs().sum() > 0


def test_module_applies_loss_weight_and_registry_defaults() -> None:
    module = BaronCaptionLoss(logit_scale=SCALE, queue_size=0, loss_weight=10.0)
    loss = module(_tensor(BAGS), _tensor(CAPTIONS), _ids(BAG_IDS), _ids(CAPTION_IDS))
    assert loss.item() == pytest.approx(10.0 * EXPECTED, abs=1e-10)
    assert len(module.bag_queue) == 0 and len(module.caption_queue) == 0  # queues disabled
    built = MODELS.build(dict(type='BaronCaptionLoss'))
    assert isinstance(built, BaronCaptionLoss)
    assert (built.logit_scale, built.queue_size, built.loss_weight) == (30.0, 1024, 10.0)


def _unit(angle: float) -> torch.Tensor:
    return torch.tensor([[math.cos(angle), math.sin(angle)]], dtype=torch.float64)


def test_queues_feed_the_next_call_fifo_newest_first_capped() -> None:
    module = BaronCaptionLoss(logit_scale=SCALE, queue_size=3, loss_weight=1.0)
    bags_1, captions_1 = torch.cat([_unit(0.1), _unit(0.2)]), _unit(0.3)
    bag_ids_1, caption_ids_1 = _ids([1, 1]), _ids([1])
    first = module(bags_1, captions_1, bag_ids_1, caption_ids_1)
    assert first.item() == pytest.approx(
        soft_target_contrastive_loss(bags_1, captions_1, bag_ids_1, caption_ids_1, SCALE).item(),
        abs=TOLERANCE)
    assert torch.equal(module.bag_queue.feats, bags_1)
    assert module.bag_queue.ids.tolist() == [1, 1] and module.caption_queue.ids.tolist() == [1]

    # Call 2: the rows are the current bags then the queued ones, the columns likewise.
    bags_2, captions_2 = torch.cat([_unit(1.0), _unit(1.1)]), torch.cat([_unit(1.2), _unit(2.0)])
    bag_ids_2, caption_ids_2 = _ids([2, 2]), _ids([2, 3])
    second = module(bags_2, captions_2, bag_ids_2, caption_ids_2)
    expected = soft_target_contrastive_loss(
        torch.cat([bags_2, bags_1]), torch.cat([captions_2, captions_1]), _ids([2, 2, 1, 1]),
        _ids([2, 3, 1]), SCALE)
    assert second.item() == pytest.approx(expected.item(), abs=TOLERANCE)
    # Newest first, at most 3: the second bag of call 1 fell out.
    assert module.bag_queue.ids.tolist() == [2, 2, 1]
    assert torch.equal(module.bag_queue.feats, torch.cat([bags_2, bags_1[:1]]))
    assert module.caption_queue.ids.tolist() == [2, 3, 1]
    assert torch.equal(module.caption_queue.feats, torch.cat([captions_2, captions_1]))

    # A batch larger than the queue: its first rows are kept.
    module(
        torch.cat([_unit(a) for a in (3.0, 3.1, 3.2, 3.3)]), _unit(3.4), _ids([5, 5, 6, 6]),
        _ids([5]))
    assert module.bag_queue.ids.tolist() == [5, 5, 6]
    assert module.caption_queue.ids.tolist() == [5, 2, 3]


def test_queues_are_detached_and_not_saved() -> None:
    module = BaronCaptionLoss(logit_scale=SCALE, queue_size=4)
    bags = torch.tensor(BAGS, requires_grad=True)
    captions = torch.tensor(CAPTIONS)
    module(bags, captions, _ids(BAG_IDS), _ids(CAPTION_IDS)).backward()
    assert bags.grad is not None
    assert not module.bag_queue.feats.requires_grad
    bags.data.fill_(0.0)  # the queue holds a copy
    assert torch.equal(module.bag_queue.feats, torch.tensor(BAGS))
    assert module.state_dict() == {}


def test_feature_queue_extend_and_disabled() -> None:
    queue = FeatureQueue(2, name='bags')
    feats, ids = torch.eye(2), _ids([1, 2])
    assert queue.extend(feats, ids)[0] is feats  # an empty queue adds nothing
    queue.push(feats, ids)
    rows, row_ids = queue.extend(torch.ones(1, 2), _ids([3]))
    assert rows.tolist() == [[1, 1], [1, 0], [0, 1]] and row_ids.tolist() == [3, 1, 2]
    assert len(queue) == 2  # extend does not change it
    disabled = FeatureQueue(0)
    disabled.push(feats, ids)
    assert len(disabled) == 0
    with pytest.raises(ValueError, match='queue_size must be an int >= 0'):
        FeatureQueue(-1)


def test_empty_bags_give_connected_zero() -> None:
    module = BaronCaptionLoss(queue_size=4)
    bags = torch.zeros(0, 2, requires_grad=True)
    loss = module(bags, _tensor(CAPTIONS), _ids([]), _ids(CAPTION_IDS))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert bags.grad is not None and bags.grad.shape == (0, 2)


@pytest.mark.parametrize('bags, captions, bag_ids, caption_ids, message', [
    (torch.zeros(3), torch.zeros(3, 2), _ids([1, 2, 3]), _ids(
        [1, 2, 3]), r'bag_feats must be a 2-D tensor'),
    (torch.zeros(3, 2), torch.zeros(3, 3), _ids([1, 2, 3]), _ids([1, 2, 3]),
     r'bag_feats \(3, 2\) and caption_feats \(3, 3\) must have the same feature size'),
    (torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor([1, 2, 3], dtype=torch.int32),
     _ids([1, 2, 3]), r'bag_ids must be an int64 tensor of shape \(3,\)'),
    (torch.zeros(3, 2), torch.zeros(3, 2), _ids([1, 2, 3]), _ids(
        [1, 2]), r'caption_ids must be an int64 tensor of shape \(3,\) .* got shape \(2,\)'),
])
def test_invalid_inputs_are_named(bags: torch.Tensor, captions: torch.Tensor, bag_ids: torch.Tensor,
                                  caption_ids: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BaronCaptionLoss()(bags, captions, bag_ids, caption_ids)


def test_invalid_settings_and_queue_width() -> None:
    with pytest.raises(ValueError, match='logit_scale must be a positive number'):
        BaronCaptionLoss(logit_scale=0.0)
    with pytest.raises(ValueError, match='logit_scale must be a positive number'):
        soft_target_contrastive_loss(
            _tensor(BAGS), _tensor(CAPTIONS), _ids(BAG_IDS), _ids(CAPTION_IDS), -1.0)
    with pytest.raises(ValueError, match='feats_b must be a 2-D tensor'):
        soft_target_contrastive_loss(
            _tensor(BAGS), torch.zeros(2), _ids(BAG_IDS), _ids([1, 2]), SCALE)
    module = BaronCaptionLoss(queue_size=4)
    module(_tensor(BAGS), _tensor(CAPTIONS), _ids(BAG_IDS), _ids(CAPTION_IDS))
    with pytest.raises(
            ValueError, match=r'bag_feats \(1, 3\): feature size must be that of the '
            'queued bags, 2'):
        module(torch.ones(1, 3), torch.ones(1, 3), _ids([1]), _ids([1]))


def test_feature_queue_rank_state_round_trip() -> None:
    """A rank's queue is not in the state_dict; it travels through rank_state_dict instead."""
    queue = FeatureQueue(3, name='bags')
    queue.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), _ids([7, 8]))
    restored = FeatureQueue(3, name='bags')
    restored.load_rank_state_dict(queue.rank_state_dict())
    assert restored.feats.tolist() == [[1.0, 0.0], [0.0, 1.0]] and restored.ids.tolist() == [7, 8]
    rows, _ = restored.extend(torch.ones(1, 2), _ids([9]))
    assert rows.tolist() == [[1, 1], [1, 0], [0, 1]]
    with pytest.raises(ValueError, match=r'saved bags queue of \(4, 2\) .* a queue of size 3'):
        restored.load_rank_state_dict(dict(feats=torch.zeros(4, 2), ids=_ids([1, 2, 3, 4])))
