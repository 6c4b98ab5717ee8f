# Copyright (c) mmclim contributors. All rights reserved.
"""The shipped F-VLM configs, shrunk to a tiny CLIP and 8 classes, train and predict on CPU."""
import json
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

import mmclim.models.backbones.clip_vit_pyramid  # noqa: F401 (registers the backbone)
import mmclim.models.necks  # noqa: F401
from mmclim.datasets.ov_splits import OV_COCO_CLASSES, category_names, lvis_category_split
from mmclim.models.detectors import FVLM
from mmclim.structures import split_record, write_split_file

REPO_ROOT = Path(__file__).resolve().parents[3]
FVLM_CONFIGS = sorted(REPO_ROOT.glob('configs/fvlm_*.py'))
BASE_CONFIGS = sorted((REPO_ROOT / 'configs' / 'fvlm').glob('fvlm_vitb16_*.py'))
TOY_CONFIG = REPO_ROOT / 'configs' / 'fvlm' / 'fvlm_toy-vit_toy-shapes.py'
# The shipped CLIP towers and the tiny ones standing in for them (with their out_indices).
TINY_TOWERS = {
    'ViT-B-16-quickgelu': ('mmclim-toy-vit', (0, 1, 2, 3)),  # 4 blocks, patch 8, width 96
    'RN50x64-quickgelu': ('mmclim-tiny-rn', (1, 2, 3, 4)),  # C2-C5 of 64-512 channels
}
CHANNELS = 32  # FPN, RPN and RoI head width of the shrunk models
TEST_PROPOSALS = 200  # per image at test time (shipped: 1000)
TEST_DETECTIONS = 50  # per image (shipped: 300 for LVIS, 100 for COCO)
IMAGE = 128
# An LVIS-style vocabulary of 8 categories (ids out of order) with LVIS frequencies: the rare
# ones, labels 2 and 6 in category-id order, are novel.
FREQUENCIES = {4: 'f', 1: 'c', 3: 'r', 2: 'f', 5: 'c', 8: 'f', 7: 'r', 6: 'c'}
NUM_CLASSES = len(FREQUENCIES)
NOVEL_LABELS = (2, 6)
BASE_LABELS = tuple(label for label in range(NUM_CLASSES) if label not in NOVEL_LABELS)


@pytest.fixture(scope='module')
def split_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The split file of an LVIS-style annotation file, as prepare_ov_lvis.py writes it."""
    data = dict(images=[], annotations=[],
                categories=[dict(id=cat_id, name=f'class_{cat_id}', frequency=frequency)
                            for cat_id, frequency in FREQUENCIES.items()])
    path = str(tmp_path_factory.mktemp('lvis') / 'lvis_v1_train_ov_split.json')
    split = lvis_category_split(data, 'fixture')
    write_split_file(path, split_record(category_names(data), split.base_ids, split.novel_ids,
                                        'fixture'))
    return path


def _embeddings(folder: Path, embed_dim: int) -> str:
    """Random unit text embeddings of the 8 classes, (8, embed_dim)."""
    rows = np.random.RandomState(0).randn(NUM_CLASSES, embed_dim).astype(np.float32)
    path = folder / f'text_{embed_dim}.npy'
    np.save(path, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    return str(path)


def _shrunk_model(config: Path, split_file: str, folder: Path) -> FVLM:
    """The config's model with a tiny random CLIP, 8 classes, 32-channel heads and fewer
    test-time boxes."""
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.default_scope)
    model = cfg.model
    tiny_name, out_indices = TINY_TOWERS[model.backbone.model_name]
    model.backbone.update(model_name=tiny_name, out_indices=out_indices, pretrained=None)
    backbone = MODELS.build(model.backbone)
    if model.neck.type == 'SimplePyramidFPN':
        model.neck.update(in_channels=backbone.out_channels[0], in_stride=backbone.dense_stride)
        model.neck.fpn.out_channels = CHANNELS
    else:
        model.neck.update(in_channels=backbone.out_channels, out_channels=CHANNELS)
    model.rpn_head.update(in_channels=CHANNELS, feat_channels=CHANNELS)
    roi_head = model.roi_head
    roi_head.bbox_roi_extractor.out_channels = CHANNELS
    roi_head.mask_roi_extractor.out_channels = CHANNELS
    roi_head.bbox_head.update(in_channels=CHANNELS, fc_out_channels=2 * CHANNELS,
                              num_classes=NUM_CLASSES)
    roi_head.bbox_head.cls_predictor_cfg.update(
        text_embeddings=_embeddings(folder, backbone.embed_dim), split_file=split_file)
    roi_head.mask_head.update(in_channels=CHANNELS, conv_out_channels=CHANNELS,
                              num_classes=NUM_CLASSES)
    model.data_preprocessor.batch_augments[0].size = (IMAGE, IMAGE)
    model.test_cfg.rpn.max_per_img = TEST_PROPOSALS
    model.test_cfg.rcnn.max_per_img = TEST_DETECTIONS
    torch.manual_seed(0)
    return MODELS.build(model)


def _inputs(num_items: List[int]) -> dict:
    """Two demo images (128x128 and 128x96) with masks; ground truth of base classes only."""
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, IMAGE, IMAGE), (3, IMAGE, 96)],
                            num_items=num_items, num_classes=NUM_CLASSES, with_mask=True)
    for sample in packed['data_samples']:
        labels = sample.gt_instances.labels
        sample.gt_instances.labels = torch.tensor(BASE_LABELS)[labels % len(BASE_LABELS)]
    return packed


def _trainable(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize('config', FVLM_CONFIGS, ids=[c.name for c in FVLM_CONFIGS])
def test_shipped_config_trains_and_predicts(config: Path, split_file: str,
                                            tmp_path: Path) -> None:
    model = _shrunk_model(config, split_file, tmp_path)
    assert isinstance(model, FVLM)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.roi_head.classifier.novel_mask.nonzero().flatten().tolist() == list(NOVEL_LABELS)

    clip_weights = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.init_weights()  # as the runner does: must leave the CLIP weights alone
    assert all(torch.equal(v, clip_weights[k]) for k, v in model.backbone.state_dict().items())

    model.train()
    assert not model.backbone.training
    data = model.data_preprocessor(_inputs([3, 0]), True)  # the second image has no ground truth
    losses = model.forward(**data, mode='loss')
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        value = sum(losses[key]) if isinstance(losses[key], list) else losses[key]
        assert torch.isfinite(value), key
    loss, _ = model.parse_losses(losses)
    loss.backward()
    trained = {name.split('.')[0] for name, p in _trainable(model) if p.grad is not None
               and p.grad.abs().sum() > 0}
    assert trained == {'neck', 'rpn_head', 'roi_head'}
    assert model.roi_head.classifier.background_embedding.grad.abs().sum() > 0

    empty = model.data_preprocessor(_inputs([0, 0]), True)
    losses = model.forward(**empty, mode='loss')
    assert torch.isfinite(model.parse_losses(losses)[0])

    model.eval()
    data = model.data_preprocessor(_inputs([3, 0]), False)
    with torch.no_grad():
        results = model.forward(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        pred = result.pred_instances
        assert len(pred) > 0
        assert pred.bboxes.shape == (len(pred), 4)
        assert pred.masks.shape == (len(pred), *result.ori_shape)
        assert 0 <= pred.labels.min() and pred.labels.max() < NUM_CLASSES
        assert (pred.scores >= 0).all() and (pred.scores <= 1).all()


@pytest.mark.parametrize('config', BASE_CONFIGS, ids=[c.name for c in BASE_CONFIGS])
def test_base_config_builds_shrunk(config: Path, split_file: str, tmp_path: Path) -> None:
    model = _shrunk_model(config, split_file, tmp_path)
    assert not _trainable(model.backbone)
    assert model.backbone.vlm.model_name == 'mmclim-toy-vit'


def test_lvis_configs_train_on_base_annotations() -> None:
    for config in FVLM_CONFIGS:
        if not config.name.endswith('_lvis.py'):
            continue
        cfg = Config.fromfile(str(config))
        train_set = cfg.train_dataloader.dataset.dataset  # inside ClassBalancedDataset
        assert train_set.ann_file.endswith('lvis_v1_train_ov_base.json')
        assert cfg.val_evaluator.type == 'FastLVISMetric'
        assert cfg.val_evaluator.metric == ['bbox', 'segm']
        assert cfg.model.roi_head.bbox_head.num_classes == 1203
        assert cfg.model.roi_head.bbox_head.cls_predictor_cfg.split_file.endswith(
            'lvis_v1_train_ov_split.json')
        assert cfg.model.backbone.pretrained.startswith('checkpoints/clip/')


def test_ov_coco_config_uses_the_split_classes() -> None:
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fvlm_clim_vitb16_ov-coco.py'))
    train_set, val_set = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert train_set.ann_file.endswith('instances_train2017_ov_base.json')
    assert tuple(train_set.metainfo.classes) == tuple(val_set.metainfo.classes) == OV_COCO_CLASSES
    assert cfg.model.roi_head.bbox_head.num_classes == len(OV_COCO_CLASSES) == 65
    assert cfg.val_evaluator.split_file == cfg.model.roi_head.bbox_head.cls_predictor_cfg.split_file
    assert cfg.test_dataloader.dataset.ann_file == val_set.ann_file


def test_rejects_a_backbone_without_clip_features(split_file: str, tmp_path: Path) -> None:
    cfg = Config.fromfile(str(FVLM_CONFIGS[0]))
    init_default_scope(cfg.default_scope)
    model = cfg.model
    model.backbone = dict(type='ResNet', depth=18, init_cfg=None)
    model.neck = dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=256, num_outs=5)
    model.roi_head.bbox_head.cls_predictor_cfg.update(
        text_embeddings=_embeddings(tmp_path, 512), split_file=split_file)
    model.roi_head.bbox_head.num_classes = NUM_CLASSES
    with pytest.raises(ValueError, match="FVLM.backbone: expected type='CLIPViTPyramidBackbone'"
                                         ', got ResNet'):
        MODELS.build(model)


def test_toy_config_trains_and_predicts_boxes(tmp_path: Path) -> None:
    """The CPU toy config as shipped (toy CLIP, 16 classes, boxes only), random CLIP weights."""
    from mmclim.datasets import TOY_NOVEL_CLASSES, class_names
    names = class_names()
    split = tmp_path / 'ov_split.json'
    split.write_text(json.dumps(dict(
        base_category_ids=[i + 1 for i, n in enumerate(names) if n not in TOY_NOVEL_CLASSES],
        novel_category_ids=[i + 1 for i, n in enumerate(names) if n in TOY_NOVEL_CLASSES])))
    cfg = Config.fromfile(str(TOY_CONFIG))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.pretrained = None
    num_classes = len(names)
    embeddings = np.random.RandomState(0).randn(num_classes, 64).astype(np.float32)
    np.save(tmp_path / 'toy.npy', embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
    cfg.model.roi_head.bbox_head.cls_predictor_cfg.update(
        text_embeddings=str(tmp_path / 'toy.npy'), split_file=str(split))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert not model.with_mask and not _trainable(model.backbone)
    novel = model.roi_head.classifier.novel_mask.nonzero().flatten().tolist()
    assert [names[i] for i in novel] == sorted(TOY_NOVEL_CLASSES, key=names.index)
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, IMAGE, IMAGE)] * 2, num_items=[2, 0],
                            num_classes=num_classes)
    for sample in packed['data_samples']:
        sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)  # a base class
    model.train()
    losses = model.forward(**model.data_preprocessor(packed, True), mode='loss')
    assert torch.isfinite(model.parse_losses(losses)[0])
    model.eval()
    with torch.no_grad():
        results = model.forward(**model.data_preprocessor(packed, False), mode='predict')
    assert all('masks' not in r.pred_instances for r in results)
