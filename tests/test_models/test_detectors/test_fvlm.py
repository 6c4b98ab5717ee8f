# Copyright (c) mmclim contributors. All rights reserved.
"""The shipped F-VLM configs, built as shipped with only the CLIP tower shrunk, train and predict
on CPU; their values are the official ones; what the tower determines is derived from it."""
import json
from pathlib import Path
from typing import Dict, List, Tuple

import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

from mmclim.models.backbones import save_clip_checkpoint
from mmclim.models.detectors import FVLM
from mmclim.structures import save_class_embeddings, split_record, write_split_file

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIGS = REPO_ROOT / 'configs'
COCO_RECIPE = CONFIGS / 'fvlm' / 'fvlm_vitb16_fpn_lsj640-3e_ov-coco.py'
LVIS_RECIPE = CONFIGS / 'fvlm' / 'fvlm_vitb16_nasfpn_lsj640-48e_ov-lvis.py'
RN_RECIPE = CONFIGS / 'fvlm' / 'fvlm_rn50x64_fpn_lsj1024-2.88k_ov-lvis.py'
TOY_CONFIG = CONFIGS / 'fvlm' / 'fvlm_toy-vit_toy-shapes.py'
# The entry points of the paper's numbers: their recipe and CLIP weights.
ENTRY_POINTS = {
    'fvlm_clip_vitb16_ov-coco.py': (COCO_RECIPE, 'checkpoints/clip/ViT-B-16.pt'),
    'fvlm_clim_vitb16_ov-coco.py': (COCO_RECIPE, 'checkpoints/clip/ViT-B-16_clim_coco.pt'),
    'fvlm_clip_vitb16_lvis.py': (LVIS_RECIPE, 'checkpoints/clip/ViT-B-16.pt'),
    'fvlm_clim_vitb16_lvis.py': (LVIS_RECIPE, 'checkpoints/clip/ViT-B-16_clim_cc3m.pt'),
    'fvlm_clip_rn50x64_lvis.py': (RN_RECIPE, 'checkpoints/clip/RN50x64.pt'),
    'fvlm_clim_rn50x64_lvis.py': (RN_RECIPE, 'checkpoints/clip/RN50x64_clim_cc3m.pt'),
}
# The shipped towers and the tiny ones standing in for them (same block indices, same kind).
TINY_TOWERS = {
    'ViT-B-16-quickgelu': 'mmclim-tiny-vit12',  # 12 blocks, width 32, patch 16, embed 32
    'RN50x64-quickgelu': 'mmclim-tiny-rn448',  # ModifiedResNet at 448, width 8, embed 32
}
IMAGE = 64
NOVEL_EVERY = 4  # every 4th class of the test vocabularies is novel


def _vocabulary(folder: Path, model_name: str, embed_dim: int,
                num_classes: int) -> Tuple[str, str]:
    """Random unit class embeddings made "with" ``model_name`` and a split file with every
    4th class novel (category ids 1..C)."""
    generator = torch.Generator().manual_seed(num_classes)
    embeddings = F.normalize(torch.randn(num_classes, embed_dim, generator=generator), dim=-1)
    path = str(folder / f'{model_name}_{num_classes}.npy')
    save_class_embeddings(path, embeddings, model_name)
    names = {cat_id: f'class_{cat_id}' for cat_id in range(1, num_classes + 1)}
    split = str(folder / f'split_{num_classes}.json')
    write_split_file(split, split_record(names, [i for i in names if i % NOVEL_EVERY],
                                         [i for i in names if i % NOVEL_EVERY == 0], 'test'))
    return path, split


@pytest.fixture(scope='module')
def tiny_clips(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Random tiny CLIP checkpoints, as ``pretrained`` files."""
    folder = tmp_path_factory.mktemp('clip')
    paths = {}
    for tiny in TINY_TOWERS.values():
        torch.manual_seed(0)
        paths[tiny] = str(folder / f'{tiny}.pt')
        save_clip_checkpoint(open_clip.create_model(tiny, pretrained=None), paths[tiny])
    return paths


def _shrunk_cfg(config: Path, folder: Path, tiny_clips: Dict[str, str],
                model_name: str = None) -> Config:
    """The config as shipped, but the tiny tower (random weights from a file) and vocabulary
    files of its size."""
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.default_scope)
    backbone = cfg.model.backbone
    model_name = model_name or TINY_TOWERS[backbone.model_name]
    backbone.update(model_name=model_name, pretrained=tiny_clips.get(model_name))
    embed_dim = open_clip.get_model_config(model_name)['embed_dim']
    bbox_head = cfg.model.roi_head.bbox_head
    bbox_head.class_embeddings, bbox_head.split_file = _vocabulary(
        folder, model_name, embed_dim, bbox_head.num_classes)
    return cfg


def _build(cfg: Config) -> FVLM:
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def _inputs(model: FVLM, num_items: List[int], training: bool) -> dict:
    """Two demo images of 64 pixels (the second may be empty), ground truth of base classes."""
    num_classes = model.roi_head.classifier.num_classes
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, IMAGE, IMAGE)] * 2,
                            num_items=num_items, num_classes=num_classes,
                            with_mask=model.with_mask)
    base = (~model.roi_head.classifier.novel_mask).nonzero().flatten()
    for sample in packed['data_samples']:
        sample.gt_instances.labels = base[sample.gt_instances.labels % len(base)]
    return model.data_preprocessor(packed, training)


@pytest.mark.parametrize('config', [COCO_RECIPE, LVIS_RECIPE, RN_RECIPE],
                         ids=lambda path: path.stem)
def test_shipped_recipe_trains_and_predicts(config: Path, tiny_clips: Dict[str, str],
                                            tmp_path: Path) -> None:
    model = _build(_shrunk_cfg(config, tmp_path, tiny_clips))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    clip_weights = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.init_weights()  # as the runner does: must leave the CLIP weights alone
    assert all(torch.equal(v, clip_weights[k]) for k, v in model.backbone.state_dict().items())
    assert model.roi_head.classifier.logit_scale.item() == 50.0

    model.train()
    assert not model.backbone.training
    vlm_calls = []  # the VLM map (ln_post, proj) is not computed in training
    hook = model.backbone.region.clip.visual.attnpool.register_forward_hook(
        lambda *args: vlm_calls.append(1)) if not model.backbone.region.is_vit else \
        model.backbone.visual.ln_post.register_forward_hook(lambda *args: vlm_calls.append(1))
    losses = model.forward(**_inputs(model, [3, 0], True), mode='loss')  # 2nd image empty
    hook.remove()
    assert not vlm_calls
    expected = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'}
    assert expected | ({'loss_mask'} if model.with_mask else set()) <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    trained = {name.split('.')[0] for name, p in model.named_parameters()
               if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == {'neck', 'rpn_head', 'roi_head'}
    assert model.roi_head.classifier.logit_scale.grad != 0
    assert model.roi_head.classifier.background.weight.grad.abs().sum() > 0

    losses = model.forward(**_inputs(model, [0, 0], True), mode='loss')
    assert torch.isfinite(model.parse_losses(losses)[0])

    model.eval()
    with torch.no_grad():
        results = model.forward(**_inputs(model, [3, 0], False), mode='predict')
    test_cfg = model.roi_head.test_cfg
    for result in results:
        pred = result.pred_instances
        assert 0 < len(pred) <= test_cfg.max_per_img
        assert pred.bboxes.shape == (len(pred), 4)
        assert (pred.bboxes >= 0).all() and (pred.bboxes <= IMAGE).all()
        assert pred.labels.max() < model.roi_head.classifier.num_classes
        assert (pred.scores >= test_cfg.score_thr).all() and (pred.scores <= 1).all()
        if model.with_mask:
            assert pred.masks.shape == (len(pred), IMAGE, IMAGE)


@pytest.mark.gpu
def test_shipped_lvis_recipe_trains_and_predicts_on_cuda_in_bfloat16(
        tiny_clips: Dict[str, str], tmp_path: Path) -> None:
    """The LVIS recipe (masks: RoIAlign of maps and of mask targets, NMS) on CUDA under the
    bfloat16 autocast of ``--amp``: finite losses and gradients, boxes inside the image."""
    model = _build(_shrunk_cfg(LVIS_RECIPE, tmp_path, tiny_clips)).cuda()
    model.train()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        losses = model.forward(**_inputs(model, [3, 2], True), mode='loss')
        loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss) and 'loss_mask' in losses
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        results = model.forward(**_inputs(model, [3, 0], False), mode='predict')
    for result in results:
        bboxes = result.pred_instances.bboxes
        assert (bboxes >= 0).all() and (bboxes <= IMAGE).all()


def test_vlm_scores_the_proposals_before_regression(tiny_clips: Dict[str, str],
                                                    tmp_path: Path) -> None:
    """With the VLM weights at 1, each detection's score is the VLM's probability, for its
    label, of the proposal it was regressed from: softmax(75 cos(region embedding, [classes;
    background])), the region embedding computed independently by OpenCLIPRegion from the
    images. The regressed box, which the head moved, scores otherwise."""
    cfg = _shrunk_cfg(COCO_RECIPE, tmp_path, tiny_clips)
    cfg.model.roi_head.update(base_alpha=1.0, novel_beta=1.0)
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    model = _build(cfg).eval()
    with torch.no_grad():  # move every box by 0.5 of its width (dx = 5 x std 0.1)
        model.roi_head.bbox_head.fc_reg.bias.copy_(torch.tensor([5., 0., 0., 0.]))
    proposals = [torch.tensor([[8., 8., 24., 40.]]), torch.tensor([[16., 0., 48., 32.]])]
    model.rpn_head.predict = lambda *args, **kwargs: [
        InstanceData(bboxes=boxes, scores=torch.ones(1), labels=torch.zeros(1).long())
        for boxes in proposals]
    data = _inputs(model, [1, 1], False)
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'], rescale=False)
        classes = model.roi_head.classifier.class_and_background_embeddings()
        region = model.backbone.region

        def vlm_probabilities(boxes: List[torch.Tensor]) -> torch.Tensor:
            embeddings = region.region_features(data['inputs'], boxes, normalize=True)
            return (75.0 * embeddings @ classes.T).softmax(dim=-1)

        expected = vlm_probabilities(proposals)
        moved = vlm_probabilities([r.pred_instances.bboxes[:1] for r in results])
    for index, result in enumerate(results):
        pred = result.pred_instances
        assert len(pred) > 1 and not torch.allclose(pred.bboxes[0], proposals[index][0])
        torch.testing.assert_close(pred.scores, expected[index, pred.labels])
        assert not torch.allclose(pred.scores, moved[index, pred.labels])


def test_the_neck_and_vocabulary_follow_the_tower(tiny_clips: Dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The OV-COCO recipe with another ViT (12 blocks of width 48, patch 8) builds unedited:
    the neck takes 48 channels at stride 8 (one deconvolution to stride 4, identity, max-pools
    to 16 and 32) and the classifier projects to its 24-d embedding space."""
    model_configs = tmp_path / 'model_configs'
    model_configs.mkdir()
    (model_configs / 'test-vit12-w48-p8.json').write_text(json.dumps(dict(
        embed_dim=24, quick_gelu=True,
        vision_cfg=dict(image_size=64, layers=12, width=48, head_width=16, patch_size=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))))
    open_clip.add_model_config(model_configs)
    model = _build(_shrunk_cfg(COCO_RECIPE, tmp_path, tiny_clips, 'test-vit12-w48-p8'))
    up, same, down2, down4 = model.neck.rescales
    assert [type(layer) for layer in up] == [nn.ConvTranspose2d] and up[0].in_channels == 48
    assert isinstance(same, nn.Identity)
    assert (down2.kernel_size, down4.kernel_size) == (2, 4)
    assert [conv.conv.in_channels for conv in model.neck.fpn.lateral_convs] == [48] * 4
    assert model.roi_head.classifier.projection.out_features == 24
    data = _inputs(model, [2, 1], True)
    model.train()
    assert torch.isfinite(model.parse_losses(model.forward(**data, mode='loss'))[0])

    rn = _build(_shrunk_cfg(RN_RECIPE, tmp_path, tiny_clips))  # width 8: C2-C5 of 32-256
    assert [conv.conv.in_channels for conv in rn.neck.fpn.lateral_convs] == [32, 64, 128, 256]
    cfg = _shrunk_cfg(LVIS_RECIPE, tmp_path, tiny_clips)
    cfg.model.neck.in_channels = [768] * 4
    with pytest.raises(ValueError, match=r"FVLM.neck: \['in_channels'\] follow from the "
                                         r'backbone \(in_channels=\[32, 32, 32, 32\]\)'):
        _build(cfg)


def test_class_embeddings_of_another_tower_are_an_error(tiny_clips: Dict[str, str],
                                                        tmp_path: Path) -> None:
    cfg = _shrunk_cfg(LVIS_RECIPE, tmp_path, tiny_clips)
    bbox_head = cfg.model.roi_head.bbox_head
    bbox_head.class_embeddings, _ = _vocabulary(tmp_path, 'ViT-B-16-quickgelu', 32, 1203)
    with pytest.raises(ValueError, match=f"{bbox_head.class_embeddings} was made with the text "
                                         "tower of 'ViT-B-16-quickgelu'"):
        _build(cfg)


def test_rejects_a_backbone_without_clip_features(tiny_clips: Dict[str, str],
                                                  tmp_path: Path) -> None:
    cfg = _shrunk_cfg(COCO_RECIPE, tmp_path, tiny_clips)
    cfg.model.backbone = dict(type='ResNet', depth=18, init_cfg=None)
    with pytest.raises(ValueError, match="FVLM.backbone: expected type='CLIPViTPyramidBackbone'"
                                         ', got ResNet'):
        _build(cfg)


@pytest.mark.parametrize('entry_point', sorted(ENTRY_POINTS))
def test_entry_points_are_their_recipe_with_the_clip_weights(entry_point: str) -> None:
    recipe, weights = ENTRY_POINTS[entry_point]
    cfg = Config.fromfile(str(CONFIGS / entry_point)).to_dict()
    base = Config.fromfile(str(recipe)).to_dict()
    assert cfg['model']['backbone'].pop('pretrained') == weights
    assert base['model']['backbone'].pop('pretrained') is None
    assert cfg == base


def test_toy_config_trains_and_predicts_boxes(tmp_path: Path) -> None:
    """The CPU toy config as shipped (toy CLIP, 16 classes, boxes only), random CLIP weights."""
    from mmclim.datasets import TOY_NOVEL_CLASSES, class_names
    names = class_names()
    cfg = Config.fromfile(str(TOY_CONFIG))
    init_default_scope(cfg.default_scope)
    assert cfg.model.backbone.model_name == 'mmclim-toy-vit'
    cfg.model.backbone.pretrained = None
    bbox_head = cfg.model.roi_head.bbox_head
    bbox_head.class_embeddings, bbox_head.split_file = _vocabulary(tmp_path, 'mmclim-toy-vit', 64,
                                                                   len(names))
    ids = {name: index + 1 for index, name in enumerate(names)}
    write_split_file(bbox_head.split_file, split_record(
        {i: n for n, i in ids.items()}, [ids[n] for n in names if n not in TOY_NOVEL_CLASSES],
        [ids[n] for n in TOY_NOVEL_CLASSES], 'toy'))
    model = _build(cfg)
    assert not model.with_mask
    novel = model.roi_head.classifier.novel_mask.nonzero().flatten().tolist()
    assert [names[i] for i in novel] == sorted(TOY_NOVEL_CLASSES, key=names.index)
    model.train()
    data = _inputs(model, [2, 0], True)
    assert torch.isfinite(model.parse_losses(model.forward(**data, mode='loss'))[0])
    model.eval()
    with torch.no_grad():
        results = model.forward(**_inputs(model, [2, 0], False), mode='predict')
    assert all('masks' not in r.pred_instances for r in results)
