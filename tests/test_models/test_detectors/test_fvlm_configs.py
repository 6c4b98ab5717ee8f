# Copyright (c) mmclim contributors. All rights reserved.
"""The shipped F-VLM recipes hold the official values.

Every expected value below is typed from the official CLIM code (github.com/wusize/CLIM, the
ovdet/ folder), cited as file:line:
  COCO = configs/clip_based/openai_vitb16/faster_rcnn_fpn_openai_vitb16_clim_bs64_ov_coco_3e.py
  LVIS = configs/clip_based/openai_vitb16/mask_rcnn_nasfpn_openai_vitb16_clim_bs64_ov_lvis_4x.py
  RN = configs/clip_based/openai_rn50x64/mask_rcnn_fpn_openai_rn50x64_clim_bs256_ov_lvis_2.88k.py
  COCO_DATA = configs/_base_/datasets/coco_ovd_base_lsj.py
  LVIS_DATA_640 = configs/_base_/datasets/lvis_v1_ovd_base_lsj_640.py
  LVIS_DATA = configs/_base_/datasets/lvis_v1_ovd_base_lsj.py
"""
from pathlib import Path
from typing import Any

import pytest
import torch
from mmdet.datasets import CocoDataset
from mmengine.config import Config

from mmclim.datasets.ov_splits import OV_COCO_BASE_CLASSES, OV_COCO_CLASSES
from mmclim.models.backbones import CLIPViTPyramidBackbone
from mmclim.models.backbones.clip_dense import resnet_pool_grid

CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'fvlm'
COCO = Config.fromfile(str(CONFIGS / 'fvlm_vitb16_fpn_lsj640-3e_ov-coco.py'))
LVIS = Config.fromfile(str(CONFIGS / 'fvlm_vitb16_nasfpn_lsj640-48e_ov-lvis.py'))
RN = Config.fromfile(str(CONFIGS / 'fvlm_rn50x64_fpn_lsj1024-2.88k_ov-lvis.py'))

CLIP_MEAN = [122.7709383, 116.7460125, 104.09373615]  # COCO:27, LVIS:10, RN:10
CLIP_STD = [68.5005327, 66.6321579, 70.32316305]  # COCO:28, LVIS:11, RN:11
# COCO:5-12: the class weights of the 80 COCO classes (1 base, 0 otherwise), then background.
OFFICIAL_COCO_CLASS_WEIGHT = [1, 1, 1, 1, 0, 0, 1, 1, 1, 0,
                              0, 0, 0, 1, 1, 0, 0, 1, 1, 0,
                              0, 1, 1, 1, 1, 0, 1, 0, 1, 1,
                              1, 0, 0, 1, 0, 0, 0, 1, 0, 1,
                              0, 0, 1, 0, 1, 1, 1, 1, 1, 1,
                              1, 1, 0, 1, 1, 0, 1, 0, 0, 1,
                              0, 1, 1, 1, 1, 1, 0, 0, 1, 1,
                              1, 0, 1, 1, 1, 1, 0, 0, 0, 1] + [0.6]


def _get(cfg: Config, key: str) -> Any:
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node


SHARED_MODEL = [  # (key, official value, source) of every recipe
    ('model.type', 'FVLM', 'COCO:25, LVIS:8, RN:8'),
    ('model.data_preprocessor.mean', CLIP_MEAN, 'COCO:27'),
    ('model.data_preprocessor.std', CLIP_STD, 'COCO:28'),
    ('model.data_preprocessor.bgr_to_rgb', True, "mmdet's base model, inherited (COCO:1)"),
    ('model.rpn_head.num_convs', 2, 'COCO:48, LVIS:33, RN:31'),
    ('model.roi_head.bbox_head.num_shared_convs', 4, 'COCO:53, LVIS:38, RN:38'),
    ('model.roi_head.bbox_head.num_shared_fcs', 2, 'COCO:54'),
    ('model.roi_head.bbox_head.num_cls_fcs', 1, 'COCO:55'),
    ('model.roi_head.bbox_head.num_reg_fcs', 1, 'COCO:56'),
    ('model.roi_head.bbox_head.reg_class_agnostic', True, 'COCO:57'),
    ('model.roi_head.bbox_head.norm_cfg.type', 'SyncBN', 'COCO:23,58'),
    ('model.roi_head.bbox_head.logit_scale', 50.0, 'cls_temp, COCO:62, LVIS:48, RN:48'),
    ('model.roi_head.bbox_head.learn_logit_scale', True, 'COCO:64, LVIS:49, RN:49'),
    ('model.roi_head.bbox_head.fc_out_channels', 1024, "mmdet's base bbox head (COCO:1)"),
    ('model.neck.norm_cfg.type', 'SyncBN', 'COCO:42, LVIS:25 (interpolate1 norm)'),
    ('model.neck.fpn.norm_cfg.type', 'SyncBN', 'COCO:46, LVIS:31, RN:27'),
    ('model.neck.fpn.out_channels', 256, "mmdet's base FPN (COCO:1)"),
    ('model.neck.fpn.num_outs', 5, "mmdet's base FPN (COCO:1)"),
    ('find_unused_parameters', True, 'COCO:4, LVIS:4, RN:4'),
]
EXPECTED = {
    'coco': (COCO, SHARED_MODEL + [
        ('model.backbone.model_name', 'ViT-B-16-quickgelu', 'COCO:32 (OpenAI weights)'),
        ('model.backbone.out_indices', (3, 5, 7, 11), 'COCO:35'),
        ('model.neck.fpn.type', 'FPN', 'COCO:1,44-47'),
        ('model.roi_head.vlm_logit_scale', 75.0, 'clip_temp, COCO:61'),
        ('model.roi_head.base_alpha', 0.1, 'COCO:59'),
        ('model.roi_head.novel_beta', 0.8, 'COCO:60'),
        ('model.roi_head.bbox_head.background_weight', 0.6, 'COCO:12'),
        ('model.test_cfg.rcnn.score_thr', 0.01, 'COCO:76'),
        ('model.test_cfg.rcnn.nms.iou_threshold', 0.4, 'COCO:77'),
        ('model.test_cfg.rcnn.max_per_img', 100, 'COCO:78'),
        ('train_cfg.type', 'EpochBasedTrainLoop', 'COCO:84'),
        ('train_cfg.max_epochs', 3, 'COCO:84'),
        ('train_cfg.val_interval', 1, 'COCO:84'),
        ('param_scheduler.0.start_factor', 0.001, 'COCO:91'),
        ('param_scheduler.0.end', 250, 'COCO:91'),
        ('param_scheduler.0.by_epoch', False, 'COCO:91'),
        ('optim_wrapper.optimizer.type', 'AdamW', 'COCO:104'),
        ('optim_wrapper.optimizer.lr', 0.0001, 'COCO:104'),
        ('optim_wrapper.optimizer.betas', (0.9, 0.999), 'COCO:104'),
        ('optim_wrapper.optimizer.weight_decay', 0.1, 'COCO:104'),
        ('optim_wrapper.clip_grad.max_norm', 1.0, 'COCO:105'),
        ('auto_scale_lr.enable', True, 'COCO:112'),
        ('auto_scale_lr.base_batch_size', 64, 'COCO:112'),
        ('train_dataloader.batch_size', 8, 'COCO:114'),
        ('train_dataloader.num_workers', 4, 'COCO:115'),
    ]),
    'lvis': (LVIS, SHARED_MODEL + [
        ('model.backbone.model_name', 'ViT-B-16-quickgelu', 'LVIS:15 (OpenAI weights)'),
        ('model.backbone.out_indices', (3, 5, 7, 11), 'LVIS:17'),
        ('model.neck.fpn.type', 'NASFPN', 'LVIS:28'),
        ('model.neck.fpn.stack_times', 7, 'LVIS:29'),
        ('model.roi_head.bbox_head.num_classes', 1203, 'LVIS:43'),
        ('model.roi_head.vlm_logit_scale', 50.0, 'clip_temp, LVIS:47'),
        ('model.roi_head.base_alpha', 0.35, 'LVIS:45'),
        ('model.roi_head.novel_beta', 0.65, 'LVIS:46'),
        ('model.roi_head.bbox_head.background_weight', 0.9, 'bg_weight, LVIS:56'),
        ('model.roi_head.mask_head.class_agnostic', True, 'LVIS:60'),
        ('model.roi_head.mask_head.norm_cfg.type', 'SyncBN', 'LVIS:60'),
        ('model.test_cfg.rpn.nms_pre', 2000, 'LVIS:63'),
        ('model.test_cfg.rcnn.score_thr', 0.0001, 'LVIS:65'),
        ('model.test_cfg.rcnn.nms.iou_threshold', 0.5, 'LVIS:66'),
        ('model.test_cfg.rcnn.max_per_img', 300, 'LVIS:67'),
        ('default_hooks.checkpoint.interval', 1, 'LVIS:72'),
        ('default_hooks.checkpoint.max_keep_ckpts', 1, 'LVIS:72'),
        ('train_cfg.type', 'EpochBasedTrainLoop', 'LVIS:76'),
        ('train_cfg.max_epochs', 48, 'LVIS:76'),
        ('train_cfg.val_interval', 12, 'LVIS:76'),
        ('param_scheduler.0.start_factor', 0.001, 'LVIS:83'),
        ('param_scheduler.0.end', 250, 'LVIS:83'),
        ('param_scheduler.1.milestones', [32, 44], 'LVIS:89'),
        ('param_scheduler.1.by_epoch', True, 'LVIS:88'),
        ('param_scheduler.1.gamma', 0.1, 'LVIS:90'),
        ('optim_wrapper.optimizer.type', 'AdamW', 'LVIS:97'),
        ('optim_wrapper.optimizer.lr', 0.0004, 'LVIS:97'),
        ('optim_wrapper.optimizer.betas', (0.9, 0.999), 'LVIS:97'),
        ('optim_wrapper.optimizer.weight_decay', 0.05, 'LVIS:97'),
        ('optim_wrapper.clip_grad.max_norm', 35, 'LVIS:98'),
        ('auto_scale_lr.enable', True, 'LVIS:105'),
        ('auto_scale_lr.base_batch_size', 128, 'LVIS:105 (8 * 16)'),
        ('train_dataloader.batch_size', 16, 'LVIS:107'),
        ('train_dataloader.dataset.type', 'ClassBalancedDataset', "mmdet's lvis_v1 base (LVIS:3)"),
        ('train_dataloader.dataset.oversample_thr', 0.001, "mmdet's lvis_v1 base (LVIS:3)"),
        ('val_evaluator.metric', ['segm'], 'LVIS_DATA_640:62'),
    ]),
    'rn50x64': (RN, SHARED_MODEL[:4] + SHARED_MODEL[5:] + [
        ('model.backbone.model_name', 'RN50x64-quickgelu', 'RN:15 (OpenAI weights)'),
        ('model.backbone.out_indices', (1, 2, 3, 4), 'RN:12-24 (C2-C5, CLIPResNet.forward)'),
        ('model.neck.fpn.type', 'FPN', 'RN:1,25-28'),
        ('model.rpn_head.type', 'NormRPNHead', 'CustomRPNHead, RN:30'),
        ('model.rpn_head.num_convs', 2, 'RN:31'),
        ('model.rpn_head.norm_cfg.type', 'SyncBN', 'RN:32'),
        ('model.roi_head.bbox_head.num_classes', 1203, 'RN:43'),
        ('model.roi_head.vlm_logit_scale', 50.0, 'RN:47'),
        ('model.roi_head.base_alpha', 0.35, 'RN:45'),
        ('model.roi_head.novel_beta', 0.65, 'RN:46'),
        ('model.roi_head.bbox_head.background_weight', 0.9, 'RN:56'),
        ('model.roi_head.mask_head.class_agnostic', True, 'RN:60'),
        ('model.test_cfg.rpn.nms_pre', 2000, 'RN:63'),
        ('model.test_cfg.rcnn.score_thr', 0.0001, 'RN:65'),
        ('model.test_cfg.rcnn.nms.iou_threshold', 0.5, 'RN:66'),
        ('model.test_cfg.rcnn.max_per_img', 300, 'RN:67'),
        ('default_hooks.checkpoint.by_epoch', False, 'iter_based_runtime.py:4 (RN:2)'),
        ('default_hooks.checkpoint.interval', 1440, 'RN:72 (2880 // 2)'),
        ('default_hooks.checkpoint.max_keep_ckpts', 1, 'iter_based_runtime.py:4'),
        ('log_processor.window_size', 50, 'iter_based_runtime.py:6'),
        ('log_processor.by_epoch', False, 'iter_based_runtime.py:6'),
        ('train_cfg.type', 'IterBasedTrainLoop', 'RN:76'),
        ('train_cfg.max_iters', 2880, 'RN:76'),
        ('train_cfg.val_interval', 2880, 'RN:76'),
        ('param_scheduler.0.start_factor', 0.009, 'RN:83'),
        ('param_scheduler.0.end', 250, 'RN:83'),
        ('param_scheduler.1.milestones', [2304, 2592, 2736], 'RN:89'),
        ('param_scheduler.1.by_epoch', False, 'RN:88'),
        ('optim_wrapper.optimizer.type', 'SGD', 'RN:95'),
        ('optim_wrapper.optimizer.lr', 0.36, 'RN:95'),
        ('optim_wrapper.optimizer.momentum', 0.9, 'RN:95'),
        ('optim_wrapper.optimizer.weight_decay', 0.0001, 'RN:95'),
        ('optim_wrapper.clip_grad.max_norm', 1.0, 'RN:96'),
        ('auto_scale_lr.enable', True, 'RN:103'),
        ('auto_scale_lr.base_batch_size', 256, 'RN:103'),
        ('train_dataloader.batch_size', 32, 'RN:105'),
        ('train_dataloader.sampler.type', 'InfiniteSampler', 'RN:107'),
    ]),
}


@pytest.mark.parametrize('recipe,key,official,source',
                         [(name, *row) for name, (_, rows) in EXPECTED.items() for row in rows],
                         ids=lambda value: str(value)[:40])
def test_recipe_value_is_official(recipe: str, key: str, official: Any, source: str) -> None:
    cfg = EXPECTED[recipe][0]
    value = _get(cfg, key)
    if isinstance(official, (list, tuple)):
        value, official = list(value), list(official)
    assert value == official, f'{recipe} {key}: {value!r}, official {official!r} ({source})'


@pytest.mark.parametrize('cfg,size', [(COCO, 640), (LVIS, 640), (RN, 1024)],
                         ids=['coco', 'lvis', 'rn50x64'])
def test_large_scale_jitter_pipelines(cfg: Config, size: int) -> None:
    """COCO_DATA:13-53, LVIS_DATA_640:14-54, LVIS_DATA:14-54 (size 640 / 640 / 1024 at :5/:3/:3):
    float images, resize by 0.1-2.0, crop, pad with the CLIP mean tuple, filter tiny boxes,
    flip; test: resize and pad."""
    dataset = cfg.train_dataloader.dataset
    train = (dataset.dataset if dataset.type == 'ClassBalancedDataset' else dataset).pipeline
    steps = {step.type: step for step in train}
    assert [step.type for step in train] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop', 'Pad',
        'FilterAnnotations', 'RandomFlip', 'PackDetInputs']
    assert steps['LoadImageFromFile'].to_float32 is True
    assert tuple(steps['RandomResize'].scale) == (size, size)
    assert tuple(steps['RandomResize'].ratio_range) == (0.1, 2.0)
    assert steps['RandomResize'].keep_ratio is True
    crop = steps['RandomCrop']
    assert (crop.crop_type, tuple(crop.crop_size)) == ('absolute_range', (size, size))
    assert crop.recompute_bbox is True and crop.allow_negative_crop is True
    assert tuple(steps['Pad'].size) == (size, size)
    assert list(steps['Pad'].pad_val.img) == CLIP_MEAN and steps['Pad'].pad_val.seg == 255
    assert tuple(steps['FilterAnnotations'].min_gt_bbox_wh) == (1e-2, 1e-2)
    assert steps['RandomFlip'].prob == 0.5
    test = {step.type: step for step in cfg.test_dataloader.dataset.pipeline}
    assert tuple(test['Resize'].scale) == (size, size) and test['Resize'].keep_ratio is True
    assert tuple(test['Pad'].size) == (size, size) and list(test['Pad'].pad_val.img) == CLIP_MEAN
    assert test['LoadImageFromFile'].to_float32 is True


def test_ov_coco_base_classes_are_the_official_class_weights() -> None:
    """The 48 classes of weight 1 among the 80 (COCO:5-12) are our base classes; ours classify
    the 65 OV-COCO classes (the official scores the 80, the 15 unused ones as competitors)."""
    official_base = [name for name, weight in
                     zip(CocoDataset.METAINFO['classes'], OFFICIAL_COCO_CLASS_WEIGHT) if weight]
    assert tuple(official_base) == OV_COCO_BASE_CLASSES
    assert COCO.model.roi_head.bbox_head.background_weight == OFFICIAL_COCO_CLASS_WEIGHT[-1]
    assert tuple(COCO.train_dataloader.dataset.metainfo.classes) == OV_COCO_CLASSES
    assert COCO.model.roi_head.bbox_head.num_classes == len(OV_COCO_CLASSES)
    assert COCO.val_evaluator.type == 'OVCocoSplitMetric'
    assert COCO.val_evaluator.split_file == COCO.model.roi_head.bbox_head.split_file


@pytest.mark.slow
def test_derived_sizes_of_the_real_towers_are_the_official_ones() -> None:
    """Built from the real open_clip configs (random weights): the neck inputs the official
    configs type (COCO:45 [768] * 4, RN:26 [512, 1024, 2048, 4096]), the VLM embedding size of
    the official RoI extractor (COCO:40 out_channels 512) and stride (COCO:41 [16], RN:23 [32]),
    and the 14x14 RoIAlign of the RN50x64 attention pool (RN:20)."""
    torch.manual_seed(0)
    vit = CLIPViTPyramidBackbone('ViT-B-16-quickgelu', out_indices=(3, 5, 7, 11))
    assert (vit.out_channels, vit.out_strides) == ([768] * 4, [16] * 4)
    assert (vit.embed_dim, vit.vlm_stride) == (512, 16)
    del vit
    rn = CLIPViTPyramidBackbone('RN50x64-quickgelu', out_indices=(1, 2, 3, 4))
    assert rn.out_channels == [512, 1024, 2048, 4096] and rn.out_strides == [4, 8, 16, 32]
    assert rn.vlm_stride == 32 and resnet_pool_grid(rn.visual) == (14, 14)
