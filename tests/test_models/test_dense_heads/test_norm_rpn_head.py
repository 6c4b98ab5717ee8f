# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

from mmclim.models.dense_heads import NormRPNHead

CHANNELS = 8
HEAD = dict(
    in_channels=CHANNELS, feat_channels=CHANNELS, num_convs=2,
    anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                          strides=[4, 8]),
    bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.] * 4),
    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
    loss_bbox=dict(type='L1Loss', loss_weight=1.0),
    train_cfg=ConfigDict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3),
        sampler=dict(type='RandomSampler', num=32, pos_fraction=0.5, neg_pos_ub=-1,
                     add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=ConfigDict(nms_pre=50, max_per_img=20, nms=dict(type='nms', iou_threshold=0.7),
                        min_bbox_size=0))


def _build(**kwargs) -> nn.Module:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(dict(HEAD, **kwargs))


def test_stacked_convolutions_carry_the_norm() -> None:
    head = _build(type='NormRPNHead', norm_cfg=dict(type='BN', requires_grad=True))
    plain = _build(type='RPNHead')
    assert isinstance(head, NormRPNHead) and isinstance(plain, RPNHead)
    assert all(isinstance(conv, ConvModule) for conv in head.rpn_conv)
    assert [type(conv.norm) for conv in head.rpn_conv] == [nn.BatchNorm2d] * 2
    assert not plain.rpn_conv[0].with_norm
    # Otherwise mmdet's RPN head: the same convolutions (without bias before a norm) and outputs.
    assert [c.conv.weight.shape for c in head.rpn_conv] == [c.conv.weight.shape
                                                            for c in plain.rpn_conv]
    assert all(conv.conv.bias is None for conv in head.rpn_conv)
    assert head.rpn_cls.weight.shape == plain.rpn_cls.weight.shape
    assert head.rpn_reg.weight.shape == plain.rpn_reg.weight.shape


def test_loss_and_predict_with_an_empty_image() -> None:
    head = _build(type='NormRPNHead', norm_cfg=dict(type='BN', requires_grad=True))
    feats = (torch.randn(2, CHANNELS, 16, 16), torch.randn(2, CHANNELS, 8, 8))
    samples = []
    for boxes in (torch.tensor([[4., 4., 40., 40.]]), torch.zeros(0, 4)):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                             scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes)).long())
        samples.append(sample)
    losses = head.loss(feats, samples)
    assert all(torch.isfinite(sum(value)) for value in losses.values())
    head.eval()
    results = head.predict(feats, samples)
    assert all(0 < len(result) <= 20 for result in results)


def test_needs_stacked_convolutions() -> None:
    with pytest.raises(ValueError, match='NormRPNHead.num_convs: expected at least 2'):
        _build(type='NormRPNHead', norm_cfg=dict(type='BN'), num_convs=1)
