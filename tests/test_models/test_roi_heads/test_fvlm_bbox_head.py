# Copyright (c) mmclim contributors. All rights reserved.
import math
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from vocabulary_files import write_vocabulary

from mmclim.models.roi_heads import FVLMBBoxHead, TextEmbeddingClassifier

NUM_CLASSES = 4
EMBED_DIM = 8
NOVEL = (2, )
CHANNELS = 8


def _head(tmp_path: Path, **kwargs) -> FVLMBBoxHead:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    cfg = dict(type='FVLMBBoxHead', num_shared_convs=4, num_shared_fcs=2, num_cls_fcs=1,
               num_reg_fcs=1, in_channels=CHANNELS, conv_out_channels=CHANNELS,
               fc_out_channels=16, roi_feat_size=7, reg_class_agnostic=True,
               num_classes=NUM_CLASSES, norm_cfg=dict(type='BN', requires_grad=True),
               class_embeddings=embeddings, split_file=split,
               bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=[0.1, 0.1, 0.2, 0.2]),
               loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    return MODELS.build(dict(cfg, **kwargs))


def _loss_cls(head: FVLMBBoxHead, labels: torch.Tensor) -> torch.Tensor:
    """The head's classification loss of all-zero logits for ``labels``."""
    num = len(labels)
    cls_score = torch.zeros(num, NUM_CLASSES + 1)
    losses = head.loss(cls_score, torch.zeros(num, 4), torch.zeros(num, 5), labels,
                       torch.ones(num), torch.zeros(num, 4), torch.zeros(num, 4))
    return losses['loss_cls']


def test_background_weight_by_hand(tmp_path: Path) -> None:
    """Zero logits over 4 classes + background: each sample's cross-entropy is log 5; one base
    sample (label 0) and one background sample (label 4) give (log 5 + w log 5) / 2."""
    labels = torch.tensor([0, NUM_CLASSES])
    for weight in (0.9, 0.6, 1.0):
        head = _head(tmp_path, background_weight=weight)
        assert head.loss_cls.class_weight == [1.0] * NUM_CLASSES + [weight]
        expected = (math.log(5) + weight * math.log(5)) / 2
        assert _loss_cls(head, labels).item() == pytest.approx(expected, rel=1e-5)


def test_official_layout(tmp_path: Path) -> None:
    """4 shared 3x3 convolutions with norm, 2 shared fcs, 1 fc per branch, class-agnostic
    regression, the text-embedding classifier on the 16-d class branch."""
    head = _head(tmp_path)
    assert len(head.shared_convs) == 4 and all(conv.with_norm for conv in head.shared_convs)
    assert len(head.shared_fcs) == 2 and len(head.cls_fcs) == 1 and len(head.reg_fcs) == 1
    assert head.fc_reg.out_features == 4
    assert isinstance(head.classifier, TextEmbeddingClassifier)
    assert head.classifier.projection.in_features == 16
    cls_score, bbox_pred = head(torch.randn(3, CHANNELS, 7, 7))
    assert cls_score.shape == (3, NUM_CLASSES + 1) and bbox_pred.shape == (3, 4)
    head.init_weights()  # mmdet's Normal(std=0.01) init of fc_cls reaches the projection
    assert head.classifier.projection.weight.std().item() == pytest.approx(0.01, rel=0.2)


@pytest.mark.parametrize('kwargs,match', [
    (dict(reg_class_agnostic=False), 'reg_class_agnostic: expected True'),
    (dict(cls_predictor_cfg=dict(type='Linear')), 'cls_predictor_cfg: expected none'),
    (dict(loss_cls=dict(type='CrossEntropyLoss', class_weight=[1.0] * 5)), 'loss_cls'),
    (dict(loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True)), 'loss_cls'),
    (dict(background_weight=-1.0), 'background_weight'),
])
def test_errors(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f'FVLMBBoxHead.{match}'):
        _head(tmp_path, **kwargs)
