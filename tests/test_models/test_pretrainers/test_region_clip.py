# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP pre-training: the teacher's pseudo labels, its frozen parts, the shipped configs."""
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmclim.models.pretrainers.region_clip as region_clip_module
from mmclim.models.backbones import OpenCLIPRegion
from mmclim.structures import save_class_embeddings

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO_ROOT / 'configs' / 'regionclip'
TOY_RPN = CONFIG_DIR / 'toy' / 'rpn_r18-fpn_toy-shapes-base.py'
TOY = 'mmclim-toy-vit'  # 4 blocks, 64x64 input, patch 8, embed_dim 64
CLIP_MEAN = [122.771, 116.746, 104.094]
CLIP_STD = [68.501, 66.632, 70.323]
# The shipped configs, the smallest tower of the same kind and a batch size for the test: the
# toy's own, half the ViT config's 1024 and a third of the ResNet config's 800 x 1333 (CPU time;
# the ViT's global feature still needs its resize to 224).
PAPER_CONFIGS = {
    'regionclip_vitb16_coco-caption.py': ('mmclim-tiny-vit12', (512, 512)),
    'regionclip_rn50_cc3m.py': ('mmclim-tiny-rn', (288, 448)),
    'toy/regionclip_toy-vit_toy-shapes.py': (TOY, (64, 64)),
}


def _samples(num: int) -> list:
    return [DetDataSample(metainfo=dict(captions=[f'caption {i}'], img_path=f'{i}.png'))
            for i in range(num)]


def _pool(path: Path, model_name: str, num: int = 5) -> str:
    dim = OpenCLIPRegion(model_name).embed_dim
    save_class_embeddings(str(path), torch.randn(num, dim), model_name)
    return str(path)


def _toy_model(tmp_path: Path, **kwargs) -> torch.nn.Module:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    cfg = dict(
        type='RegionCLIP',
        clip=dict(type='OpenCLIPRegion', model_name=TOY, unlocked_vision_blocks=2),
        concept_pool=_pool(tmp_path / 'pool.npy', TOY),
        rpn=dict(config=str(TOY_RPN)),
        num_proposals=4,
        teacher_regions='crop',
        image_feature='global',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=CLIP_MEAN, std=CLIP_STD,
                               bgr_to_rgb=True))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_pseudo_labels_are_the_teachers_top_concepts(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-image proposals, cropped at the teacher's native size, are the images themselves:
    with the teacher's own embeddings of image 1 and image 0 as concepts 0 and 1 of the pool,
    image 0's region is labelled 1 and image 1's is labelled 0, with the probability of a
    softmax of cosines 1 and c (their cosine) at temperature 0.01."""
    model = _toy_model(tmp_path)
    inputs = torch.randn(2, 3, 64, 64)
    whole = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    monkeypatch.setattr(model.rpn, 'forward', lambda pixels, shapes: [whole, whole])
    with torch.no_grad():
        images = F.normalize(model.teacher.clip.encode_image(inputs), dim=1)
    unrelated = F.normalize(torch.randn(1, images.shape[1]), dim=1)
    model.concept_pool = torch.cat([images[1:], images[:1], unrelated])
    seen: Dict[str, object] = {}
    real = region_clip_module.pseudo_concept_labels

    def spy(*args, **kwargs):
        seen['result'] = real(*args, **kwargs)
        return seen['result']

    monkeypatch.setattr(region_clip_module, 'pseudo_concept_labels', spy)
    losses = model.loss(inputs, _samples(2))
    result = seen['result']
    assert result.labels.tolist() == [1, 0] and result.keep.tolist() == [True, True]
    cosine = float(images[0] @ images[1])
    scores = torch.tensor([cosine, 1.0, float(images[0] @ unrelated[0])]) / 0.01
    assert torch.allclose(result.probs[0], scores.softmax(0), atol=1e-4)
    assert losses['num_proposals'].item() == 2 and losses['num_regions'].item() == 2


def test_teacher_and_rpn_get_no_gradient_and_stay_in_eval(tmp_path: Path) -> None:
    model = _toy_model(tmp_path)
    model.train()
    assert not model.teacher.training and not model.rpn.training
    assert model.clip.training
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()
              if name.startswith(('teacher.', 'rpn.'))}
    assert frozen and not any(p.requires_grad for name, p in model.named_parameters()
                              if name in frozen)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    losses = model.loss(torch.randn(4, 3, 64, 64), _samples(4))
    assert set(losses) >= {'loss_concept', 'loss_distill', 'loss_caption'}
    assert all(torch.isfinite(value) for value in losses.values())
    sum(value for key, value in losses.items() if key.startswith('loss')).backward()
    params = dict(model.named_parameters())
    assert all(params[name].grad is None for name in frozen)
    trained = [p for p in model.clip.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)
    assert not model.clip.clip.logit_scale.requires_grad  # RegionCLIP's temperature is fixed
    optimizer.step()
    assert all(torch.equal(params[name], value) for name, value in frozen.items())


def test_bad_fields_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='teacher_regions'):
        _toy_model(tmp_path, teacher_regions='box')
    with pytest.raises(FileNotFoundError, match='model.rpn.config'):
        _toy_model(tmp_path, rpn=dict(config=str(tmp_path / 'missing.py')))
    other = _pool(tmp_path / 'other.npy', 'mmclim-tiny-vit')
    with pytest.raises(ValueError, match='model.concept_pool'):
        _toy_model(tmp_path, concept_pool=other)


def _shrunk_rpn(config: str, tmp_path: Path) -> str:
    """The shipped RPN config with a ResNet-18 of 8 base channels and narrow FPN and head."""
    path = tmp_path / 'rpn_shrunk.py'
    path.write_text(
        f'_base_ = {str(REPO_ROOT / config)!r}\n'
        'model = dict(backbone=dict(depth=18, base_channels=8, init_cfg=None),\n'
        '             neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),\n'
        '             rpn_head=dict(in_channels=16, feat_channels=16))\n')
    return str(path)


@pytest.mark.parametrize('config', sorted(PAPER_CONFIGS))
def test_shipped_configs_train_a_step_with_shrunk_towers(config: str, tmp_path: Path) -> None:
    """Each shipped config as shipped (batch, proposals drawn, teacher mode, losses), its CLIP
    and RPN shrunk: a step on a batch of its size proposes num_proposals per image and trains
    only the student."""
    cfg = Config.fromfile(str(CONFIG_DIR / config))
    init_default_scope(cfg.default_scope)
    tiny, size = PAPER_CONFIGS[config]
    torch.manual_seed(0)
    weights = tmp_path / f'{tiny}.pt'
    torch.save(OpenCLIPRegion(tiny).clip.state_dict(), weights)
    cfg.model.clip.update(model_name=tiny, pretrained=str(weights))
    cfg.model.concept_pool = _pool(tmp_path / 'pool.npy', tiny, num=20)
    cfg.model.class_embeddings = None
    cfg.model.rpn.update(config=_shrunk_rpn(cfg.model.rpn.config, tmp_path), checkpoint=None)
    model = MODELS.build(cfg.model)
    batch = cfg.train_dataloader.batch_size
    losses = model.loss(torch.randn(batch, 3, *size), _samples(batch))
    assert losses['num_proposals'].item() == batch * cfg.model.num_proposals
    assert all(torch.isfinite(value) for value in losses.values())
    sum(value for key, value in losses.items() if key.startswith('loss')).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None for p in model.clip.parameters())
