# Copyright (c) mmclim contributors. All rights reserved.
"""DeticDetector: every shipped Detic config builds and trains on a three-branch batch.

Each shipped config is built as shipped but for its backbone (ResNet-18, no pretrained weights),
the frozen text tower (the bundled tiny open_clip model, random) and its vocabulary files (random
embeddings of the tiny tower's size, the config's number of classes). A batch is made by the
real transforms: detection images packed by MultiBranch, caption images through
CaptionPseudoBox and mosaics through MosaicPseudoRegion, collated and preprocessed by the
config's own MultiBranchDetDataPreprocessor.
"""
import copy
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmclim.models.detectors import DeticDetector
from mmclim.structures import read_split_file
from tests.test_models.test_roi_heads.vocabulary_files import write_vocabulary

CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'detic'
TEXT_MODEL = 'mmclim-tiny-vit'  # embed_dim 32
TEXT_DIM = 32
COCO_STAGE2 = [
    'detic_r50-caffe-c4_45k_ov-coco-caption.py',
    'detic_r50-caffe-c4_45k_ov-coco-caption-tags.py',
    'detic-clim_r50-caffe-c4_45k_ov-coco-caption.py',
    'detic-clim_r50-caffe-c4_45k_ov-coco-caption-tags.py',
]
LVIS_STAGE2 = [
    'detic_centernet2_r50-fpn_45k_ov-lvis-cc3m.py',
    'detic-clim_centernet2_r50-fpn_45k_ov-lvis-cc3m.py',
]
TOY = ['toy/detic_r18-fpn_toy-shapes-caption.py', 'toy/detic-clim_r18-fpn_toy-shapes-caption.py']
# Configs whose loss is also back-propagated (one per model family; the others' backward is the
# same code).
BACKWARD = ('detic-clim_r50-caffe-c4_45k_ov-coco-caption-tags.py',
            'detic-clim_centernet2_r50-fpn_45k_ov-lvis-cc3m.py',
            'toy/detic-clim_r18-fpn_toy-shapes-caption.py')
STAGE1 = ['faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py', 'centernet2_r50-fpn_90k_ov-lvis-base.py',
          'toy/faster-rcnn_r18-fpn_toy-shapes-base.py']


@pytest.fixture(autouse=True)
def mmdet_scope() -> None:
    init_default_scope('mmdet')  # MultiBranch builds its pipelines in the default scope


def _bbox_heads(model_cfg) -> List[dict]:
    heads = model_cfg.roi_head.bbox_head
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def shrink_backbone(model) -> None:
    """A detector config's backbone (and res5 head) made ResNet-18 without pretrained weights,
    the channels after it to match."""
    model.backbone.depth = 18
    model.backbone.init_cfg = None
    if model.roi_head.get('shared_head') is not None:  # R50-C4: res5 is the backbone's stage 4
        model.roi_head.shared_head.depth = 18
        model.roi_head.shared_head.init_cfg = None
        model.rpn_head.in_channels = 256
        model.roi_head.bbox_roi_extractor.out_channels = 256
        model.roi_head.bbox_head.in_channels = 512
    else:  # FPN on C3-C5 (OV-LVIS) or on C2-C5 (the toy, already narrow)
        if model.backbone.get('base_channels') is None:
            model.neck.in_channels = [64 * 2**i for i in model.backbone.out_indices]


def shrunk(name: str, tmp_path: Path) -> Config:
    """The shipped config with a ResNet-18 backbone, the tiny text tower and test vocabularies."""
    cfg = Config.fromfile(str(CONFIGS / name))
    model = cfg.model
    shrink_backbone(model)
    if model.get('text_encoder') is not None:
        model.text_encoder = dict(type='CLIPTextEncoder', model_name=TEXT_MODEL)
    heads = _bbox_heads(model)
    num_classes = heads[0].num_classes
    novel = read_split_file(heads[0].split_file).novel_mask().nonzero().flatten().tolist() \
        if Path(heads[0].split_file).is_file() else [0]
    embeddings, split_file = write_vocabulary(tmp_path, num_classes, TEXT_DIM, novel, TEXT_MODEL)
    for head in heads:
        head.class_embeddings, head.split_file = embeddings, split_file
        federated = head.loss_cls.get('federated')
        if federated is not None:
            federated.class_frequencies = [float(1 + c % 7) for c in range(num_classes)]
    return cfg


def Compose(transforms: List[dict]):
    """mmdet transforms chained (built in mmdet's registry)."""
    built = [TRANSFORMS.build(t) for t in transforms]

    def run(results: dict) -> dict:
        for transform in built:
            results = transform(results)
        return results

    return run


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def make_batch(cfg: Config, num_det: int = 1, num_caption: int = 2,
               grids: Optional[tuple] = None) -> dict:
    """A collated training batch of the config's branches, made by the real transforms; by
    default one 2x2 mosaic when the config trains a mosaic branch."""
    branches = list(cfg.branches)
    det_branch, caption_branch, mosaic_branch = branches
    if grids is None:
        grids = ((2, 2), ) if mosaic_branch in cfg.model.caption_branches else ()
    pack = dict(type='PackDetInputs', meta_keys=cfg.caption_meta_keys)
    det = Compose([dict(type='MultiBranch', branch_field=branches,
                        **{det_branch: dict(type='PackDetInputs')})])
    caption = Compose([dict(type='CaptionPseudoBox'),
                       dict(type='MultiBranch', branch_field=branches, **{caption_branch: pack})])
    num_classes = _bbox_heads(cfg.model)[0].num_classes
    samples = []
    with_mask = cfg.model.roi_head.get('mask_head') is not None
    # Small: every proposal of the R50-C4 recipes goes through res5 (about 1 GFLOP each at
    # ResNet-18 width), and a 32x32 image has 60 anchors. A backbone whose BatchNorm trains (the
    # toy's) needs more than one value per channel at C5: 64x64.
    size = 32 if cfg.model.backbone.get('norm_eval', True) else 64
    for i in range(num_det):
        masks = np.zeros((2, size, size), np.uint8)
        masks[0, 3:25, 2:20] = masks[1, 5:20, 15:30] = 1
        extra = dict(gt_masks=BitmapMasks(masks, size, size)) if with_mask else {}
        samples.append(det(dict(
            **extra,
            img=_image(size, size, i), img_shape=(size, size), ori_shape=(size, size), img_id=i,
            img_path=f'det{i}.jpg', scale_factor=(1.0, 1.0),
            gt_bboxes=HorizontalBoxes(np.array([[2, 3, 20, 25], [15, 5, 30, 20]], np.float32)),
            gt_bboxes_labels=np.array([1, 2]), gt_ignore_flags=np.zeros(2, bool))))

    def caption_source(index: int) -> dict:
        return dict(img=_image(24, 32, 100 + index), img_shape=(24, 32), ori_shape=(24, 32),
                    img_id=100 + index, img_path=f'cap{index}.jpg', scale_factor=(1.0, 1.0),
                    captions=[f'a photo number {index}', f'picture {index}'],
                    tags=[index % num_classes, (index + 3) % num_classes])

    for i in range(num_caption):
        samples.append(caption(caption_source(i)))
    index = num_caption
    for rows, cols in grids:
        mosaic = Compose([
            dict(type='MosaicPseudoRegion', grid_choices=[(rows, cols)], cell_size=32,
                 keep_ratio=True, crop_scale=(1.0, 1.0), pseudo_box='image'),
            dict(type='MultiBranch', branch_field=branches, **{mosaic_branch: pack})])
        sources = [caption_source(index + k) for k in range(rows * cols)]
        index += rows * cols
        samples.append(mosaic(dict(sources[0], mix_results=sources[1:])))
    return pseudo_collate(samples)


def build(cfg: Config) -> DeticDetector:
    """The model in training mode (``train()`` applies the backbones' ``norm_eval``)."""
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


@pytest.mark.parametrize('name', COCO_STAGE2 + LVIS_STAGE2 + TOY)
def test_shipped_caption_configs_train_and_predict(name: str, tmp_path: Path) -> None:
    cfg = shrunk(name, tmp_path)
    model = build(cfg)
    model.train()
    data = model.data_preprocessor(make_batch(cfg), True)
    losses = model(**data, mode='loss')
    # The loss keys the config's branches promise, each finite.
    expected = set()
    for branch, spec in cfg.model.caption_branches.items():
        if spec.get('caption', True):
            expected.add(f'loss_caption_{branch}')
        if spec.get('tags', False):
            expected.add(f'loss_tag_{branch}')
    assert expected <= set(losses), f'{name}: {sorted(losses)}'
    assert {k for k in losses if 'caption' in k or 'tag_' in k} == expected
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    if name in BACKWARD:
        total.backward()
        # The frozen text tower gets no gradient; the box head's projection does.
        assert all(p.grad is None for p in model.text_encoder.parameters())
        projection = model.bbox_heads[-1].classifier.projection.weight
        assert projection.grad is not None and projection.grad.abs().sum() > 0
    # Predict on the detection images. At most 10 detections: with random weights most of the
    # 1203 LVIS classes pass the score threshold, and each detection costs the mask head about
    # 1 GFLOP on CPU.
    model.test_cfg.rcnn.max_per_img = 10
    model.eval()
    det = make_batch(cfg, num_caption=0, grids=())
    det_branch = cfg.branches[0]
    inputs = dict(inputs=det['inputs'][det_branch], data_samples=det['data_samples'][det_branch])
    with torch.no_grad():
        results = model(**model.data_preprocessor(inputs, False), mode='predict')
    instances = results[0].pred_instances
    assert instances.bboxes.shape[1] == 4 and len(instances.scores) == len(instances.labels)
    assert (instances.labels < _bbox_heads(cfg.model)[0].num_classes).all()


@pytest.mark.parametrize('name', STAGE1)
def test_shipped_stage1_configs_train_and_predict(name: str, tmp_path: Path) -> None:
    cfg = shrunk(name, tmp_path)
    model = build(cfg)
    model.train()
    # The stage-1 configs take plain (not multi-branch) batches: the detection samples alone.
    cfg.branches = ['det_batch', 'caption_batch', 'mosaic_batch']
    cfg.caption_meta_keys = ()
    cfg.model.caption_branches = {}
    batch = make_batch(cfg, num_caption=0)
    data = dict(inputs=batch['inputs']['det_batch'],
                data_samples=batch['data_samples']['det_batch'])
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert not any('caption' in key or 'tag' in key for key in losses)
    assert torch.isfinite(model.parse_losses(losses)[0])
    model.test_cfg.rcnn.max_per_img = 10  # see test_shipped_caption_configs_train_and_predict
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(data, False), mode='predict')
    assert results[0].pred_instances.bboxes.shape[1] == 4


def test_empty_branch_gives_zero_losses_with_gradient(tmp_path: Path) -> None:
    cfg = shrunk('toy/detic-clim_r18-fpn_toy-shapes-caption.py', tmp_path)
    model = build(cfg)
    model.train()
    # No mosaic in this batch: its branch is left out by the preprocessor.
    data = model.data_preprocessor(make_batch(cfg, grids=()), True)
    assert 'mosaic_batch' not in data['inputs']
    losses = model(**data, mode='loss')
    assert float(losses['loss_caption_mosaic_batch']) == 0.0
    assert losses['loss_caption_mosaic_batch'].requires_grad
    assert float(losses['loss_caption_caption_batch']) > 0
    losses['loss_caption_mosaic_batch'].backward()
    assert model.bbox_heads[0].classifier.projection.weight.grad is not None


def test_composed_regions_and_their_image_ids(tmp_path: Path) -> None:
    cfg = shrunk('toy/detic-clim_r18-fpn_toy-shapes-caption.py', tmp_path)
    model = build(cfg)
    data = model.data_preprocessor(make_batch(cfg, num_caption=0, grids=((3, 3), )), True)
    sample = data['data_samples']['mosaic_batch'][0]
    regions = model._pseudo_regions(sample, num_groups=4, branch_tags=False)
    cells = sample.gt_instances.bboxes
    assert len(regions.members) == 9 + 4 and len(regions.boxes) == 13
    ids = model._region_id_rows([regions], torch.device('cpu'))
    for row, members in enumerate(regions.members[9:], start=9):
        assert len(members) >= 2
        # The composed box is the union of its cells' boxes, and its positives their images.
        expected = torch.cat([cells[members, :2].min(0).values, cells[members, 2:].max(0).values])
        assert torch.equal(regions.boxes[row], expected)
        expected_ids = model._region_id_rows(
            [regions._replace(members=[members])], torch.device('cpu'))[0]
        assert torch.equal(ids[row, :len(members)], expected_ids[:len(members)])
        assert (ids[row, len(members):] == -1).all()


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = shrunk('toy/detic_r18-fpn_toy-shapes-caption.py', tmp_path)
    bad: Dict[str, dict] = {
        r'caption_branches.caption_batch: unknown keys \[\'tag\'\]':
            dict(caption_branches=dict(caption_batch=dict(tag=True))),
        r'text_encoder: caption branches':
            dict(text_encoder=None),
        r'tag_loss: a caption branch uses it':
            dict(caption_branches=dict(caption_batch=dict(tags=True))),
        r'num_groups must be 0 with CLIMCaptionLoss':
            dict(caption_loss=dict(type='CLIMCaptionLoss', logit_scale=25.0),
                 caption_branches=dict(caption_batch=dict(num_groups=2))),
    }
    for message, change in bad.items():
        model_cfg = copy.deepcopy(cfg.model)
        for key, value in change.items():  # replaced, not merged
            model_cfg[key] = value
        with pytest.raises(ValueError, match=message):
            MODELS.build(model_cfg)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.roi_head.bbox_head.embed_dim = TEXT_DIM
    with pytest.raises(ValueError, match=r'roi_head.bbox_head: \[\'embed_dim\'\] follow from'):
        MODELS.build(model_cfg)


def test_clim_caption_loss_is_selectable(tmp_path: Path) -> None:
    cfg = shrunk('toy/detic_r18-fpn_toy-shapes-caption.py', tmp_path)
    cfg.model.caption_loss = dict(type='CLIMCaptionLoss', logit_scale=25.0, loss_weight=0.1)
    model = build(cfg)
    data = model.data_preprocessor(make_batch(cfg, num_caption=3, grids=()), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss_caption_caption_batch'])
    assert float(losses['loss_caption_caption_batch']) > 0


def test_branch_whose_pseudo_boxes_were_all_filtered_gives_zero_losses(tmp_path: Path) -> None:
    cfg = shrunk('detic-clim_r50-caffe-c4_45k_ov-coco-caption-tags.py', tmp_path)
    model = build(cfg)
    data = model.data_preprocessor(make_batch(cfg), True)
    for sample in data['data_samples']['caption_batch']:  # e.g. cropped away by a pipeline
        sample.gt_instances = sample.gt_instances[:0]
    losses = model(**data, mode='loss')
    assert float(losses['loss_caption_caption_batch']) == 0.0
    assert float(losses['loss_tag_caption_batch']) == 0.0
    assert losses['loss_caption_caption_batch'].requires_grad
    assert float(losses['loss_caption_mosaic_batch']) > 0
