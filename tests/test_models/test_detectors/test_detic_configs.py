# Copyright (c) mmclim contributors. All rights reserved.
"""The shipped Detic recipes hold the official values.

Every expected value below is typed from the official CLIM code (github.com/wusize/CLIM, the
ovdet/ folder), cited as file:line:
  S = configs/detic/ov_coco/faster_rcnn_r50_caffe_c4_90k_ovcoco.py
  T = configs/detic/ov_coco/detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py
  M = configs/_base_/datasets/coco_ovd_detic_clim.py
  D = configs/_base_/datasets/coco_ovd_detic.py
  H45, H90 = configs/_base_/schedules/schedule_{45k,90k}.py
  LB = configs/detic/ov_lvis/detic_centernet2_r50_fpn_4x_lvis_boxsup.py
  LC = configs/detic/ov_lvis/detic_centernet2_r50_fpn_4x_lvis-base_cc3m-lvis.py
  LM = configs/detic/ov_lvis/detic_clim_centernet2_r50_fpn_4x_lvis-base_cc3m-lvis.py
"""
from pathlib import Path
from typing import Any

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'detic'
COCO1 = 'faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py'
COCO_CAP = 'detic_r50-caffe-c4_45k_ov-coco-caption.py'
COCO_TAGS = 'detic_r50-caffe-c4_45k_ov-coco-caption-tags.py'
COCO_CLIM = 'detic-clim_r50-caffe-c4_45k_ov-coco-caption.py'
COCO_CLIM_TAGS = 'detic-clim_r50-caffe-c4_45k_ov-coco-caption-tags.py'
LVIS1 = 'centernet2_r50-fpn_90k_ov-lvis-base.py'
LVIS_CAP = 'detic_centernet2_r50-fpn_45k_ov-lvis-cc3m.py'
LVIS_CLIM = 'detic-clim_centernet2_r50-fpn_45k_ov-lvis-cc3m.py'


def _get(cfg: Config, key: str) -> Any:
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node


EXPECTED = [  # (config, key, official value, source)
    (COCO1, 'model.roi_head.bbox_head.logit_scale', 25.0, 'S:45 cls_temp'),
    (COCO1, 'model.roi_head.bbox_head.cls_bias', -20.0, 'S:44'),
    (COCO1, 'model.roi_head.bbox_head.fc_out_channels', 2048, 'S:17-21 reg MLP'),
    (COCO1, 'model.roi_head.bbox_head.reg_class_agnostic', True, 'S:43'),
    (COCO1, 'train_cfg.max_iters', 90000, 'H90:2'),
    (COCO1, 'optim_wrapper.optimizer.lr', 0.02, 'H90:22'),
    (COCO1, 'optim_wrapper.clip_grad.max_norm', 35, 'S:58'),
    (COCO1, 'param_scheduler.1.milestones', [60000, 80000], 'H90:15'),
    (COCO1, 'train_dataloader.batch_size', 2, 'mmdet coco_detection, 8 x 2 = 16 (H90:27)'),
    (COCO_CAP, 'train_dataloader.sampler.source_ratio', [2, 4], 'D:50-63'),
    (COCO_CAP, 'model.caption_loss.logit_scale', 25.0, 'T:67 norm_temp'),
    (COCO_CAP, 'model.caption_loss.bias', -20.0, 'T:67 bce_bias'),
    (COCO_CAP, 'model.caption_loss.loss_weight', 0.1, 'T:67 caption_weight'),
    (COCO_CAP, 'model.caption_loss.neg_weight', 0.125, 'T:71 cap_neg_weight'),
    (COCO_CAP, 'model.caption_loss.queue_size', 256, 'T:69'),
    (COCO_CAP, 'model.caption_loss.base_batch_size', 4, 'T:66'),
    (COCO_CAP, 'model.text_encoder.model_name', 'ViT-B-32-quickgelu', 'T:22 ViT-B/32'),
    (COCO_CAP, 'train_cfg.max_iters', 45000, 'H45:2'),
    (COCO_CAP, 'param_scheduler.1.milestones', [30000, 40000], 'H45:15'),
    (COCO_CAP, 'load_from', 'checkpoints/detic_coco_base.pth', 'T:101'),
    (COCO_CAP, 'caption_pipeline.2.scale', (667, 400), 'M:21'),
    (COCO_TAGS, 'model.tag_loss.loss_weight', 0.1 / 3, 'T:76 tag_weight'),
    (COCO_TAGS, 'model.tag_loss.logit_scale', 25.0, 'T:76'),
    (COCO_TAGS, 'model.tag_loss.bias', -20.0, 'T:76'),
    (COCO_TAGS, 'model.tag_loss.neg_weight', 1.0, 'T:77'),
    (COCO_TAGS, 'model.tag_sampling', dict(topk=128, iof_thr=0.3), 'T:74'),
    (COCO_CLIM, 'train_dataloader.sampler.source_ratio', [2, 2, 2], 'M:86'),
    (COCO_CLIM, 'model.caption_branches.mosaic_batch.num_groups', 4,
     'T:65 DeticCaptionWithComposition default'),
    (COCO_CLIM, 'mosaic_pipeline.2.grid_choices', [(2, 2), (3, 3), (4, 4)], 'M:42'),
    (COCO_CLIM, 'mosaic_pipeline.2.cell_size', 400, 'M:44'),
    (COCO_CLIM, 'mosaic_pipeline.2.pad_val', 114, 'M:45'),
    (COCO_CLIM, 'mosaic_pipeline.2.max_cached_images', 1024, 'M:43'),
    (COCO_CLIM, 'mosaic_pipeline.3.scale', (800, 800), 'M:47'),
    (COCO_CLIM_TAGS, 'model.tag_loss.loss_weight', 0.1 / 3, 'T:76'),
    (COCO_CLIM_TAGS, 'model.caption_branches.mosaic_batch',
     dict(caption=True, tags=True, num_groups=4), 'T:59-60'),
    (LVIS1, 'model.rpn_head.type', 'CenterNetRPNHead', 'LB:53'),
    (LVIS1, 'model.rpn_head.strides', [8, 16, 32, 64, 128], 'LB:58'),
    (LVIS1, 'model.rpn_head.ignore_high_fp', 0.85, 'LB:69'),
    (LVIS1, 'model.roi_head.stage_loss_weights', [1.0, 1.0, 1.0], 'LB:76'),
    (LVIS1, 'model.roi_head.bbox_head.0.logit_scale', 50.0, 'LB:17 norm_temperature'),
    (LVIS1, 'model.roi_head.bbox_head.2.bbox_coder.target_stds', [0.033, 0.033, 0.067, 0.067],
     'LB:143'),
    (LVIS1, 'model.roi_head.bbox_head.0.loss_cls.federated.num_classes', 50,
     'OriginalDeticBBoxHead default'),
    (LVIS1, 'model.train_cfg.rpn_proposal.nms_pre', 4000, 'LB:188'),
    (LVIS1, 'model.train_cfg.rcnn.2.assigner.pos_iou_thr', 0.8, 'LB:230'),
    (LVIS1, 'model.test_cfg.rpn.max_per_img', 256, 'LB:249'),
    (LVIS1, 'model.test_cfg.rcnn.score_thr', 0.02, 'LB:253'),
    (LVIS1, 'optim_wrapper.optimizer.lr', 0.0002, 'LB:388'),
    (LVIS1, 'param_scheduler.0.end', 10000, 'LB:398'),
    (LVIS_CAP, 'train_dataloader.sampler.source_ratio', [8, 32], 'LC:87'),
    (LVIS_CAP, 'model.caption_loss.logit_scale', 50.0, 'LC:174 norm_temp'),
    (LVIS_CAP, 'model.caption_loss.bias', None, 'LC:174 bce_bias'),
    (LVIS_CAP, 'model.caption_loss.neg_weight', 1 / 8, 'LC:178'),
    (LVIS_CAP, 'model.caption_loss.loss_weight', 1.0, 'LC:174'),
    (LVIS_CAP, 'model.tag_loss.loss_weight', 0.1, 'LC:169'),
    (LVIS_CAP, 'train_cfg.max_iters', 45000, 'LC:102'),
    (LVIS_CAP, 'param_scheduler.0.end', 1000, 'LC:106'),
    (LVIS_CLIM, 'train_dataloader.sampler.source_ratio', [8, 16, 16], 'LM:129'),
    (LVIS_CLIM, 'model.caption_branches.clim_batch.num_groups', 2, 'LM:208,215'),
    (LVIS_CLIM, 'mosaic_pipeline.4.cell_size', 320, 'LM:85'),
    (LVIS_CLIM, 'mosaic_pipeline.5.scale', (640, 640), 'LM:88'),
]
CONFIG_CACHE: dict = {}


@pytest.mark.parametrize('name,key,official,source', EXPECTED,
                         ids=[f'{name}:{key}' for name, key, _, _ in EXPECTED])
def test_recipe_holds_the_official_value(name: str, key: str, official: Any, source: str) -> None:
    if name not in CONFIG_CACHE:
        CONFIG_CACHE[name] = Config.fromfile(str(CONFIGS / name))
    value = _get(CONFIG_CACHE[name], key)
    if isinstance(official, float):
        assert value == pytest.approx(official), source
    elif isinstance(official, list) and official and isinstance(official[0], tuple):
        assert [tuple(v) for v in value] == official, source
    elif isinstance(official, tuple):
        assert tuple(value) == official, source
    else:
        assert value == official, source
