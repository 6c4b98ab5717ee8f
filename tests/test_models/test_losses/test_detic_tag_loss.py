# Copyright (c) mmclim contributors. All rights reserved.
"""DeticTagLoss: a hand-worked example (a region without tags, a repeated tag), label lists and
multi-hot tensors, the bias, base_batch_size, empty input and input checks."""
import math

import pytest
import torch
from mmdet.registry import MODELS

from mmclim.models.losses import DeticTagLoss, detic_tag_loss, tags_to_multi_hot

# Hand example in 2-D. Regions [2, 0], [0, 5], [-4, 0] normalise to [1, 0], [0, 1], [-1, 0]; the
# class embeddings are unit vectors. With scale 2 and bias -1 the logits are
#   row 0: [1, -1, 0.2], row 1: [-1, 1, 0.6], row 2: [-3, -1, -2.2].
REGIONS = [[2.0, 0.0], [0.0, 5.0], [-4.0, 0.0]]
CLASS_EMBEDS = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
# Region 1 has no tags (an all-negative row); region 2 lists class 1 twice.
TAGS = [[0, 2], [], [1, 1]]
MULTI_HOT = [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
SCALE = 2.0
BIAS = -1.0
NEG_WEIGHT = 0.25
TOLERANCE = 1e-10
FEAT_DIM = 2


def _softplus(x: float) -> float:
    return math.log(1.0 + math.exp(x))


# BCE(x, 1) = softplus(-x) with weight 1, BCE(x, 0) = softplus(x) with weight NEG_WEIGHT.
ROW_0 = _softplus(-1.0) + NEG_WEIGHT * _softplus(-1.0) + _softplus(-0.2)
ROW_1 = NEG_WEIGHT * (_softplus(-1.0) + _softplus(1.0) + _softplus(0.6))
ROW_2 = NEG_WEIGHT * _softplus(-3.0) + _softplus(1.0) + NEG_WEIGHT * _softplus(-2.2)
EXPECTED = (ROW_0 + ROW_1 + ROW_2) / 3


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# d loss / d bias = mean over rows of sum_c w_ic (sigmoid(s_ic) - y_ic).
EXPECTED_BIAS_GRAD = ((_sigmoid(1.0) - 1) + NEG_WEIGHT * _sigmoid(-1.0) + (_sigmoid(0.2) - 1) +
                      NEG_WEIGHT * (_sigmoid(-1.0) + _sigmoid(1.0) + _sigmoid(0.6)) +
                      NEG_WEIGHT * _sigmoid(-3.0) + (_sigmoid(-1.0) - 1) +
                      NEG_WEIGHT * _sigmoid(-2.2)) / 3


def _hand_module(**kwargs) -> DeticTagLoss:
    settings = dict(logit_scale=SCALE, bias=BIAS, neg_weight=NEG_WEIGHT, base_batch_size=None,
                    loss_weight=1.0)
    settings.update(kwargs)
    return DeticTagLoss(**settings)


def test_hand_computed() -> None:
    regions = torch.tensor(REGIONS, dtype=torch.float64)
    embeds = torch.tensor(CLASS_EMBEDS, dtype=torch.float64)
    loss = detic_tag_loss(regions, embeds, torch.tensor(MULTI_HOT), SCALE, BIAS, NEG_WEIGHT)
    assert loss.item() == pytest.approx(EXPECTED, abs=TOLERANCE)
    # Bool targets and tensor scale and bias give the same value.
    as_bool = detic_tag_loss(regions, embeds,
                             torch.tensor(MULTI_HOT).bool(), torch.tensor(SCALE),
                             torch.tensor([BIAS]), NEG_WEIGHT)
    assert as_bool.item() == pytest.approx(EXPECTED, abs=TOLERANCE)


def test_tags_to_multi_hot() -> None:
    assert tags_to_multi_hot(TAGS, 3).tolist() == MULTI_HOT
    assert tags_to_multi_hot([torch.tensor([2, 0]), torch.tensor([], dtype=torch.int64),
                              torch.tensor([1])], 3).tolist() == MULTI_HOT
    assert tags_to_multi_hot([], 3).shape == (0, 3)


def test_module_accepts_label_lists_and_multi_hot() -> None:
    regions = torch.tensor(REGIONS, dtype=torch.float64)
    embeds = torch.tensor(CLASS_EMBEDS, dtype=torch.float64)
    module = _hand_module()
    from_lists = module(regions, embeds, TAGS)
    from_tensor = module(regions, embeds, torch.tensor(MULTI_HOT))
    assert from_lists.item() == pytest.approx(EXPECTED, abs=1e-6)  # the parameter is float32
    assert from_tensor.item() == pytest.approx(from_lists.item(), abs=TOLERANCE)
    from_lists.backward()
    assert isinstance(module.bias, torch.nn.Parameter)
    assert module.bias.grad.item() == pytest.approx(EXPECTED_BIAS_GRAD, abs=1e-6)


@pytest.mark.parametrize('kwargs, value', [(dict(learn_bias=False), BIAS),
                                           (dict(bias=None), 0.0)])
def test_fixed_bias_is_not_a_parameter(kwargs: dict, value: float) -> None:
    module = _hand_module(**kwargs)
    assert list(module.parameters()) == [] and module.bias == value


def test_base_batch_size_and_loss_weight_scale_the_loss() -> None:
    regions = torch.tensor(REGIONS, dtype=torch.float64)
    embeds = torch.tensor(CLASS_EMBEDS, dtype=torch.float64)
    module = _hand_module(learn_bias=False, base_batch_size=2, loss_weight=0.5)
    # 3 regions over a base batch of 2, times 0.5.
    assert module(regions, embeds, TAGS).item() == pytest.approx(
        0.5 * 3 / 2 * EXPECTED, abs=TOLERANCE)


def test_registry_builds_the_ov_coco_defaults() -> None:
    module = MODELS.build(dict(type='DeticTagLoss'))
    assert isinstance(module, DeticTagLoss)
    assert module.logit_scale == 25.0 and module.bias.item() == -20.0
    assert module.neg_weight == 1.0 and module.base_batch_size is None
    assert module.loss_weight == pytest.approx(0.1 / 3)


def test_empty_input_gives_connected_zero() -> None:
    module = _hand_module()
    regions = torch.zeros(0, FEAT_DIM, requires_grad=True)
    loss = module(regions, torch.tensor(CLASS_EMBEDS), [])
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert regions.grad is not None and regions.grad.shape == (0, FEAT_DIM)
    assert module.bias.grad is not None and module.bias.grad.item() == 0.0


def test_bfloat16_autocast_computes_in_float32() -> None:
    generator = torch.Generator().manual_seed(0)
    regions = torch.randn(5, 16, generator=generator).bfloat16()
    embeds = torch.nn.functional.normalize(torch.randn(7, 16, generator=generator)).bfloat16()
    targets = (torch.rand(5, 7, generator=generator) > 0.7).float()
    expected = detic_tag_loss(regions.double(), embeds.double(), targets, 25.0, -20.0, 1.0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = detic_tag_loss(regions, embeds, targets, 25.0, torch.tensor(-20.0), 1.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)


@pytest.mark.parametrize('tags, message', [
    ([[0, 3], [], [1]], r'tags\[0\]: label 3 is outside \[0, 3\)'),
    ([[0], [-1], [1]], r'tags\[1\]: label -1 is outside \[0, 3\)'),
    ([[0], [], [1.0]], r'tags\[2\] must hold int class indices'),
    ([[0], []], r'tags must hold one label list per region, got 2 lists for 3 rows'),
    (torch.tensor([[2.0, 0.0, 0.0]] * 3), r'tag_targets must hold only 0 and 1'),
    (torch.ones(3, 2), r'tag_targets must have shape \(3, 3\)'),
])
def test_invalid_tags_name_the_argument(tags: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _hand_module()(torch.tensor(REGIONS), torch.tensor(CLASS_EMBEDS), tags)


def test_invalid_settings_name_the_argument() -> None:
    regions, embeds = torch.tensor(REGIONS), torch.tensor(CLASS_EMBEDS)
    with pytest.raises(ValueError, match='class_embeds .* same feature size'):
        detic_tag_loss(regions, embeds[:, :1], torch.zeros(3, 3), SCALE, BIAS, NEG_WEIGHT)
    with pytest.raises(ValueError, match='neg_weight must be a non-negative number'):
        DeticTagLoss(neg_weight=-0.5)
    with pytest.raises(ValueError, match='logit_scale must be a positive number'):
        DeticTagLoss(logit_scale=0.0)
    with pytest.raises(ValueError, match='bias must be a number or None'):
        DeticTagLoss(bias='-20')
