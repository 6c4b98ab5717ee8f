# Copyright (c) mmclim contributors. All rights reserved.
import math
from typing import List, Sequence, Tuple

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmclim.models.dense_heads import CenterNetRPNHead

CHANNELS = 8
STRIDES = [8, 16, 32, 64, 128]  # P3-P7
IMAGE = 128
# The official train proposals (detic_centernet2_r50_fpn_4x_lvis_boxsup.py L186-191), with a
# small max_per_img for the test.
PROPOSAL_CFG = ConfigDict(score_thr=1e-4, nms_pre=4000, max_per_img=20,
                          nms=dict(type='nms', iou_threshold=0.9), min_bbox_size=0)
HEAD = dict(type='CenterNetRPNHead', in_channels=CHANNELS, feat_channels=CHANNELS,
            stacked_convs=2, strides=STRIDES, conv_bias=True,
            norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
            test_cfg=ConfigDict(score_thr=1e-4, nms_pre=1000, max_per_img=256,
                                nms=dict(type='nms', iou_threshold=0.9), min_bbox_size=0))


def _build(**kwargs) -> CenterNetRPNHead:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    head = MODELS.build(dict(HEAD, **kwargs))
    head.init_weights()
    return head


def _features(num_imgs: int = 2, size: int = IMAGE) -> Tuple[Tensor, ...]:
    torch.manual_seed(1)
    return tuple(torch.randn(num_imgs, CHANNELS, size // s, size // s) for s in STRIDES)


def _samples(boxes_per_image: Sequence[List[List[float]]],
             size: int = IMAGE) -> List[DetDataSample]:
    samples = []
    for boxes in boxes_per_image:
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size)))
        bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        # TwoStageDetector sets the RPN labels to 0.
        sample.gt_instances = InstanceData(bboxes=bboxes,
                                           labels=torch.zeros(len(bboxes), dtype=torch.long))
        samples.append(sample)
    return samples


def _set_constant_outputs(head: CenterNetRPNHead, prob: float, distance: float) -> None:
    """Every location predicts heatmap probability ``prob`` and ``distance`` strides to each
    side (zero convolution weights: the GN'd tower outputs 0, the predictors their bias)."""
    with torch.no_grad():
        for module in head.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()
        head.conv_cls.bias.fill_(math.log(prob / (1 - prob)))
        head.conv_reg.bias.fill_(distance)


def test_one_tower_and_official_shapes() -> None:
    head = _build()
    assert not hasattr(head, 'cls_convs') and len(head.reg_convs) == 2
    assert head.conv_cls.out_channels == 1 and head.conv_reg.out_channels == 4
    assert head.use_sigmoid_cls and head.cls_out_channels == 1
    assert len(head.scales) == len(STRIDES)
    cls_scores, bbox_preds = head(_features())
    assert [tuple(s.shape[-2:]) for s in cls_scores] == [(IMAGE // s, ) * 2 for s in STRIDES]
    assert all(pred.shape[1] == 4 and (pred >= 0).all() for pred in bbox_preds)


@pytest.mark.parametrize('more_pos', [False, True])
def test_loss_and_predict_with_an_empty_image(more_pos: bool) -> None:
    head = _build(more_pos=more_pos)
    samples = _samples([[[10, 10, 60, 50], [30, 40, 120, 120]], []])
    losses, proposals = head.loss_and_predict(_features(), samples, proposal_cfg=PROPOSAL_CFG)
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    assert all(torch.isfinite(value) and value > 0 for value in losses.values())
    assert len(proposals) == 2
    for results in proposals:
        assert len(results) == PROPOSAL_CFG.max_per_img
        assert results.bboxes.shape == (PROPOSAL_CFG.max_per_img, 4)
        assert ((results.scores > 0) & (results.scores < 1)).all()
        assert (results.scores[:-1] >= results.scores[1:]).all()
        assert (results.labels == 0).all()
        assert not results.scores.requires_grad


def test_all_empty_batch_learns_negatives() -> None:
    # No box anywhere: every heatmap target is 0 (mmdet's target is the class index, 1, which
    # would drop the negative term). With p = 1/2 everywhere and one positive as the divisor:
    # loss = neg_weight * sum over locations of -log(1 - p) * p ** 2.
    head = _build()
    _set_constant_outputs(head, 0.5, 1.0)
    features = _features()
    samples = _samples([[], []])
    losses = head.loss(features, samples)
    num_locations = 2 * sum((IMAGE // s) ** 2 for s in STRIDES)
    expected = 0.375 * num_locations * math.log(2.0) * 0.25
    assert math.isclose(losses['loss_cls'].item(), expected, rel_tol=1e-5)
    assert losses['loss_bbox'].item() == 0
    # Negatives predicted at 0.9 >= ignore_high_fp (0.85) get no loss.
    _set_constant_outputs(head, 0.9, 1.0)
    assert head.loss(features, samples)['loss_cls'].item() == 0
    head.ignore_high_fp = None
    expected = 0.375 * num_locations * -math.log(0.1) * 0.81
    assert math.isclose(head.loss(features, samples)['loss_cls'].item(), expected, rel_tol=1e-4)


def test_positives_are_box_centers_on_their_levels() -> None:
    head = _build()
    # Image 0: 32 x 32 box, half-diagonal 22.6 -> level P3 only (0-80); center (24, 24) is cell
    # (3, 3) of the 16 x 16 map: 3 * 16 + 3 = 51.
    # Image 1: 128 x 128 box, half-diagonal 90.5 -> level P4 only (64-160); center (64, 64)
    # is cell (4, 4) of the 8 x 8 map; P4 starts after both images' P3 (2 * 256) and image 1
    # after image 0's 64 cells: 512 + 64 + 4 * 8 + 4 = 612.
    samples = _samples([[[8, 8, 40, 40]], [[0, 0, 128, 128]]])
    gts = [sample.gt_instances for sample in samples]
    sizes = [torch.Size((IMAGE // s, IMAGE // s)) for s in STRIDES]
    assert head._center_pos_inds(gts, sizes).tolist() == [51, 612]
    # With only positives weighted, the loss is pos_weight * -log(p) * (1 - p) ** 2, whatever
    # their number.
    head = _build(loss_cls=dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0,
                                pos_weight=0.125, neg_weight=0.0))
    _set_constant_outputs(head, 0.5, 1.0)
    loss = head.loss(_features(), samples)['loss_cls'].item()
    assert math.isclose(loss, 0.125 * math.log(2.0) * 0.25, rel_tol=1e-5)


def test_training_proposals_are_in_pixels_with_sqrt_scores() -> None:
    # Every location predicts 1 stride to each side: boxes 2 strides wide, centered on the
    # location; heatmap 0.64 -> score sqrt(0.64) = 0.8. mmdet's head, in training mode,
    # would decode the distances as pixels (boxes 2 pixels wide).
    head = _build()
    _set_constant_outputs(head, 0.64, 1.0)
    cfg = ConfigDict(PROPOSAL_CFG, max_per_img=1000)
    _, proposals = head.loss_and_predict(_features(), _samples([[[8, 8, 40, 40]], []]),
                                         proposal_cfg=cfg)
    for results in proposals:
        assert len(results) == sum((IMAGE // s) ** 2 for s in STRIDES)
        assert torch.allclose(results.scores, torch.full_like(results.scores, 0.8))
        widths = results.bboxes[:, 2] - results.bboxes[:, 0]
        heights = results.bboxes[:, 3] - results.bboxes[:, 1]
        assert torch.equal(widths, heights)
        assert sorted(set(widths.tolist())) == [2.0 * s for s in STRIDES]
        # Not clipped to the image (CenterNet2): the P7 box spans -64 .. 192.
        assert results.bboxes.min() == -64 and results.bboxes.max() == 192
    # Eval mode gives the same proposals.
    head.eval()
    predicted = head.predict(_features(), _samples([[], []]))
    assert sorted(set((predicted[0].bboxes[:, 2] - predicted[0].bboxes[:, 0]).tolist())) == [
        2.0 * s for s in STRIDES]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match='num_classes: expected 1'):
        _build(num_classes=3)
    with pytest.raises(ValueError, match="loss_cls: expected type='GaussianFocalLoss'"):
        _build(loss_cls=dict(type='FocalLoss', use_sigmoid=True))
    with pytest.raises(ValueError, match='regress_ranges: expected one range per stride'):
        _build(regress_ranges=((0, 64), (64, 1e8)))
