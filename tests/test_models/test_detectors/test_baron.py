# Copyright (c) mmclim contributors. All rights reserved.
"""BaronDetector: every shipped BARON config builds and trains on a multi-branch batch; the bags
of a mosaic stay inside their pseudo regions; the text tower gets no gradient.

Shipped configs are built as shipped but for the backbone (ResNet-18, no pretrained weights), the
frozen text tower (the bundled tiny open_clip model, random) and the vocabulary files (random
embeddings of the size of the tower's output the head uses). Batches come from the real
transforms (``make_batch`` of the Detic tests).
"""
import copy
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmclim.models.detectors import BaronDetector
from mmclim.models.losses import image_ids_to_tensor
from mmclim.structures import save_class_embeddings
from tests.test_models.test_detectors.test_detic import Compose, build, make_batch, shrink_backbone
from tests.test_models.test_roi_heads.vocabulary_files import write_vocabulary

CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'baron'
TEXT_MODEL = 'mmclim-tiny-vit'  # embed_dim 32, width 64, context 77
TEXT_SIZES = dict(projection=32, last_block=64)
CAPTION_CONFIGS = [
    'baron_r50-caffe-c4_45k_ov-coco-caption.py',
    'baron-clim_r50-caffe-c4_45k_ov-coco-caption.py',
    'toy/baron_r18-fpn_toy-shapes-caption.py',
    'toy/baron_r18-fpn_toy-shapes-caption-matched.py',
    'toy/baron-clim_r18-fpn_toy-shapes-caption.py',
]
STAGE1 = [
    'faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py', 'toy/faster-rcnn_r18-fpn_toy-shapes-base.py',
    'toy/baron_r18-fpn_toy-shapes-det-only.py'
]


@pytest.fixture(autouse=True)
def mmdet_scope() -> None:
    init_default_scope('mmdet')


def shrunk(name: str, tmp_path: Path) -> Config:
    """The shipped config with a ResNet-18 backbone, the tiny text tower and test vocabularies."""
    cfg = Config.fromfile(str(CONFIGS / name))
    model = cfg.model
    shrink_backbone(model)
    model.text_encoder = dict(type='CLIPTextEncoder', model_name=TEXT_MODEL)
    head = model.roi_head.bbox_head
    text_output = head.get('text_output', 'projection')
    embeddings, head.split_file = write_vocabulary(tmp_path, head.num_classes,
                                                   TEXT_SIZES[text_output], [0, 3], TEXT_MODEL)
    # The same random rows, with the sidecar of the head's text output.
    head.class_embeddings = str(tmp_path / f'classes_{text_output}.npy')
    save_class_embeddings(head.class_embeddings, torch.from_numpy(np.load(embeddings)),
                          TEXT_MODEL, {'text_output': text_output})
    return cfg


def caption_keys(cfg: Config) -> List[str]:
    return sorted(f'loss_caption_{branch}' for branch in cfg.model.caption_branches)


@pytest.mark.parametrize('name', CAPTION_CONFIGS)
def test_shipped_caption_configs_train_and_predict(name: str, tmp_path: Path) -> None:
    cfg = shrunk(name, tmp_path)
    model = build(cfg)
    assert isinstance(model, BaronDetector)
    data = model.data_preprocessor(make_batch(cfg), True)
    losses = model(**data, mode='loss')
    assert sorted(k for k in losses if 'caption' in k) == caption_keys(cfg)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    for key in caption_keys(cfg):
        assert losses[key].item() > 0, key
    if name.startswith('toy/baron-clim'):
        total.backward()
        # The frozen text tower gets no gradient; the pseudo-word projection and the
        # positional embedding of the bags do.
        assert all(p.grad is None for p in model.text_encoder.parameters())
        projection = model.bbox_heads[0].classifier.projection.weight
        assert projection.grad is not None and projection.grad.abs().sum() > 0
        pe = next(model.box_positional_embedding.parameters())
        assert pe.grad is not None and pe.grad.abs().sum() > 0
    model.test_cfg.rcnn.max_per_img = 10
    model.eval()
    det = make_batch(cfg, num_caption=0, grids=())
    inputs = dict(inputs=det['inputs']['det_batch'], data_samples=det['data_samples']['det_batch'])
    with torch.no_grad():
        results = model(**model.data_preprocessor(inputs, False), mode='predict')
    instances = results[0].pred_instances
    assert instances.bboxes.shape[1] == 4 and len(instances.scores) == len(instances.labels)
    assert (instances.labels < cfg.model.roi_head.bbox_head.num_classes).all()


@pytest.mark.parametrize('name', STAGE1)
def test_shipped_stage1_configs_train_and_predict(name: str, tmp_path: Path) -> None:
    cfg = shrunk(name, tmp_path)
    model = build(cfg)
    assert model.box_positional_embedding is None  # no caption branch, no bag
    cfg.branches = ['det_batch', 'caption_batch', 'mosaic_batch']
    cfg.caption_meta_keys = ()
    cfg.model.caption_branches = {}
    batch = make_batch(cfg, num_caption=0)
    data = dict(inputs=batch['inputs']['det_batch'],
                data_samples=batch['data_samples']['det_batch'])
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(model.parse_losses(losses)[0])
    losses['loss_cls'].backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.bbox_heads[0].classifier.projection.weight.grad.abs().sum() > 0
    model.test_cfg.rcnn.max_per_img = 10
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(data, False), mode='predict')
    assert results[0].pred_instances.bboxes.shape[1] == 4


def test_mosaic_bags_stay_in_their_pseudo_regions(tmp_path: Path) -> None:
    cfg = shrunk('toy/baron-clim_r18-fpn_toy-shapes-caption.py', tmp_path)
    model = build(cfg)
    data = model.data_preprocessor(make_batch(cfg, num_caption=0, grids=((3, 3), )), True)
    samples = data['data_samples']['mosaic_batch']
    x = model.extract_feat(data['inputs']['mosaic_batch'])
    regions = [model._pseudo_regions(s, 0, False) for s in samples]
    # Proposals everywhere: a loose objectness threshold so that bags are not just the fallback.
    model.bag_sampling.update(objectness_thr=0.0, nms_thr=0.9)
    bags = model._bags(x, samples, regions)
    cells = samples[0].gt_instances.bboxes
    assert len(bags.sizes) == 9 == len(cells)
    assert bags.captions == [[c] for c in regions[0].captions]  # one caption per region here
    assert bags.image_ids == regions[0].image_ids
    max_num = model.bag_sampling['max_num']
    for bag, cell, normed in zip(bags.boxes[0].split(bags.sizes), cells,
                                 bags.normed_boxes.split(bags.sizes)):
        assert 1 <= len(bag) <= max_num + 1
        assert torch.equal(bag[-1], cell)  # the pseudo box ends its bag
        assert (bag[:, :2] >= cell[:2] - 1e-4).all() and (bag[:, 2:] <= cell[2:] + 1e-4).all()
        assert torch.allclose(normed[-1], torch.tensor([0., 0., 1., 1.]), atol=1e-6)
    assert max(bags.sizes) > 1  # some proposals were sampled


def test_bag_embeddings_orders_and_owners(tmp_path: Path) -> None:
    cfg = shrunk('toy/baron_r18-fpn_toy-shapes-caption.py', tmp_path)
    model = build(cfg)
    words = torch.randn(1 + 3, 2, 64)  # a bag of 1 box (1 order) and one of 3 (3! > 4: 4)
    normed = torch.rand(4, 4)
    embeddings, owners = model.bag_embeddings(words, normed, [1, 3])
    assert owners.tolist() == [0, 1, 1, 1, 1]
    assert embeddings.shape == (5, 32)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(5), atol=1e-5)
    # In eval (no word dropped), the one-box bag reads as its words and positional embedding.
    model.eval()
    embeddings, _ = model.bag_embeddings(words, normed, [1, 3])
    alone = words[:1] + model.box_positional_embedding(normed[:1])
    expected = model.text_encoder.encode_pseudo_words(alone, output='projection')
    assert torch.allclose(embeddings[0], expected[0], atol=1e-5)


def test_empty_branch_gives_zero_losses_with_gradient(tmp_path: Path) -> None:
    cfg = shrunk('toy/baron-clim_r18-fpn_toy-shapes-caption.py', tmp_path)
    model = build(cfg)
    data = model.data_preprocessor(make_batch(cfg, grids=()), True)
    losses = model(**data, mode='loss')
    assert float(losses['loss_caption_mosaic_batch']) == 0.0
    assert losses['loss_caption_mosaic_batch'].requires_grad
    assert float(losses['loss_caption_caption_batch']) > 0


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = shrunk('toy/baron_r18-fpn_toy-shapes-caption.py', tmp_path)
    bad = {
        r'text_encoder: required': dict(text_encoder=None),
        r"caption_branches.caption_batch: \['tags'\] are Detic's":
            dict(caption_branches=dict(caption_batch=dict(caption=True, tags=True))),
        r"caption_loss: expected type='BaronCaptionLoss'":
            dict(caption_loss=dict(type='CLIMCaptionLoss', logit_scale=25.0)),
        r'bag_sampling: unknown keys \[\'max_boxes\'\]': dict(bag_sampling=dict(max_boxes=3)),
        r'bag_encoding: unknown keys': dict(bag_encoding=dict(perms=3)),
        # The toy tower's context is 77 here: 2 words x (40 + 1) + 2 = 84 tokens do not fit.
        r'bag_sampling.max_num: .* 84 tokens .* context of 77': dict(bag_sampling=dict(max_num=40)),
    }
    for message, change in bad.items():
        model_cfg = copy.deepcopy(cfg.model)
        for key, value in change.items():
            model_cfg[key] = value
        with pytest.raises(ValueError, match=message):
            MODELS.build(model_cfg)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.roi_head.bbox_head.word_dim = 64
    with pytest.raises(ValueError, match=r"roi_head.bbox_head: \['word_dim'\] follow from"):
        MODELS.build(model_cfg)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.roi_head.bbox_head.type = 'DeticBBoxHead'
    for key in ('num_words', 'word_drop_ratio', 'text_output'):
        model_cfg.roi_head.bbox_head.pop(key)
    with pytest.raises(ValueError, match=r"roi_head.bbox_head: expected type='BaronBBoxHead'"):
        MODELS.build(model_cfg)


def test_every_caption_of_a_region_is_a_positive_of_its_bags(tmp_path: Path) -> None:
    cfg = shrunk('toy/baron-clim_r18-fpn_toy-shapes-caption.py', tmp_path)
    model = build(cfg)
    branches = list(cfg.branches)
    pack = dict(type='PackDetInputs', meta_keys=cfg.caption_meta_keys)
    mosaic = Compose([
        dict(type='MosaicPseudoRegion', grid_choices=[(2, 2)], cell_size=32, keep_ratio=True,
             crop_scale=(1.0, 1.0), pseudo_box='image', all_captions=True),
        dict(type='MultiBranch', branch_field=branches, mosaic_batch=pack)])
    sources = [dict(img=np.full((24, 32, 3), 40 * i, np.uint8), img_shape=(24, 32),
                    ori_shape=(24, 32), img_id=7 + i, img_path=f'{i}.jpg',
                    captions=[f'caption {i}'] * (1 + i % 2)) for i in range(4)]
    batch = pseudo_collate([mosaic(dict(sources[0], mix_results=sources[1:]))])
    data = model.data_preprocessor(batch, True)
    seen = {}

    def spy(bag_feats, caption_feats, bag_ids, caption_ids):
        seen.update(bags=bag_ids, captions=caption_ids, rows=caption_feats.shape[0])
        return bag_feats.sum() * 0

    model.caption_loss.forward = spy
    model.caption_branch_loss(data['inputs']['mosaic_batch'],
                              data['data_samples']['mosaic_batch'],
                              cfg.model.caption_branches['mosaic_batch'])
    # Images 7-10 with 1, 2, 1, 2 captions: 6 caption rows, each with its image's id; every bag
    # (a one-box bag when no proposal passes: 1 order) carries its region's id.
    ids = image_ids_to_tensor([7, 8, 9, 10])
    assert seen['rows'] == 6
    assert seen['captions'].tolist() == ids.repeat_interleave(torch.tensor([1, 2, 1, 2])).tolist()
    assert set(seen['bags'].tolist()) == set(ids.tolist())
