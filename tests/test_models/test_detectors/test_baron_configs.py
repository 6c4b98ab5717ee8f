# Copyright (c) mmclim contributors. All rights reserved.
"""The shipped BARON recipes hold the official values.

Every expected value below is typed from the official BARON code (github.com/wusize/ovdet),
cited as file:line:
  S = configs/baron/ov_coco/faster_rcnn_r50_caffe_c4_90k.py (the base-only BARON detector)
  B = configs/baron/ov_coco/baron_caption_faster_rcnn_r50_caffe_c4_90k.py
  D = configs/_base_/datasets/coco_ovd_caption.py
  H = ovdet/models/roi_heads/baron_bbox_heads/bbox_head.py (BaronBBoxHead's defaults)
  U = ovdet/methods/baron/utils.py (SinePositionalEncoding's defaults)
  CD = ovdet/datasets/coco_caption.py; BC = ovdet/methods/baron/baron_caption.py
and, for the schedule of the paper's two-stage re-implementation, from the CLIM code
(github.com/wusize/CLIM, ovdet/): H45 = configs/_base_/schedules/schedule_45k.py. The values the
paper and code leave open (ours) are checked too, so that a change to them is deliberate.
"""
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from mmengine.config import Config

from mmclim.models.utils import BAG_SAMPLING_DEFAULTS, BoxPositionalEmbedding

CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'baron'
STAGE1 = 'faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py'
CAPTION = 'baron_r50-caffe-c4_45k_ov-coco-caption.py'
CLIM = 'baron-clim_r50-caffe-c4_45k_ov-coco-caption.py'


@lru_cache(maxsize=None)
def _load(name: str) -> Config:
    return Config.fromfile(str(CONFIGS / name))


def _plain(value: Any) -> Any:
    """Lists and tuples compared alike."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _get(cfg: Config, key: str) -> Any:
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node


EXPECTED = [  # (config, key, official value, source)
    (STAGE1, 'model.type', 'BaronDetector', 'S:40 OVDTwoStageDetector with clip_cfg S:55'),
    (STAGE1, 'model.text_encoder.model_name', 'ViT-B-32-quickgelu', 'S:22 ViT-B/32'),
    (STAGE1, 'model.roi_head.bbox_head.type', 'BaronBBoxHead', 'S:57'),
    (STAGE1, 'model.roi_head.bbox_head.cls_bias', -20.0, 'S:60'),
    (STAGE1, 'model.roi_head.bbox_head.logit_scale', 25.0, 'S:61 cls_temp'),
    (STAGE1, 'model.roi_head.bbox_head.text_output', 'last_block', 'S:62-63 attn12'),
    (STAGE1, 'model.roi_head.bbox_head.num_words', 4, 'H:24'),
    (STAGE1, 'model.roi_head.bbox_head.word_drop_ratio', 0.5, 'H:25'),
    (STAGE1, 'model.roi_head.bbox_head.reg_class_agnostic', True, 'S:59'),
    (STAGE1, 'model.roi_head.bbox_head.fc_out_channels', 2048, 'S:16-20 reg MLP'),
    (STAGE1, 'train_cfg.max_iters', 90000, 'schedule_90k (S:4)'),
    (CAPTION, 'train_dataloader.sampler.source_ratio', [2, 2], 'D:50'),
    (CAPTION, 'caption_pipeline.2.scale', (1333, 800), 'D:21'),
    (CAPTION, 'caption_pipeline.1.all_captions', True,
     'every caption of an image: CD:49, BaronCaption.get_losses BC:94-98'),
    (CAPTION, 'model.text_encoder.model_name', 'ViT-B-32-quickgelu', 'B:22 ViT-B/32'),
    (CAPTION, 'model.roi_head.bbox_head.text_output', 'last_block', 'B:95'),
    (CAPTION, 'model.roi_head.bbox_head.num_words', 4, 'B:41'),
    (CAPTION, 'model.caption_loss.type', 'BaronCaptionLoss', 'B:39'),
    (CAPTION, 'model.caption_loss.logit_scale', 30.0, 'B:40 norm_temp'),
    (CAPTION, 'model.caption_loss.loss_weight', 10.0, 'B:40'),
    (CAPTION, 'model.caption_loss.queue_size', 1024, 'B:45'),
    (CAPTION, 'model.bag_sampling.shape_ratio_thr', 0.25, 'B:47'),
    (CAPTION, 'model.bag_sampling.area_ratio_thr', 0.01, 'B:48'),
    (CAPTION, 'model.bag_sampling.objectness_thr', 0.85, 'B:49'),
    (CAPTION, 'model.bag_sampling.nms_thr', 0.2, 'B:50'),
    (CAPTION, 'model.bag_sampling.max_num', 10, 'B:51'),
    (CAPTION, 'model.bag_sampling.topk', 128, 'B:52'),
    (CAPTION, 'model.bag_encoding.max_perms', 4, 'B:53'),
    (CAPTION, 'model.bag_encoding.word_drop_ratio', 0.5, 'B:42'),
    (CAPTION, 'model.bag_encoding.positional_embedding', True, 'B:43 use_pe'),
    (CAPTION, 'train_cfg.max_iters', 45000, 'H45:2, the paper\'s parallel re-implementation'),
    (CAPTION, 'param_scheduler.1.milestones', [30000, 40000], 'H45:15'),
    (CAPTION, 'optim_wrapper.clip_grad.max_norm', 35, 'B:107'),
    (CAPTION, 'load_from', 'checkpoints/baron_coco_base.pth', 'the stage-1 config'),
    (CAPTION, 'model.bag_sampling.inside_thr', 0.5, 'ours'),
    (CLIM, 'train_dataloader.sampler.source_ratio', [2, 1, 1], 'ours: D:50 split as Detic+CLIM'),
    (CLIM, 'mosaic_pipeline.2.grid_choices', [(2, 2), (3, 3), (4, 4)], 'Detic + CLIM'),
    (CLIM, 'mosaic_pipeline.2.cell_size', 400, 'Detic + CLIM'),
    (CLIM, 'mosaic_pipeline.2.all_captions', True, 'as the single images (CD:49)'),
    (CLIM, 'model.caption_branches', dict(caption_batch=dict(caption=True),
                                          mosaic_batch=dict(caption=True)), 'paper'),
]


@pytest.mark.parametrize('name,key,value,source', EXPECTED)
def test_official_value(name: str, key: str, value: Any, source: str) -> None:
    actual = _get(_load(name), key)
    assert _plain(actual) == _plain(value), \
        f'{name} {key}: {actual!r}, official {value!r} ({source})'


def test_defaults_are_the_official_ones() -> None:
    # The sampling defaults (B:47-52) and the positional embedding's (U:92-97: 128 features,
    # temperature 1.2, scale 2 pi; its MLP 4 x 128 -> W -> K x W, U:102-105).
    official = dict(shape_ratio_thr=0.25, area_ratio_thr=0.01, objectness_thr=0.85, nms_thr=0.2,
                    max_num=10, topk=128)
    assert {k: BAG_SAMPLING_DEFAULTS[k] for k in official} == official
    embedding = BoxPositionalEmbedding(num_words=4, word_dim=512)
    linears = [m for m in embedding.modules() if m.__class__.__name__ == 'Linear']
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 2048)]
    assert math.isclose(embedding.temperature, 1.2) and math.isclose(embedding.scale, 2 * math.pi)
