# Copyright (c) mmclim contributors. All rights reserved.
"""DeticCaptionLoss: a hand-worked multi-positive example, the FIFO caption queue, the bias
(learnable or fixed), base_batch_size, empty input, input checks and image_ids_to_tensor."""
import hashlib
import math
from typing import Tuple

import pytest
import torch
from mmdet.registry import MODELS

from mmclim.models.losses import DeticCaptionLoss, detic_caption_loss, image_ids_to_tensor

# Hand example in 2-D. Regions [3, 0] and [0, 2] normalise to [1, 0] and [0, 1]; the captions are
# unit vectors. With scale 2 and bias -1 the logits are
#   row 0: [2*1 - 1, 2*0 - 1, 2*0.6 - 1] = [1, -1, 0.2]
#   row 1: [2*0 - 1, 2*1 - 1, 2*0.8 - 1] = [-1, 1, 0.6]
REGIONS = [[3.0, 0.0], [0.0, 2.0]]
TEXTS = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
# Region 0 is composed of images 10 and 20 (two positives: captions 0 and 2); region 1 is image
# 30 alone, padded with -1 (one positive: caption 1).
REGION_IDS = [[10, 20], [30, -1]]
TEXT_IDS = [10, 30, 20]
SCALE = 2.0
BIAS = -1.0
NEG_WEIGHT = 0.5
TOLERANCE = 1e-10
FEAT_DIM = 2


def _softplus(x: float) -> float:
    return math.log(1.0 + math.exp(x))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x). Row 0: positives (weight 1/2) at logits 1 and
# 0.2, the negative (weight 0.5) at -1. Row 1: the positive (weight 1) at 1, negatives at -1, 0.6.
ROW_0 = 0.5 * _softplus(-1.0) + NEG_WEIGHT * _softplus(-1.0) + 0.5 * _softplus(-0.2)
ROW_1 = NEG_WEIGHT * _softplus(-1.0) + _softplus(-1.0) + NEG_WEIGHT * _softplus(0.6)
EXPECTED = (ROW_0 + ROW_1) / 2
# d loss / d bias = mean over rows of sum_j w_ij (sigmoid(s_ij) - y_ij).
EXPECTED_BIAS_GRAD = (0.5 * (_sigmoid(1.0) - 1) + NEG_WEIGHT * _sigmoid(-1.0) + 0.5 *
                      (_sigmoid(0.2) - 1) + NEG_WEIGHT * _sigmoid(-1.0) + (_sigmoid(1.0) - 1) +
                      NEG_WEIGHT * _sigmoid(0.6)) / 2


def _hand_inputs(
        dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                     torch.Tensor]:
    return (torch.tensor(REGIONS, dtype=dtype), torch.tensor(TEXTS, dtype=dtype),
            torch.tensor(REGION_IDS), torch.tensor(TEXT_IDS))


def _hand_module(**kwargs) -> DeticCaptionLoss:
    settings = dict(logit_scale=SCALE, bias=BIAS, neg_weight=NEG_WEIGHT, queue_size=0,
                    base_batch_size=None, loss_weight=1.0)
    settings.update(kwargs)
    return DeticCaptionLoss(**settings)


def test_hand_computed_multi_positive() -> None:
    regions, texts, region_ids, text_ids = _hand_inputs()
    loss = detic_caption_loss(regions, texts, region_ids, text_ids, SCALE, BIAS, NEG_WEIGHT)
    assert loss.item() == pytest.approx(EXPECTED, abs=TOLERANCE)
    tensor_args = detic_caption_loss(regions, texts, region_ids, text_ids, torch.tensor(SCALE),
                                     torch.tensor([BIAS]), NEG_WEIGHT)
    assert tensor_args.item() == pytest.approx(EXPECTED, abs=TOLERANCE)
    # Region ids given as a single column are the same labels when there is one image each.
    single = detic_caption_loss(regions[1:], texts, region_ids[1:, :1], text_ids, SCALE, BIAS,
                                NEG_WEIGHT)
    assert single.item() == pytest.approx(ROW_1, abs=TOLERANCE)


def test_module_matches_hand_value_and_bias_gets_its_gradient() -> None:
    regions, texts, region_ids, text_ids = _hand_inputs()
    module = _hand_module()
    assert isinstance(module.bias, torch.nn.Parameter)
    assert [name for name, _ in module.named_parameters()] == ['bias']
    loss = module(regions, texts, region_ids, text_ids)
    assert loss.item() == pytest.approx(EXPECTED, abs=1e-6)  # the parameter is float32
    loss.backward()
    assert module.bias.grad.item() == pytest.approx(EXPECTED_BIAS_GRAD, abs=1e-6)


@pytest.mark.parametrize('kwargs, value', [(dict(learn_bias=False), BIAS),
                                           (dict(bias=None), 0.0)])
def test_fixed_bias_is_not_a_parameter(kwargs: dict, value: float) -> None:
    module = _hand_module(**kwargs)
    assert list(module.parameters()) == []
    assert module.bias == value
    regions, texts, region_ids, text_ids = _hand_inputs()
    expected = detic_caption_loss(regions, texts, region_ids, text_ids, SCALE, value, NEG_WEIGHT)
    assert module(regions, texts, region_ids, text_ids).item() == pytest.approx(
        expected.item(), abs=TOLERANCE)


def test_base_batch_size_and_loss_weight_scale_the_loss() -> None:
    regions, texts, region_ids, text_ids = _hand_inputs()
    module = _hand_module(base_batch_size=4, loss_weight=0.1, learn_bias=False)
    # 2 regions over a base batch of 4, times 0.1.
    assert module(regions, texts, region_ids, text_ids).item() == pytest.approx(
        0.1 * 2 / 4 * EXPECTED, abs=TOLERANCE)


def test_registry_builds_the_ov_coco_defaults() -> None:
    module = MODELS.build(dict(type='DeticCaptionLoss'))
    assert isinstance(module, DeticCaptionLoss)
    assert module.logit_scale == 25.0 and module.bias.item() == -20.0
    assert module.neg_weight == 0.125 and module.queue_size == 256
    assert module.base_batch_size == 4 and module.loss_weight == 0.1


def _unit(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_queue_is_fifo_newest_first_and_feeds_the_next_call() -> None:
    module = _hand_module(queue_size=3, learn_bias=False)
    a, b, c, d, e = (_unit(1.0, 0.0), _unit(0.0, 1.0), _unit(0.6, 0.8), _unit(0.8, 0.6),
                     _unit(-1.0, 0.0))
    region = torch.tensor([[2.0, 1.0]], dtype=torch.float64)

    # Call 1: captions A (image 1) and B (image 2); the region is image 1.
    module(region, torch.cat([a, b]), torch.tensor([[1]]), torch.tensor([1, 2]))
    assert module.queue_image_ids.tolist() == [1, 2]
    assert torch.equal(module.queue_feats, torch.cat([a, b]))

    # Call 2: captions C (3) and D (4). Region 0 is image 2, whose only caption is the queued B;
    # region 1 is image 1 and 3 (a composed region). The columns are C, D, A, B.
    regions = torch.cat([region, region.flip(1)])
    region_ids = torch.tensor([[2, -1], [1, 3]])
    loss = module(regions, torch.cat([c, d]), region_ids, torch.tensor([3, 4]))
    expected = detic_caption_loss(regions, torch.cat([c, d, a, b]), region_ids,
                                  torch.tensor([3, 4, 1, 2]), SCALE, BIAS, NEG_WEIGHT)
    assert loss.item() == pytest.approx(expected.item(), abs=TOLERANCE)
    # Newest first, capped at 3: B, the oldest, fell out.
    assert module.queue_image_ids.tolist() == [3, 4, 1]
    assert torch.equal(module.queue_feats, torch.cat([c, d, a]))

    # Call 3: B is gone, so a region of image 2 has no positive any more.
    with pytest.raises(ValueError, match=r'region_image_ids: region 0 .* no positive'):
        module(region, e, torch.tensor([[2]]), torch.tensor([5]))
    assert module.queue_image_ids.tolist() == [3, 4, 1]  # a failed call does not enqueue
    module(region, e, torch.tensor([[4]]), torch.tensor([5]))
    assert module.queue_image_ids.tolist() == [5, 3, 4]
    assert torch.equal(module.queue_feats, torch.cat([e, c, d]))


def test_queue_keeps_the_first_rows_of_a_batch_larger_than_it() -> None:
    module = _hand_module(queue_size=2)
    module.enqueue(torch.eye(3), torch.tensor([7, 8, 9]))
    assert module.queue_image_ids.tolist() == [7, 8]
    assert torch.equal(module.queue_feats, torch.eye(3)[:2])


def test_queue_is_detached_not_saved_and_optional() -> None:
    module = _hand_module(queue_size=4)
    texts = torch.tensor(TEXTS, requires_grad=True)
    regions, _, region_ids, text_ids = _hand_inputs(torch.float32)
    module(regions, texts, region_ids, text_ids, update_queue=False)
    assert module.queue_image_ids.numel() == 0
    module(regions, texts, region_ids, text_ids)
    assert module.queue_image_ids.tolist() == TEXT_IDS
    assert not module.queue_feats.requires_grad
    texts.data.fill_(0.0)  # the queue holds a copy
    assert torch.equal(module.queue_feats, torch.tensor(TEXTS))
    assert set(module.state_dict()) == {'bias'}

    disabled = _hand_module(queue_size=0)
    disabled(regions, texts.detach(), region_ids, text_ids)
    assert disabled.queue_image_ids.numel() == 0
    with pytest.raises(ValueError, match='feature size must be that of the queued captions, 2'):
        module.enqueue(torch.ones(1, 3), torch.tensor([1]))


def test_empty_input_gives_connected_zero() -> None:
    module = _hand_module(queue_size=4)
    regions = torch.zeros(0, FEAT_DIM, requires_grad=True)
    texts = torch.zeros(0, FEAT_DIM, requires_grad=True)
    loss = module(regions, texts, torch.zeros(0, 1, dtype=torch.int64),
                  torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert regions.grad is not None and regions.grad.shape == (0, FEAT_DIM)
    assert texts.grad is not None
    assert module.bias.grad is not None and module.bias.grad.item() == 0.0


def test_bfloat16_autocast_computes_in_float32() -> None:
    generator = torch.Generator().manual_seed(0)
    regions = torch.randn(6, 16, generator=generator).bfloat16()
    texts = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator)).bfloat16()
    region_ids = torch.arange(6)[:, None]
    text_ids = torch.arange(6)
    expected = detic_caption_loss(regions.double(), texts.double(), region_ids, text_ids, 25.0,
                                  -20.0, 0.125)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = detic_caption_loss(regions, texts, region_ids, text_ids, 25.0,
                                  torch.tensor(-20.0), 0.125)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)


@pytest.mark.parametrize('region_ids, text_ids, message', [
    ([[10, 20], [30, -2]], TEXT_IDS, r'region_image_ids: image ids must be >= 0 .* got -2'),
    (REGION_IDS, [10, -3, 20], r'text_image_ids: image ids must be >= 0, got -3'),
    ([[10, 20], [31, -1]], TEXT_IDS, r'region_image_ids: region 1 \(image ids \[31, -1\]\)'),
    ([10, 30], TEXT_IDS, r'region_image_ids must be an int64 tensor of shape \(2, K\)'),
    ([[10.0], [30.0]], TEXT_IDS, r'region_image_ids must be an int64 .*float'),
    (REGION_IDS, [10, 30], r'text_image_ids must be an int64 tensor of shape \(3,\)'),
])
def test_invalid_ids_name_the_argument(region_ids: list, text_ids: list, message: str) -> None:
    regions, texts, _, _ = _hand_inputs()
    with pytest.raises(ValueError, match=message):
        detic_caption_loss(regions, texts, torch.tensor(region_ids), torch.tensor(text_ids),
                           SCALE, BIAS, NEG_WEIGHT)


def test_invalid_settings_name_the_argument() -> None:
    regions, texts, region_ids, text_ids = _hand_inputs()
    with pytest.raises(ValueError, match='text_feats .* same feature size'):
        detic_caption_loss(regions, texts[:, :1], region_ids, text_ids, SCALE, BIAS, NEG_WEIGHT)
    with pytest.raises(ValueError, match='logit_scale must be a positive number'):
        detic_caption_loss(regions, texts, region_ids, text_ids, 0.0, BIAS, NEG_WEIGHT)
    with pytest.raises(ValueError, match=r'bias .* got shape \(2,\)'):
        detic_caption_loss(regions, texts, region_ids, text_ids, SCALE, torch.ones(2), 1.0)
    with pytest.raises(ValueError, match='neg_weight must be a non-negative number'):
        detic_caption_loss(regions, texts, region_ids, text_ids, SCALE, BIAS, -1.0)
    with pytest.raises(ValueError, match='queue_size must be an int >= 0'):
        DeticCaptionLoss(queue_size=-1)
    with pytest.raises(ValueError, match='base_batch_size must be a positive int or None'):
        DeticCaptionLoss(base_batch_size=0)


def test_image_ids_to_tensor() -> None:
    ids = image_ids_to_tensor([5, '5', 'COCO_val2014_000000000042', 42, '42', 5])
    assert ids.dtype == torch.int64 and ids.shape == (6, )
    assert (ids >= 0).all()
    # One rule for all ids: the blake2b digest of the id's text, 8 bytes little-endian, 63 bits.
    digest = hashlib.blake2b(b'5', digest_size=8).digest()
    assert ids[0].item() == int.from_bytes(digest, 'little') & ((1 << 63) - 1)
    assert ids[0] == ids[1] == ids[5] and ids[3] == ids[4]
    assert len({ids[0].item(), ids[2].item(), ids[3].item()}) == 3
    assert image_ids_to_tensor([]).shape == (0, )
    for bad in (True, 1.5, (1, 2)):
        with pytest.raises(TypeError, match=r'ids\[1\] must be an int or a str'):
            image_ids_to_tensor([1, bad])
