# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import Tensor
from vocabulary_files import write_vocabulary

from mmclim.models.roi_heads import FVLMRoIHead, vlm_region_scores

NUM_CLASSES = 5
NOVEL = (3, )
EMBED_DIM = 8
CHANNELS = 16
STRIDES = [4, 8, 16, 32]
IMAGE = 64
VLM_STRIDE = 16
TEST_CFG = ConfigDict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20,
                      mask_thr_binary=0.5)
TRAIN_CFG = ConfigDict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5),
    sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25, neg_pos_ub=-1,
                 add_gt_as_proposals=True),
    mask_size=28, pos_weight=-1)


def _roi_head_cfg(tmp_path: Path, with_mask: bool = True, **kwargs) -> dict:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    extractor = dict(type='SingleRoIExtractor', out_channels=CHANNELS, featmap_strides=STRIDES)
    cfg = dict(
        type='FVLMRoIHead',
        bbox_roi_extractor=dict(extractor, roi_layer=dict(type='RoIAlign', output_size=7)),
        bbox_head=dict(
            type='Shared2FCBBoxHead', in_channels=CHANNELS, fc_out_channels=32,
            num_classes=NUM_CLASSES, reg_class_agnostic=True,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=[0.1, 0.1, 0.2, 0.2]),
            cls_predictor_cfg=dict(type='TextEmbeddingClassifier', text_embeddings=embeddings,
                                   split_file=split)),
        train_cfg=TRAIN_CFG, test_cfg=TEST_CFG, **kwargs)
    if with_mask:
        cfg.update(mask_roi_extractor=dict(extractor,
                                           roi_layer=dict(type='RoIAlign', output_size=14)),
                   mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=CHANNELS,
                                  conv_out_channels=CHANNELS, num_classes=NUM_CLASSES,
                                  class_agnostic=True))
    return cfg


def _build(cfg: dict) -> FVLMRoIHead:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(cfg)


def _inputs(batch: int = 2, proposals: Tuple[int, ...] = (30, 12)) -> tuple:
    generator = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(batch, CHANNELS, IMAGE // s, IMAGE // s, generator=generator)
                  for s in STRIDES)
    rpn_results = []
    for num in proposals:
        xy = torch.rand(num, 2, generator=generator) * IMAGE * 0.6
        wh = torch.rand(num, 2, generator=generator) * IMAGE * 0.4 + 4
        rpn_results.append(InstanceData(bboxes=torch.cat([xy, xy + wh], dim=1)))
    samples = [DetDataSample(metainfo=dict(img_shape=(IMAGE, IMAGE), ori_shape=(96, 128),
                                           scale_factor=(0.5, 2 / 3), batch_input_shape=(
                                               IMAGE, IMAGE))) for _ in proposals]
    vlm_map = torch.randn(batch, EMBED_DIM, IMAGE // VLM_STRIDE, IMAGE // VLM_STRIDE,
                          generator=generator)
    return feats, rpn_results, samples, vlm_map


def _clone(results: List[InstanceData]) -> List[InstanceData]:
    return [InstanceData(bboxes=r.bboxes.clone()) for r in results]


def test_zero_vlm_weights_give_the_detector_scores(tmp_path: Path) -> None:
    head = _build(_roi_head_cfg(tmp_path, base_alpha=0.0, novel_beta=0.0)).eval()
    feats, rpn_results, samples, vlm_map = _inputs()
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        ours = head.predict_bbox(feats, metas, _clone(rpn_results), TEST_CFG, vlm_map=vlm_map,
                                 vlm_stride=VLM_STRIDE)
        plain = StandardRoIHead.predict_bbox(head, feats, metas, _clone(rpn_results), TEST_CFG)
    for fused, detector in zip(ours, plain):
        assert len(fused) > 0
        torch.testing.assert_close(fused.scores, detector.scores)
        torch.testing.assert_close(fused.bboxes, detector.bboxes)
        assert torch.equal(fused.labels, detector.labels)


def test_full_vlm_weights_score_each_output_box_by_the_vlm(tmp_path: Path) -> None:
    """The VLM scores the regressed box that is output, for the label it is output with."""
    head = _build(_roi_head_cfg(tmp_path, base_alpha=1.0, novel_beta=1.0,
                                vlm_temperature=0.1)).eval()
    feats, rpn_results, samples, vlm_map = _inputs()
    with torch.no_grad():
        results = head.predict_bbox(feats, [s.metainfo for s in samples], rpn_results, TEST_CFG,
                                    vlm_map=vlm_map, vlm_stride=VLM_STRIDE)
        vlm = vlm_region_scores(vlm_map, [r.bboxes for r in results], VLM_STRIDE,
                                head.classifier.text_embeddings, 0.1)
    labels = torch.cat([r.labels for r in results])
    scores = torch.cat([r.scores for r in results])
    assert len(labels) > 0 and set(labels.tolist()) & set(NOVEL)
    torch.testing.assert_close(scores, vlm[torch.arange(len(labels)), labels])


def test_predict_with_masks_and_rescale(tmp_path: Path) -> None:
    feats, rpn_results, samples, vlm_map = _inputs()
    with_mask = _build(_roi_head_cfg(tmp_path)).eval()
    without_mask = _build(_roi_head_cfg(tmp_path, with_mask=False)).eval()
    without_mask.load_state_dict(with_mask.state_dict(), strict=False)
    with torch.no_grad():
        masked = with_mask.predict(feats, _clone(rpn_results), samples, rescale=True,
                                   vlm_map=vlm_map, vlm_stride=VLM_STRIDE)
        boxes = without_mask.predict(feats, _clone(rpn_results), samples, rescale=True,
                                     vlm_map=vlm_map, vlm_stride=VLM_STRIDE)
        unscaled = without_mask.predict(feats, _clone(rpn_results), samples, rescale=False,
                                        vlm_map=vlm_map, vlm_stride=VLM_STRIDE)
    for mask_result, box_result, raw in zip(masked, boxes, unscaled):
        assert mask_result.masks.shape[1:] == (96, 128)  # ori_shape
        torch.testing.assert_close(mask_result.bboxes, box_result.bboxes)
        torch.testing.assert_close(box_result.bboxes, raw.bboxes / torch.tensor(
            [0.5, 2 / 3, 0.5, 2 / 3]))


def test_predict_without_proposals(tmp_path: Path) -> None:
    head = _build(_roi_head_cfg(tmp_path)).eval()
    feats, rpn_results, samples, vlm_map = _inputs(proposals=(0, 0))
    with torch.no_grad():
        results = head.predict(feats, rpn_results, samples, vlm_map=vlm_map,
                               vlm_stride=VLM_STRIDE)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].bboxes.shape == (0, 4) and results[0].masks.shape[0] == 0


def _gt_samples(labels: List[Tensor]) -> List[DetDataSample]:
    samples = _inputs()[2]
    for sample, image_labels in zip(samples, labels):
        boxes = torch.tensor([[4., 4., 40., 40.]]).repeat(len(image_labels), 1)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=image_labels)
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4))
    return samples


def test_loss_on_base_classes_with_an_empty_image(tmp_path: Path) -> None:
    head = _build(_roi_head_cfg(tmp_path, with_mask=False)).train()
    feats, rpn_results, _, _ = _inputs()
    samples = _gt_samples([torch.tensor([0, 4]), torch.zeros(0, dtype=torch.long)])
    losses = head.loss(feats, rpn_results, samples)
    assert all(torch.isfinite(losses[k]) for k in ('loss_cls', 'loss_bbox'))
    assert losses['loss_cls'] > 0


def test_loss_rejects_novel_ground_truth(tmp_path: Path) -> None:
    head = _build(_roi_head_cfg(tmp_path, with_mask=False)).train()
    feats, rpn_results, _, _ = _inputs()
    samples = _gt_samples([torch.tensor([0, 3]), torch.tensor([1])])
    with pytest.raises(ValueError, match=r'novel class labels \[3\] are in the ground truth'):
        head.loss(feats, rpn_results, samples)


@pytest.mark.parametrize('key,value,match', [
    ('bbox_head.reg_class_agnostic', False, 'reg_class_agnostic=True'),
    ('bbox_head.cls_predictor_cfg', dict(type='Linear'),
     "cls_predictor_cfg: expected type='TextEmbeddingClassifier', got Linear"),
    ('mask_head.class_agnostic', False, 'mask_head: expected class_agnostic=True'),
    ('novel_beta', 1.5, r'novel_beta: expected a weight in \[0, 1\], got 1.5'),
    ('vlm_temperature', 0.0, 'vlm_temperature: expected a positive number'),
])
def test_rejects_configs_that_are_not_fvlm(tmp_path: Path, key: str, value: object,
                                           match: str) -> None:
    cfg = _roi_head_cfg(tmp_path)
    *parents, field = key.split('.')
    node = cfg
    for parent in parents:
        node = node[parent]
    node[field] = value
    with pytest.raises(ValueError, match=match):
        _build(cfg)
