# Copyright (c) mmclim contributors. All rights reserved.
import copy
import math
from typing import List, Sequence

import pytest
import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmclim.models.roi_heads.detic_cascade_roi_head import DeticCascadeRoIHead

CHANNELS = 8
EMBED_DIM = 6
NUM_CLASSES = 2
STRIDES = [8, 16, 32]
IMAGE = 64
STAGE_WEIGHTS = [1.0, 0.5, 0.25]
TEST_CFG = ConfigDict(score_thr=0.02, nms=dict(type='nms', iou_threshold=0.5), max_per_img=300,
                      mask_thr_binary=0.5)


@MODELS.register_module(force=True)
class _EmbeddingBBoxHead(Shared2FCBBoxHead):
    """A Shared2FC head with ``vision_to_language``: a linear map of the shared features."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.to_language = nn.Linear(self.cls_last_dim, EMBED_DIM)

    def vision_to_language(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.relu(fc(x))
        return self.to_language(x)


def _stage(stds: Sequence[float], iou: float, add_gt: bool) -> tuple:
    head = dict(type='_EmbeddingBBoxHead', in_channels=CHANNELS, fc_out_channels=16,
                roi_feat_size=7, num_classes=NUM_CLASSES, reg_class_agnostic=True,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                                target_stds=list(stds)),
                loss_cls=dict(type='DeticSigmoidClassLoss'),
                loss_bbox=dict(type='SmoothL1Loss', beta=0.1, loss_weight=1.0))
    train = ConfigDict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=16, pos_fraction=0.25, neg_pos_ub=-1,
                     add_gt_as_proposals=add_gt),
        mask_size=14, pos_weight=-1, debug=False)
    return head, train


def _build(**kwargs) -> DeticCascadeRoIHead:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    # The official three stages (regression stds and IoU thresholds of the boxsup config).
    stages = [_stage([0.1, 0.1, 0.2, 0.2], 0.6, True), _stage([0.05, 0.05, 0.1, 0.1], 0.7, False),
              _stage([0.033, 0.033, 0.067, 0.067], 0.8, False)]
    extractor = dict(type='SingleRoIExtractor', out_channels=CHANNELS, featmap_strides=STRIDES,
                     roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0))
    cfg = dict(type='DeticCascadeRoIHead', num_stages=3, stage_loss_weights=STAGE_WEIGHTS,
               bbox_roi_extractor=extractor, bbox_head=[head for head, _ in stages],
               mask_roi_extractor=dict(extractor, roi_layer=dict(type='RoIAlign', output_size=7,
                                                                 sampling_ratio=0)),
               mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=CHANNELS,
                              conv_out_channels=CHANNELS, class_agnostic=True,
                              num_classes=NUM_CLASSES),
               train_cfg=[train for _, train in stages], test_cfg=TEST_CFG)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _features() -> tuple:
    torch.manual_seed(1)
    return tuple(torch.randn(2, CHANNELS, IMAGE // s, IMAGE // s) for s in STRIDES)


def _samples() -> List[DetDataSample]:
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(IMAGE, IMAGE), ori_shape=(IMAGE, IMAGE),
                                             pad_shape=(IMAGE, IMAGE), scale_factor=(1.0, 1.0)))
        masks = torch.zeros(2, IMAGE, IMAGE, dtype=torch.uint8)
        masks[0, 4:30, 4:30] = 1
        masks[1, 10:50, 20:60] = 1
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]]),
            labels=torch.tensor([0, 1]), masks=BitmapMasks(masks.numpy(), IMAGE, IMAGE))
        samples.append(sample)
    return samples


def _proposals() -> List[InstanceData]:
    boxes = torch.tensor([[5.0, 5.0, 29.0, 31.0], [21.0, 12.0, 58.0, 49.0], [0.0, 0.0, 20.0, 20.0],
                          [30.0, 30.0, 60.0, 60.0]])
    return [InstanceData(bboxes=boxes.clone(), scores=torch.tensor([0.9, 0.8, 0.5, 0.3]))
            for _ in range(2)]


def test_region_embeddings_per_stage() -> None:
    head = _build()
    x = _features()
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 64.0]]),
             torch.tensor([[0.0, 0.0, 32.0, 32.0], [32.0, 32.0, 64.0, 64.0]])]
    outputs = head.region_embeddings(x, boxes)
    assert [weight for _, weight in outputs] == STAGE_WEIGHTS
    assert all(embeddings.shape == (3, EMBED_DIM) for embeddings, _ in outputs)
    rois = torch.tensor([[0.0, 0.0, 0.0, 64.0, 64.0], [1.0, 0.0, 0.0, 32.0, 32.0],
                         [1.0, 32.0, 32.0, 64.0, 64.0]])
    for stage, (embeddings, _) in enumerate(outputs):
        feats = head.bbox_roi_extractor[stage](x, rois)
        assert torch.allclose(embeddings, head.bbox_head[stage].vision_to_language(feats))
    # Each stage embeds with its own head.
    assert not torch.allclose(outputs[0][0], outputs[1][0])
    # Half-precision maps are pooled in float32: the same as their float32 values.
    half = tuple(level.bfloat16() for level in x)
    from_half = head.region_embeddings(half, boxes)
    from_float = head.region_embeddings(tuple(level.float() for level in half), boxes)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(from_half, from_float))


def test_region_embeddings_need_vision_to_language() -> None:
    head = _build()
    head.bbox_head[1] = Shared2FCBBoxHead(in_channels=CHANNELS, fc_out_channels=16,
                                          num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r'bbox_head\[1\]: Shared2FCBBoxHead has no '
                                         'vision_to_language'):
        head.region_embeddings(_features(), [torch.zeros(1, 4), torch.zeros(0, 4)])


def test_loss_trains_one_mask_head_on_the_first_stage() -> None:
    head = _build()
    assert not isinstance(head.mask_head, nn.ModuleList)
    losses = head.loss(_features(), _proposals(), _samples())
    assert set(losses) == {f's{stage}.{key}' for stage in range(3)
                           for key in ('loss_cls', 'acc_classes', 'loss_bbox')} | {'s0.loss_mask'}
    assert all(torch.isfinite(value) for value in losses.values())
    with pytest.raises(ValueError, match='mask_head: expected a single config'):
        _build(mask_head=[head.mask_head] * 3)


def _mock_stage_logits(head: DeticCascadeRoIHead, stage_probs: List[List[List[float]]]) -> None:
    """Every stage returns the logits of the given probabilities (RoI x class, then a
    background logit of 0) and zero box deltas: the boxes stay the proposals."""

    def bbox_forward(stage: int, x: tuple, rois: Tensor) -> dict:
        logits = torch.logit(torch.tensor(stage_probs[stage], dtype=torch.float64)).float()
        logits = torch.cat([logits, torch.zeros(len(logits), 1)], dim=1)
        return dict(cls_score=logits, bbox_pred=torch.zeros(len(rois), 4))

    head._bbox_forward = bbox_forward


# Two proposals, two classes, the three stages' probabilities.
# A: class 0 (0.5, 0.5, 0.8) mean 0.6; class 1 (0.1, 0.1, 0.1) mean 0.1; objectness 0.9.
# B: class 0 (0.01 x 3) mean 0.01; class 1 (0.9, 0.6, 0.9) mean 0.8; objectness 0.4.
# (mmdet averages logits: class 0 of A would be sigmoid(ln(4) / 3) = 0.613, not 0.6.)
STAGE_PROBS = [[[0.5, 0.1], [0.01, 0.9]], [[0.5, 0.1], [0.01, 0.6]], [[0.8, 0.1], [0.01, 0.9]]]
BOX_A = [0.0, 0.0, 30.0, 30.0]
BOX_B = [32.0, 32.0, 62.0, 62.0]


@pytest.mark.parametrize('mult_proposal_score', [True, False])
def test_predict_scores_as_centernet2(mult_proposal_score: bool) -> None:
    head = _build(mult_proposal_score=mult_proposal_score)
    head.eval()
    _mock_stage_logits(head, STAGE_PROBS)
    proposals = [InstanceData(bboxes=torch.tensor([BOX_A, BOX_B]), scores=torch.tensor([0.9, 0.4]))]
    sample = _samples()[0]
    with torch.no_grad():
        results = head.predict_bbox(_features(), [sample.metainfo], proposals,
                                    rcnn_test_cfg=TEST_CFG)[0]
    if mult_proposal_score:
        # sqrt(mean * objectness), all above score_thr 0.02.
        expected = [(math.sqrt(0.54), 0, BOX_A), (math.sqrt(0.32), 1, BOX_B),
                    (math.sqrt(0.09), 1, BOX_A), (math.sqrt(0.004), 0, BOX_B)]
    else:
        # The stage mean; 0.01 is under score_thr.
        expected = [(0.8, 1, BOX_B), (0.6, 0, BOX_A), (0.1, 1, BOX_A)]
    assert torch.allclose(results.scores, torch.tensor([score for score, _, _ in expected]))
    assert results.labels.tolist() == [label for _, label, _ in expected]
    assert torch.allclose(results.bboxes, torch.tensor([box for _, _, box in expected]))


def test_predict_needs_proposal_scores() -> None:
    head = _build()
    head.eval()
    proposals = [InstanceData(bboxes=torch.tensor([BOX_A]))]
    with pytest.raises(ValueError, match='mult_proposal_score needs'):
        head.predict_bbox(_features(), [_samples()[0].metainfo], proposals, TEST_CFG)


def test_predict_end_to_end_with_masks() -> None:
    head = _build()
    head.eval()
    proposals = _proposals()
    proposals[1] = proposals[1][:0]  # an image without proposals
    with torch.no_grad():
        results = head.predict(_features(), copy.deepcopy(proposals), _samples(), rescale=True)
    assert len(results[0]) > 0 and len(results[1]) == 0
    assert results[0].masks.shape == (len(results[0]), IMAGE, IMAGE)
    assert ((results[0].scores > 0) & (results[0].scores < 1)).all()
    assert (results[0].labels < NUM_CLASSES).all()
