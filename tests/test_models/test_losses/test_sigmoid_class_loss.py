# Copyright (c) mmclim contributors. All rights reserved.
import json
import math
from pathlib import Path

import pytest
import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmengine.registry import init_default_scope

from mmclim.models.losses import DeticSigmoidClassLoss, federated_class_mask, read_class_frequencies

LN3 = math.log(3.0)
# Two RoIs, three classes then the background logit (never in the loss).
# RoI 0 is class 1; RoI 1 is background (label 3).
LOGITS = torch.tensor([[0.0, LN3, -LN3, 5.0],
                       [LN3, 0.0, 0.0, -7.0]])
LABELS = torch.tensor([1, 3])
# Class 2 masked out.
CLASS_WEIGHT = [1.0, 1.0, 0.0]
# By hand, BCE(x, t) = -t log(sigmoid x) - (1 - t) log(1 - sigmoid x); sigmoid(ln 3) = 3/4:
# RoI 0: class 0 (x=0, t=0) ln 2, class 1 (x=ln 3, t=1) ln(4/3)          -> ln(8/3)
# RoI 1: class 0 (x=ln 3, t=0) ln 4, class 1 (x=0, t=0) ln 2 (background) -> ln 8
PER_ROI = [math.log(8 / 3), math.log(8.0)]

# Ten classes; 1, 3 and 7 never appear in the training set.
FREQUENCIES = [5.0, 0.0, 3.0, 0.0, 1.0, 2.0, 4.0, 0.0, 6.0, 1.0]
NEVER_SEEN = [1, 3, 7]


def test_hand_worked_loss_with_a_class_mask() -> None:
    loss = DeticSigmoidClassLoss(class_weight=CLASS_WEIGHT)
    per_roi = loss(LOGITS, LABELS, reduction_override='none')
    assert torch.allclose(per_roi, torch.tensor(PER_ROI))
    # mmdet's BBoxHead passes every RoI's weight and avg_factor = the number of RoIs.
    mean = loss(LOGITS, LABELS, torch.ones(2), avg_factor=2.0)
    assert math.isclose(mean.item(), sum(PER_ROI) / 2, rel_tol=1e-6)
    assert math.isclose(loss(LOGITS, LABELS).item(), sum(PER_ROI) / 2, rel_tol=1e-6)
    assert math.isclose(loss(LOGITS, LABELS, torch.tensor([1.0, 0.0]), avg_factor=1.0).item(),
                        PER_ROI[0], rel_tol=1e-6)
    weighted = DeticSigmoidClassLoss(class_weight=CLASS_WEIGHT, loss_weight=0.5)
    assert math.isclose(weighted(LOGITS, LABELS).item(), sum(PER_ROI) / 4, rel_tol=1e-6)


def test_background_logit_and_masked_class_get_no_loss() -> None:
    loss = DeticSigmoidClassLoss(class_weight=CLASS_WEIGHT)
    logits = LOGITS.clone().requires_grad_()
    loss(logits, LABELS).backward()
    assert (logits.grad[:, 2:] == 0).all()
    assert (logits.grad[:, :2] != 0).all()
    # Without the mask, class 2 adds BCE(-ln 3, 0) = ln(4/3) and BCE(0, 0) = ln 2.
    unmasked = DeticSigmoidClassLoss()(LOGITS, LABELS, reduction_override='none')
    expected = torch.tensor(PER_ROI) + torch.tensor([math.log(4 / 3), math.log(2.0)])
    assert torch.allclose(unmasked, expected)


def test_class_weight_must_have_one_entry_per_class() -> None:
    loss = DeticSigmoidClassLoss(class_weight=CLASS_WEIGHT + [0.0])
    with pytest.raises(ValueError, match='class_weight: expected 3 entries'):
        loss.get_cls_channels(3)
    with pytest.raises(ValueError, match='class_weight'):
        loss(LOGITS, LABELS)


def test_activation_channels_and_accuracy() -> None:
    loss = DeticSigmoidClassLoss()
    assert loss.custom_cls_channels and loss.custom_activation and loss.custom_accuracy
    assert loss.get_cls_channels(3) == 4
    assert torch.equal(loss.get_activation(LOGITS), torch.sigmoid(LOGITS))
    # Only RoI 0 is foreground: its best class among the three is 1, its label.
    assert loss.get_accuracy(LOGITS, LABELS)['acc_classes'].item() == 100.0


def test_mmdet_bbox_head_scores_with_sigmoids() -> None:
    init_default_scope('mmdet')
    head = Shared2FCBBoxHead(in_channels=4, fc_out_channels=8, roi_feat_size=2, num_classes=3,
                             reg_class_agnostic=True,
                             loss_cls=dict(type='DeticSigmoidClassLoss'))
    assert head.fc_cls.out_features == 4
    rois = torch.tensor([[0.0, 0.0, 0.0, 10.0, 10.0], [0.0, 5.0, 5.0, 20.0, 20.0]])
    results = head.predict_by_feat(rois=(rois, ), cls_scores=(LOGITS, ),
                                   bbox_preds=(torch.zeros(2, 4), ),
                                   batch_img_metas=[dict(img_shape=(32, 32))],
                                   rcnn_test_cfg=None)
    assert torch.allclose(results[0].scores, torch.sigmoid(LOGITS))


def test_federated_selection_keeps_labels_and_draws_seen_classes() -> None:
    probs = torch.tensor(FREQUENCIES).sqrt()
    for seed in range(20):
        torch.manual_seed(seed)
        # Classes 2 and 0 present; no background RoI: 5 classes in the loss.
        mask = federated_class_mask(torch.tensor([2, 2, 0]), probs, 5)
        assert mask.dtype == torch.bool and mask.shape == (10, )
        assert mask[[0, 2]].all() and mask.sum() == 5
        assert not mask[NEVER_SEEN].any()
        # A background RoI counts towards the 5, as in Detic's get_fed_loss_inds.
        mask = federated_class_mask(torch.tensor([2, 10]), probs, 5)
        assert mask[2] and mask.sum() == 4 and not mask[NEVER_SEEN].any()


def test_federated_selection_stops_at_the_seen_classes() -> None:
    torch.manual_seed(0)
    mask = federated_class_mask(torch.tensor([2]), torch.tensor(FREQUENCIES), 9)
    assert mask.tolist() == [freq > 0 for freq in FREQUENCIES]


def test_federated_draws_follow_frequency_to_the_power() -> None:
    # Class 0 seen once, class 2 a hundred times; a background batch draws one class:
    # class 2 with probability 100 ** 0.5 / (1 + 100 ** 0.5) = 10 / 11.
    frequencies = torch.tensor([1.0, 0.0, 100.0])
    torch.manual_seed(0)
    draws = 2000
    count = sum(int(federated_class_mask(torch.tensor([3]), frequencies.sqrt(), 2)[2])
                for _ in range(draws))
    expected, std = draws * 10 / 11, math.sqrt(draws * (10 / 11) * (1 / 11))
    assert abs(count - expected) < 4 * std
    # With power 1 it would be 100 / 101: 1980 of 2000, far above.
    assert count < draws * 100 / 101 - 4 * math.sqrt(draws * (100 / 101) * (1 / 101))


def test_federated_loss_sums_the_selected_classes() -> None:
    loss = DeticSigmoidClassLoss(federated=dict(class_frequencies=FREQUENCIES, num_classes=5))
    logits = torch.zeros(3, 11)
    labels = torch.tensor([2, 2, 0])
    torch.manual_seed(1)
    # Every selected class adds ln 2 per RoI (zero logits); 5 classes are selected.
    assert math.isclose(loss(logits, labels).item(), 5 * math.log(2.0), rel_tol=1e-6)
    # With a class mask, masked selected classes add nothing.
    masked = DeticSigmoidClassLoss(class_weight=[0.0] * 5 + [1.0] * 5,
                                   federated=dict(class_frequencies=FREQUENCIES, num_classes=5))
    torch.manual_seed(1)
    mask = federated_class_mask(labels, torch.tensor(FREQUENCIES).sqrt(), 5)
    torch.manual_seed(1)
    assert math.isclose(masked(logits, labels).item(), int(mask[5:].sum()) * math.log(2.0),
                        rel_tol=1e-6)


def test_federated_config_is_checked() -> None:
    with pytest.raises(ValueError, match='federated: unknown keys'):
        DeticSigmoidClassLoss(federated=dict(class_frequencies=FREQUENCIES, num_cats=5))
    with pytest.raises(ValueError, match='federated.class_frequencies: required'):
        DeticSigmoidClassLoss(federated=dict(num_classes=5))
    loss = DeticSigmoidClassLoss(federated=dict(class_frequencies=FREQUENCIES))
    with pytest.raises(ValueError, match='federated.class_frequencies: expected 3 entries'):
        loss.get_cls_channels(3)


def test_frequencies_from_lvis_json_sorted_by_id(tmp_path: Path) -> None:
    categories = [dict(id=3, name='c', image_count=30), dict(id=1, name='a', image_count=10),
                  dict(id=2, name='b', image_count=20)]
    annotations = tmp_path / 'lvis.json'
    annotations.write_text(json.dumps(dict(images=[], annotations=[], categories=categories)))
    cat_info = tmp_path / 'cat_info.json'
    cat_info.write_text(json.dumps(categories))
    assert read_class_frequencies(str(annotations)) == [10.0, 20.0, 30.0]
    assert read_class_frequencies(str(cat_info)) == [10.0, 20.0, 30.0]
    loss = DeticSigmoidClassLoss(federated=dict(class_frequencies=str(annotations), power=1.0))
    assert loss.fed_class_probs.tolist() == [10.0, 20.0, 30.0]
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(categories=[dict(id=1)])))
    with pytest.raises(ValueError, match='image_count'):
        read_class_frequencies(str(bad))
