# Copyright (c) mmclim contributors. All rights reserved.
import math
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import Tensor
from vocabulary_files import write_vocabulary

from mmclim.models.roi_heads import FVLMRoIHead
from mmclim.structures import save_class_embeddings, split_record, write_split_file

NUM_CLASSES = 5
NOVEL = (3, )
EMBED_DIM = 8
CHANNELS = 16
STRIDES = [4, 8, 16, 32]
IMAGE = 64
TEST_CFG = ConfigDict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20,
                      mask_thr_binary=0.5)
TRAIN_CFG = ConfigDict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5),
    sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25, neg_pos_ub=-1,
                 add_gt_as_proposals=True),
    mask_size=28, pos_weight=-1)
# The official OV-LVIS values (mask_rcnn_nasfpn_openai_vitb16_clim_bs64_ov_lvis_4x.py:45-47).
FUSION = dict(vlm_logit_scale=50.0, base_alpha=0.35, novel_beta=0.65)


def _roi_head_cfg(embeddings: str, split: str, with_mask: bool = True, **kwargs) -> dict:
    extractor = dict(type='SingleRoIExtractor', out_channels=CHANNELS, featmap_strides=STRIDES)
    num_classes = NUM_CLASSES if 'hand' not in embeddings else 2
    cfg = dict(
        type='FVLMRoIHead',
        bbox_roi_extractor=dict(extractor, roi_layer=dict(type='RoIAlign', output_size=7)),
        bbox_head=dict(
            type='FVLMBBoxHead', num_shared_convs=1, num_shared_fcs=1, in_channels=CHANNELS,
            conv_out_channels=CHANNELS, fc_out_channels=32, num_classes=num_classes,
            reg_class_agnostic=True, class_embeddings=embeddings, split_file=split,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=TRAIN_CFG, test_cfg=TEST_CFG)
    cfg.update(FUSION)
    cfg.update(kwargs)
    if with_mask:
        cfg.update(mask_roi_extractor=dict(extractor,
                                           roi_layer=dict(type='RoIAlign', output_size=14)),
                   mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=CHANNELS,
                                  conv_out_channels=CHANNELS, num_classes=num_classes,
                                  class_agnostic=True))
    return cfg


def _build(cfg: dict) -> FVLMRoIHead:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(cfg)


def _head(tmp_path: Path, **kwargs) -> FVLMRoIHead:
    return _build(_roi_head_cfg(*write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL),
                                **kwargs))


def _inputs(proposals: Tuple[int, ...] = (30, 12)) -> tuple:
    generator = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(len(proposals), CHANNELS, IMAGE // s, IMAGE // s,
                              generator=generator) for s in STRIDES)
    rpn_results = []
    for num in proposals:
        xy = torch.rand(num, 2, generator=generator) * IMAGE * 0.6
        wh = torch.rand(num, 2, generator=generator) * IMAGE * 0.4 + 4
        rpn_results.append(InstanceData(bboxes=torch.cat([xy, xy + wh], dim=1)))
    samples = [DetDataSample(metainfo=dict(img_shape=(IMAGE, IMAGE), ori_shape=(96, 128),
                                           scale_factor=(0.5, 2 / 3), batch_input_shape=(
                                               IMAGE, IMAGE))) for _ in proposals]
    vlm_embeddings = F.normalize(torch.randn(sum(proposals), EMBED_DIM, generator=generator),
                                 dim=-1)
    return feats, rpn_results, samples, vlm_embeddings


def _clone(results: List[InstanceData]) -> List[InstanceData]:
    return [InstanceData(bboxes=r.bboxes.clone()) for r in results]


def test_zero_vlm_weights_give_the_detector_scores(tmp_path: Path) -> None:
    head = _head(tmp_path, base_alpha=0.0, novel_beta=0.0).eval()
    feats, rpn_results, samples, vlm_embeddings = _inputs()
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        ours = head.predict_bbox(feats, metas, _clone(rpn_results), TEST_CFG,
                                 vlm_embeddings=vlm_embeddings)
        plain = StandardRoIHead.predict_bbox(head, feats, metas, _clone(rpn_results), TEST_CFG)
    for fused, detector in zip(ours, plain):
        assert len(fused) > 0
        torch.testing.assert_close(fused.scores, detector.scores)
        torch.testing.assert_close(fused.bboxes, detector.bboxes)
        assert torch.equal(fused.labels, detector.labels)


def test_full_vlm_weights_score_each_regressed_box_by_its_proposals_embedding(
        tmp_path: Path) -> None:
    """Each output box is a proposal after regression; its score is the VLM probability, for
    its label, of that proposal's embedding (row of vlm_embeddings), not of the moved box."""
    head = _head(tmp_path, base_alpha=1.0, novel_beta=1.0).eval()
    with torch.no_grad():  # shift every box right by 0.05 of its width (dx 0.5 x std 0.1)
        head.bbox_head.fc_reg.bias.copy_(torch.tensor([0.5, 0., 0., 0.]))
    feats, rpn_results, samples, vlm_embeddings = _inputs()
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        results = head.predict_bbox(feats, metas, _clone(rpn_results), TEST_CFG,
                                    vlm_embeddings=vlm_embeddings)
        regressed = StandardRoIHead.predict_bbox(head, feats, metas, _clone(rpn_results), None)
        vlm = head.vlm_scores(vlm_embeddings).split([len(r) for r in rpn_results])
    checked = set()
    for result, per_roi, proposals, image_vlm in zip(results, regressed, rpn_results, vlm):
        assert not torch.allclose(per_roi.bboxes, proposals.bboxes)  # regression moved them
        for box, label, score in zip(result.bboxes, result.labels, result.scores):
            index = (per_roi.bboxes - box).abs().sum(dim=1).argmin()
            torch.testing.assert_close(per_roi.bboxes[index], box)
            torch.testing.assert_close(score, image_vlm[index, label])
            checked.add(int(label))
    assert checked & set(NOVEL) and checked - set(NOVEL)


def test_background_is_inside_the_vlm_softmax(tmp_path: Path) -> None:
    """Classes (1, 0, 0) and (0, 1, 0), learned background set to (0, 0, 1), scale 2: an
    embedding equal to the background has logits (0, 0, 2), so 1 / (2 + e^2) per class and
    e^2 / (2 + e^2) for background; one equal to class 0 gets e^2 / (e^2 + 2) for it."""
    save_class_embeddings(str(tmp_path / 'hand.npy'), torch.eye(3)[:2], 'mmclim-tiny-vit12')
    write_split_file(str(tmp_path / 'hand.json'), split_record({1: 'a', 2: 'b'}, [1], [2], 't'))
    head = _build(_roi_head_cfg(str(tmp_path / 'hand.npy'), str(tmp_path / 'hand.json'),
                                vlm_logit_scale=2.0)).eval()
    with torch.no_grad():
        head.classifier.background.weight.copy_(torch.tensor([[0.], [0.], [2.]]))
        head.classifier.background.bias.zero_()
    scores = head.vlm_scores(torch.tensor([[0., 0., 3.], [1., 0., 0.]]))
    rest = 1 / (2 + math.exp(2))
    expected = torch.tensor([[rest, rest, 1 - 2 * rest], [1 - 2 * rest, rest, rest]])
    torch.testing.assert_close(scores, expected)


def test_predict_with_masks_and_rescale(tmp_path: Path) -> None:
    feats, rpn_results, samples, vlm_embeddings = _inputs()
    files = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    with_mask = _build(_roi_head_cfg(*files)).eval()
    without_mask = _build(_roi_head_cfg(*files, with_mask=False)).eval()
    without_mask.load_state_dict(with_mask.state_dict(), strict=False)
    with torch.no_grad():
        masked = with_mask.predict(feats, _clone(rpn_results), samples, rescale=True,
                                   vlm_embeddings=vlm_embeddings)
        boxes = without_mask.predict(feats, _clone(rpn_results), samples, rescale=True,
                                     vlm_embeddings=vlm_embeddings)
        unscaled = without_mask.predict(feats, _clone(rpn_results), samples, rescale=False,
                                        vlm_embeddings=vlm_embeddings)
    for mask_result, box_result, raw in zip(masked, boxes, unscaled):
        assert mask_result.masks.shape[1:] == (96, 128)  # ori_shape
        torch.testing.assert_close(mask_result.bboxes, box_result.bboxes)
        torch.testing.assert_close(box_result.bboxes, raw.bboxes / torch.tensor(
            [0.5, 2 / 3, 0.5, 2 / 3]))


def test_predict_without_proposals(tmp_path: Path) -> None:
    head = _head(tmp_path).eval()
    feats, rpn_results, samples, vlm_embeddings = _inputs(proposals=(0, 0))
    with torch.no_grad():
        results = head.predict(feats, rpn_results, samples, vlm_embeddings=vlm_embeddings)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].bboxes.shape == (0, 4) and results[0].masks.shape[0] == 0


def test_predict_checks_one_embedding_per_proposal(tmp_path: Path) -> None:
    head = _head(tmp_path).eval()
    feats, rpn_results, samples, vlm_embeddings = _inputs()
    with pytest.raises(ValueError, match=r'one per proposal \(42\), got shape \(41, 8\)'):
        head.predict(feats, rpn_results, samples, vlm_embeddings=vlm_embeddings[:-1])


def _gt_samples(labels: List[Tensor]) -> List[DetDataSample]:
    samples = _inputs()[2]
    for sample, image_labels in zip(samples, labels):
        boxes = torch.tensor([[4., 4., 40., 40.]]).repeat(len(image_labels), 1)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=image_labels)
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4))
    return samples


def test_loss_on_base_classes_with_an_empty_image(tmp_path: Path) -> None:
    head = _head(tmp_path, with_mask=False).train()
    feats, rpn_results, _, _ = _inputs()
    samples = _gt_samples([torch.tensor([0, 4]), torch.zeros(0, dtype=torch.long)])
    losses = head.loss(feats, rpn_results, samples)
    assert all(torch.isfinite(losses[k]) for k in ('loss_cls', 'loss_bbox'))
    assert losses['loss_cls'] > 0


def test_loss_rejects_novel_ground_truth(tmp_path: Path) -> None:
    head = _head(tmp_path, with_mask=False).train()
    feats, rpn_results, _, _ = _inputs()
    samples = _gt_samples([torch.tensor([0, 3]), torch.tensor([1])])
    with pytest.raises(ValueError, match=r'novel class labels \[3\] are in the ground truth'):
        head.loss(feats, rpn_results, samples)


@pytest.mark.parametrize('key,value,match', [
    ('bbox_head', dict(type='Shared2FCBBoxHead', num_classes=NUM_CLASSES),
     "bbox_head: expected type='FVLMBBoxHead', got Shared2FCBBoxHead"),
    ('mask_head.class_agnostic', False, 'mask_head: expected class_agnostic=True'),
    ('novel_beta', 1.5, r'novel_beta: expected a weight in \[0, 1\], got 1.5'),
    ('vlm_logit_scale', 0.0, 'vlm_logit_scale: expected a positive number'),
])
def test_rejects_configs_that_are_not_fvlm(tmp_path: Path, key: str, value: object,
                                           match: str) -> None:
    cfg = _roi_head_cfg(*write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL))
    *parents, field = key.split('.')
    node = cfg
    for parent in parents:
        node = node[parent]
    node[field] = value
    with pytest.raises(ValueError, match=f'FVLMRoIHead.{match}'):
        _build(cfg)
