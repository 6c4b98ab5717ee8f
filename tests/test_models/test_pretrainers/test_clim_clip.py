# Copyright (c) mmclim contributors. All rights reserved.
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmclim.models.backbones import OpenCLIPRegion

REPO_ROOT = Path(__file__).resolve().parents[3]
CLIM_CONFIGS = sorted((REPO_ROOT / 'configs' / 'clim').glob('*.py'))
TOY = 'mmclim-toy-vit'  # 4 blocks, 64x64 input, patch 8, embed_dim 64


def _samples(num: int, captions_per_image: int = 1) -> list:
    return [
        DetDataSample(metainfo=dict(captions=[f'caption {i} v{k}' for k in range(
            captions_per_image)], img_path=f'{i}.png')) for i in range(num)
    ]


def _model(mode: str = 'clim', **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.build(dict(type='CLIMCLIP', mode=mode, grid_choices=[2],
                             clip=dict(type='OpenCLIPRegion', model_name=TOY,
                                       unlocked_vision_blocks=1), **kwargs))


def test_clim_loss_backward_reaches_only_unlocked_blocks() -> None:
    model = _model()
    losses = model.loss(torch.randn(8, 3, 64, 64), _samples(8, captions_per_image=3))
    assert losses['num_regions'].item() == 4  # half of 8 images into one 2x2 mosaic
    assert torch.isfinite(losses['loss_caption']) and losses['loss_caption'] > 0
    losses['loss_caption'].backward()
    blocks = model.clip.clip.visual.transformer.resblocks
    for index, block in enumerate(blocks):
        grads = [p.grad for p in block.parameters()]
        if index < len(blocks) - 1:
            assert all(g is None for g in grads), f'locked block {index} got gradients'
        else:
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.clip.clip.visual.proj.grad is not None
    assert all(p.grad is None for p in model.clip.clip.transformer.parameters())  # text frozen
    assert model.clip.clip.logit_scale.grad is not None  # the temperature learns


def test_image_mode_uses_no_mosaic() -> None:
    model = _model(mode='image')
    losses = model.loss(torch.randn(6, 3, 64, 64), _samples(6))
    assert losses['num_regions'].item() == 0 and torch.isfinite(losses['loss_caption'])


def test_mosaic_regions_match_single_region_features() -> None:
    """The loss's region path is RoIAlign of batch_mosaic cells on the dense map."""
    model = _model()
    images = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    feats, sources = model._mosaic_region_features(images, [(2, 2)], torch.tensor([2, 0, 3, 1]))
    assert sources.tolist() == [2, 0, 3, 1] and feats.shape == (4, 64)
    canvas = torch.zeros(1, 3, 128, 128)
    for cell, source in enumerate(sources):
        r, c = divmod(cell, 2)
        canvas[0, :, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = images[source]
    boxes = torch.tensor([[0., 0, 64, 64], [64, 0, 128, 64], [0, 64, 64, 128], [64, 64, 128, 128]])
    torch.testing.assert_close(feats, model.clip.region_features(canvas, [boxes]))


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    model = _model(mosaic_fraction=0.25)
    with pytest.raises(ValueError, match='batch of 8 images .* smaller than the smallest grid'):
        model.loss(torch.randn(8, 3, 64, 64), _samples(8))
    no_captions = _samples(2)
    no_captions[1].set_metainfo(dict(captions=[]))
    with pytest.raises(ValueError, match=r"data sample 1 \(1.png\) has no captions"):
        _model(mode='image').loss(torch.randn(2, 3, 64, 64), no_captions)
    with pytest.raises(ValueError, match='mode'):
        _model(mode='regions')
    with pytest.raises(FileNotFoundError, match='missing.npy does not exist'):
        _model(class_embeddings=str(tmp_path / 'missing.npy'))
    wrong = tmp_path / 'wrong.npy'
    np.save(wrong, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r'has shape \(3, 5\), expected \(num_classes, 64\)'):
        _model(class_embeddings=str(wrong))


def test_predict_scores_every_ground_truth_region(tmp_path: Path) -> None:
    embeddings = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    np.save(tmp_path / 'classes.npy', embeddings)
    model = _model(class_embeddings=str(tmp_path / 'classes.npy')).eval()
    samples = _samples(2)
    samples[0].gt_instances = InstanceData(bboxes=torch.tensor([[0., 0, 32, 32], [8, 8, 64, 40]]),
                                           labels=torch.tensor([1, 3]))
    samples[1].gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.predict(images, samples)
        expected = model.clip.region_features(images[:1], [samples[0].gt_instances.bboxes],
                                              normalize=True) @ model.class_embeddings.t()
    assert out[0].pred_region_scores.shape == (2, 5) and out[1].pred_region_scores.shape == (0, 5)
    torch.testing.assert_close(out[0].pred_region_scores, expected)
    assert out[0].pred_region_scores.abs().max() <= 1 + 1e-5  # cosine similarities


@pytest.mark.parametrize('config', CLIM_CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_build_shrunk(config: Path) -> None:
    cfg = Config.fromfile(str(config))
    assert cfg.model.type == 'CLIMCLIP' and cfg.custom_imports.imports == ['mmclim']
    init_default_scope(cfg.default_scope)  # as the Runner does: mmdet's registries
    is_resnet = cfg.model.clip.model_name.startswith('RN')
    cfg.model.clip.model_name = 'mmclim-tiny-rn' if is_resnet else 'mmclim-tiny-vit'
    cfg.model.clip.pretrained = None
    cfg.model.class_embeddings = None
    if cfg.model.clip.unlocked_vision_blocks:
        cfg.model.clip.unlocked_vision_blocks = 1
    if cfg.model.canvas_size:
        cfg.model.canvas_size = 448  # shrunk from 1024
    model = MODELS.build(cfg.model)
    images = torch.randn(8, 3, 224, 224)
    model.mosaic_fraction = 0.5
    model.grid_choices = ((2, 2), )
    losses = model.loss(images, _samples(8))
    assert torch.isfinite(losses['loss_caption'])


def test_converter_round_trip_and_ensembling(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        for p in model.clip.clip.visual.parameters():
            p.add_(0.01)  # differ from any fresh initialisation
    ckpt = tmp_path / 'iter_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=1)), ckpt)
    tool = str(REPO_ROOT / 'tools' / 'model_converters' / 'clim_to_openclip.py')
    out = tmp_path / 'clip.pt'
    subprocess.run([sys.executable, tool, str(ckpt), str(out)], check=True, capture_output=True)
    loaded = OpenCLIPRegion(model_name=TOY, pretrained=str(out))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.dense_features(images),
                                   model.clip.dense_features(images))

    original = OpenCLIPRegion(model_name=TOY)
    original_file = tmp_path / 'original.pt'
    torch.save(original.clip.state_dict(), original_file)
    half = tmp_path / 'half.pt'
    subprocess.run([sys.executable, tool, str(ckpt), str(half), '--alpha', '0.5', '--original',
                    str(original_file)], check=True, capture_output=True)
    mixed = torch.load(half, weights_only=True)
    key = 'visual.proj'
    torch.testing.assert_close(mixed[key], (model.clip.clip.visual.proj +
                                            original.clip.visual.proj).detach() / 2)
    proc = subprocess.run([sys.executable, tool, str(ckpt), str(half), '--alpha', '0.5'],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and '--alpha < 1 needs --original' in proc.stderr


def test_predict_pools_masks_when_present(tmp_path: Path) -> None:
    from mmdet.structures.mask import BitmapMasks
    np.save(tmp_path / 'classes.npy', np.eye(3, 64, dtype=np.float32))
    model = _model(class_embeddings=str(tmp_path / 'classes.npy')).eval()
    masks = np.zeros((1, 48, 64), np.uint8)  # smaller than the padded batch: padded inside
    masks[0, :32, :32] = 1  # the same region as the box below, on 8-pixel patch borders
    sample = _samples(1)[0]
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[0., 0, 32, 32]]),
                                       labels=torch.tensor([0]),
                                       masks=BitmapMasks(masks, 48, 64))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        by_mask = model.predict(images, [sample])[0].pred_region_scores
        model.use_masks = False
        by_box = model.predict(images, [sample])[0].pred_region_scores
    torch.testing.assert_close(by_mask, by_box, atol=1e-5, rtol=1e-4)
