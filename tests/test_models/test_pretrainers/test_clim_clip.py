# Copyright (c) mmclim contributors. All rights reserved.
import importlib.util
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmclim.models.pretrainers.clim_clip as clim_clip_module
from mmclim.models.backbones import OpenCLIPRegion
from mmclim.structures import save_class_embeddings

REPO_ROOT = Path(__file__).resolve().parents[3]
CLIM_DIR = REPO_ROOT / 'configs' / 'clim'
# The paper configs (OpenAI weights, real data) and the smallest tower of the same shape: 12
# ViT blocks (6 of them trained) or a ModifiedResNet at RN50x64's 448-pixel input.
PAPER_CONFIGS = {
    'clim_vitb16_coco-caption.py': 'mmclim-tiny-vit12',
    'clim_vitb16_cc3m.py': 'mmclim-tiny-vit12',
    'clim_rn50x64_cc3m.py': 'mmclim-tiny-rn448',
}
TOY = 'mmclim-toy-vit'  # 4 blocks, 64x64 input, patch 8, embed_dim 64


def _samples(num: int, captions_per_image: int = 1) -> list:
    return [
        DetDataSample(metainfo=dict(captions=[f'caption {i} v{k}' for k in range(
            captions_per_image)], img_path=f'{i}.png')) for i in range(num)
    ]


def _model(mode: str = 'clim', **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs.setdefault('mosaic', dict(grid_choices=[2], composition='random'))
    kwargs.setdefault('clip', dict(type='OpenCLIPRegion', model_name=TOY, unlocked_vision_blocks=1))
    return MODELS.build(dict(type='CLIMCLIP', mode=mode, **kwargs))


def _random_checkpoint(path: Path, model_name: str) -> str:
    """A local CLIP file of random weights: the shrunk stand-in for OpenAI's release."""
    torch.manual_seed(0)
    torch.save(OpenCLIPRegion(model_name).clip.state_dict(), path)
    return str(path)


def _shipped(config: str, tmp_path: Path) -> Config:
    """A paper config as shipped, with only the tower (and its weights file) shrunk."""
    cfg = Config.fromfile(str(CLIM_DIR / config))
    init_default_scope(cfg.default_scope)  # as the Runner does: mmdet's registries
    tiny = PAPER_CONFIGS[config]
    cfg.model.clip.model_name = tiny
    cfg.model.clip.pretrained = _random_checkpoint(tmp_path / f'{tiny}.pt', tiny)
    cfg.model.class_embeddings = None
    return cfg


@pytest.mark.parametrize('config', sorted(PAPER_CONFIGS))
def test_shipped_clip_configs_train_one_2x2_3x3_4x4_mosaic_per_32_images(
        config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official split (clim.py CLIM.split_a_batch): with 32 images per GPU, one mosaic of
    each grid (29 pseudo regions, every canvas 1024 x 1024) and 3 single images."""
    cfg = _shipped(config, tmp_path)
    assert cfg.train_dataloader.batch_size == 32 and cfg.train_dataloader.drop_last is True
    model = MODELS.build(cfg.model)
    calls = []
    real_batch_mosaic = clim_clip_module.batch_mosaic

    def spy(images, grids, canvas_size, **kwargs):
        out = real_batch_mosaic(images, grids, canvas_size, **kwargs)
        calls.append((list(grids), tuple(out.canvases.shape)))
        return out

    monkeypatch.setattr(clim_clip_module, 'batch_mosaic', spy)
    size = cfg.train_dataloader.dataset.pipeline[1]['size']
    losses = model.loss(torch.randn(32, 3, size, size), _samples(32))
    assert calls == [([(2, 2), (3, 3), (4, 4)], (3, 3, 1024, 1024))]
    assert losses['num_regions'].item() == 29 and torch.isfinite(losses['loss_caption'])


@pytest.mark.parametrize('batch_size', [16, 28])
def test_a_batch_that_cannot_hold_the_mosaics_is_a_build_error(batch_size: int,
                                                               tmp_path: Path) -> None:
    cfg = _shipped('clim_vitb16_coco-caption.py', tmp_path)
    cfg.model.mosaic.batch_size = batch_size
    with pytest.raises(ValueError, match=rf"model.mosaic: the 'fixed' composition needs .* but "
                       rf'the batch has {batch_size} images'):
        MODELS.build(cfg.model)


def test_a_short_last_batch_is_refused_naming_drop_last(tmp_path: Path) -> None:
    """118,287 COCO images over 8 ranks leave a last batch of 2: the shipped dataloader drops
    it, and a model given one anyway says what to set."""
    model = MODELS.build(_shipped('clim_vitb16_coco-caption.py', tmp_path).model)
    with pytest.raises(ValueError, match='batch of 2 images.*drop_last=True'):
        model.loss(torch.randn(2, 3, 224, 224), _samples(2))


def _trainable(model: torch.nn.Module) -> List[str]:
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


def test_trainable_parameters_are_the_official_ones(tmp_path: Path) -> None:
    """ViT: the official fork's VisionTransformer.lock(unlocked_groups=6) unlocks the last 6 of
    the groups [conv1, class_embedding, ln_pre], positional_embedding, blocks 0-10, [block 11]
    (ln_post and proj are commented out of the groups): blocks 6-11. RN50x64
    (modified_resnet.py): layer4 (stem to layer3 under no_grad), the attention pool but its
    frozen v_proj and c_proj, every BatchNorm frozen (freeze_all_bns). logit_scale learns."""
    vit = MODELS.build(_shipped('clim_vitb16_coco-caption.py', tmp_path).model)
    block_params = sorted(name for name, _ in
                          vit.clip.clip.visual.transformer.resblocks[0].named_parameters())
    expected = [f'clip.clip.visual.transformer.resblocks.{block}.{name}'
                for block in range(6, 12) for name in block_params] + ['clip.clip.logit_scale']
    assert _trainable(vit) == sorted(expected)

    resnet = MODELS.build(_shipped('clim_rn50x64_cc3m.py', tmp_path).model)
    layer4 = [f'clip.clip.visual.layer4.0.{name}' for name in
              ('conv1.weight', 'conv2.weight', 'conv3.weight', 'downsample.0.weight')]
    pool = [f'clip.clip.visual.attnpool.{name}' for name in
            ('positional_embedding', 'q_proj.weight', 'q_proj.bias', 'k_proj.weight',
             'k_proj.bias')]
    assert _trainable(resnet) == sorted(layer4 + pool + ['clip.clip.logit_scale'])
    resnet.train()
    assert all(not m.training for m in resnet.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def test_optimizer_is_the_official_adamw_with_its_decay_rule(tmp_path: Path) -> None:
    """main.py: AdamW, weight decay 0.1 except for ``p.ndim < 2 or 'bn' in n or 'ln' in n or
    'bias' in n or 'logit_scale' in n``; params.py: betas (0.9, 0.98), eps 1e-6 for a ViT."""
    cfg = _shipped('clim_vitb16_coco-caption.py', tmp_path)
    model = MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    checked = 0
    for group in optimizer.param_groups:
        assert group['betas'] == (0.9, 0.98) and group['eps'] == 1e-6 and group['lr'] == 1e-5
        for param in group['params']:
            if not param.requires_grad:
                continue
            name = names[id(param)]
            excluded = (param.ndim < 2 or 'bn' in name or 'ln' in name or 'bias' in name
                        or 'logit_scale' in name)
            assert group['weight_decay'] == (0.0 if excluded else 0.1), name
            checked += 1
    assert checked == len(_trainable(model))
    rn = Config.fromfile(str(CLIM_DIR / 'clim_rn50x64_cc3m.py')).optim_wrapper.optimizer
    assert rn.betas == (0.9, 0.999) and rn.eps == 1e-8  # params.py: a ResNet's defaults


def test_freeze_text_false_trains_the_text_tower() -> None:
    """The toy baseline trains both towers: one optimiser step moves the text weights."""
    cfg = Config.fromfile(str(CLIM_DIR / 'clip-baseline_toy-vit_toy-shapes.py'))
    init_default_scope(cfg.default_scope)
    assert cfg.model.clip.freeze_text is False
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = model.clip.clip.transformer.resblocks[0].attn.in_proj_weight.detach().clone()
    losses = model.loss(torch.randn(64, 3, 64, 64), _samples(64))
    wrapper.update_params(losses['loss_caption'])
    after = model.clip.clip.transformer.resblocks[0].attn.in_proj_weight
    assert not torch.equal(before, after)

    frozen = _model(mode='image')  # freeze_text=True (the default)
    text = [p for p in frozen.clip.clip.transformer.parameters()]
    frozen.loss(torch.randn(4, 3, 64, 64), _samples(4))['loss_caption'].backward()
    assert all(not p.requires_grad and p.grad is None for p in text)


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
    assert model.clip.clip.visual.proj.grad is None  # freeze_projection
    assert all(p.grad is None for p in model.clip.clip.transformer.parameters())  # text frozen
    assert model.clip.clip.logit_scale.grad is not None  # the temperature learns


@pytest.mark.gpu
def test_bfloat16_clim_step_on_cuda() -> None:
    """A CLIM step on CUDA under bfloat16 autocast: the loss is float32 and within 5% of the
    float32 step's, and the unlocked block gets finite gradients."""
    model = _model().cuda()
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    samples = _samples(8, captions_per_image=1)
    torch.manual_seed(1)
    reference = model.loss(images, samples)['loss_caption'].item()
    torch.manual_seed(1)  # the same grids
    with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = model.loss(images, samples)['loss_caption']
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference, rel=0.05)
    loss.backward()
    grads = [p.grad for p in model.clip.clip.visual.transformer.resblocks[-1].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_image_mode_uses_no_mosaic() -> None:
    model = _model(mode='image')
    losses = model.loss(torch.randn(6, 3, 64, 64), _samples(6))
    assert losses['num_regions'].item() == 0 and torch.isfinite(losses['loss_caption'])


def test_mosaic_regions_match_single_region_features() -> None:
    """The loss's region path is RoIAlign of batch_mosaic cells on the dense map."""
    model = _model()
    images = torch.randn(4, 3, 64, 64)
    feats, sources = model._mosaic_region_features(images, ((2, 2), ), torch.tensor([2, 0, 3, 1]))
    assert sources.tolist() == [2, 0, 3, 1] and feats.shape == (4, 64)
    canvas = torch.zeros(1, 3, 128, 128)
    for cell, source in enumerate(sources):
        r, c = divmod(cell, 2)
        canvas[0, :, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = images[source]
    boxes = torch.tensor([[0., 0, 64, 64], [64, 0, 128, 64], [0, 64, 64, 128], [64, 64, 128, 128]])
    torch.testing.assert_close(feats, model.clip.region_features(canvas, [boxes]),
                               atol=1e-5, rtol=1e-4)


def test_a_pipeline_mosaic_trains_each_region_against_its_own_caption(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MosaicPseudoRegion -> PackDetInputs -> data preprocessor -> CLIMCLIP.loss: region j of
    the canvas meets the caption of the image pasted into cell j, never another's."""
    init_default_scope('mmdet')
    rng = np.random.default_rng(0)
    sources = [dict(img=rng.integers(0, 255, (80, 80, 3), dtype=np.uint8),
                    captions=[f'only caption of image {i}'], img_id=i, img_path=f'{i}.jpg')
               for i in range(4)]
    pipeline = Compose([
        dict(type='RandomFlip', prob=1.0),  # boxes move, each keeps its caption index
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'img_shape',
                                              'region_captions', 'mosaic_grid')),
    ])
    from mmclim.datasets.transforms import MosaicPseudoRegion
    mosaic = MosaicPseudoRegion(grid_choices=[2], canvas_size=128, crop_scale=(1.0, 1.0))
    packed = pipeline(mosaic(dict(sources[0], mix_results=sources[1:])))
    model = _model(data_preprocessor=dict(type='DetDataPreprocessor', bgr_to_rgb=True))
    batch = model.data_preprocessor(dict(inputs=[packed['inputs']],
                                         data_samples=[packed['data_samples']]), training=True)
    seen = {}

    def spy(feats, texts, logit_scale, caption_ids=None):
        seen.update(feats=feats, texts=texts)
        return feats.sum() * 0

    monkeypatch.setattr(model.loss_module, 'forward', spy)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    sample = batch['data_samples'][0]
    assert sample.metainfo['mosaic_grid'] == (2, 2) and losses['num_regions'].item() == 4
    boxes = sample.gt_instances.bboxes  # DetDataPreprocessor turned them into a tensor
    # Flipped: cell 0 (image 0) is now the top-right quarter.
    assert boxes[0].tolist() == [64.0, 0.0, 128.0, 64.0]
    expected_captions = [f'only caption of image {label}' for label in
                         sample.gt_instances.labels.tolist()]
    with torch.no_grad():
        torch.testing.assert_close(seen['texts'], model.clip.encode_text(expected_captions))
        torch.testing.assert_close(seen['feats'],
                                   model.clip.region_features(batch['inputs'], [boxes]))
    sample.set_metainfo(dict(region_captions=['too few']))
    with pytest.raises(ValueError, match=r"box labels \[0, 1, 2, 3\] but 1 'region_captions'"):
        model.loss(batch['inputs'], batch['data_samples'])


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    no_captions = _samples(2)
    no_captions[1].set_metainfo(dict(captions=[]))
    with pytest.raises(ValueError, match=r'data sample 1 \(1.png\) has no list of captions'):
        _model(mode='image').loss(torch.randn(2, 3, 64, 64), no_captions)
    with pytest.raises(ValueError, match='mode'):
        _model(mode='regions')
    with pytest.raises(ValueError, match='canvas_size: 8 pixels'):
        _model(canvas_size=8)
    with pytest.raises(ValueError, match='weight_ensemble=0.7 .* model.clip.pretrained is None'):
        _model(weight_ensemble=0.7)
    with pytest.raises(FileNotFoundError, match="missing.npy' does not exist"):
        _model(class_embeddings=str(tmp_path / 'missing.npy'))
    wrong = tmp_path / 'wrong.npy'
    save_class_embeddings(str(wrong), torch.zeros(3, 5), 'mmclim-toy-vit')
    with pytest.raises(ValueError, match='embeddings of size 5, the model\'s embedding size is 64'):
        _model(class_embeddings=str(wrong))
    other = tmp_path / 'other.npy'
    save_class_embeddings(str(other), torch.zeros(3, 64), 'ViT-B-16-quickgelu')
    with pytest.raises(ValueError, match="text tower of 'ViT-B-16-quickgelu'.*mmclim-toy-vit"):
        _model(class_embeddings=str(other))


def test_predict_scores_every_ground_truth_region(tmp_path: Path) -> None:
    embeddings = torch.nn.functional.normalize(torch.randn(5, 64), dim=1)
    save_class_embeddings(str(tmp_path / 'classes.npy'), embeddings, TOY)
    model = _model(class_embeddings=str(tmp_path / 'classes.npy')).eval()
    samples = _samples(2)
    samples[0].gt_instances = InstanceData(bboxes=torch.tensor([[0., 0, 32, 32], [8, 8, 64, 40]]),
                                           labels=torch.tensor([1, 3]))
    samples[1].gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.predict(images, samples)
        expected = model.clip.region_features(images[:1], [samples[0].gt_instances.bboxes],
                                              normalize=True) @ embeddings.t()
    assert out[0].pred_region_scores.shape == (2, 5) and out[1].pred_region_scores.shape == (0, 5)
    torch.testing.assert_close(out[0].pred_region_scores, expected)


def test_predict_pools_masks_when_present(tmp_path: Path) -> None:
    from mmdet.structures.mask import BitmapMasks
    save_class_embeddings(str(tmp_path / 'classes.npy'), torch.eye(3, 64), TOY)
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


def test_weight_ensemble_evaluates_the_mix_and_restores_the_trained_weights(
        tmp_path: Path) -> None:
    original = _random_checkpoint(tmp_path / 'original.pt', TOY)
    model = _model(weight_ensemble=0.7, clip=dict(type='OpenCLIPRegion', model_name=TOY,
                                                  pretrained=original, unlocked_vision_blocks=1))
    block = model.clip.clip.visual.transformer.resblocks[-1]
    start = block.mlp.c_fc.weight.detach().clone()
    with torch.no_grad():
        block.mlp.c_fc.weight.add_(1.0)  # "training" moved it by 1
    frozen_before = model.clip.clip.visual.conv1.weight.detach().clone()
    with model.ensembled_weights():
        torch.testing.assert_close(block.mlp.c_fc.weight, start + 0.7)  # 0.7 * (w+1) + 0.3 * w
        torch.testing.assert_close(model.clip.clip.visual.conv1.weight, frozen_before)
    torch.testing.assert_close(block.mlp.c_fc.weight, start + 1.0)

    from mmclim.engine import WeightEnsembleHook

    class Runner:
        pass

    runner = Runner()
    runner.model = model
    hook = WeightEnsembleHook()
    hook.before_val_epoch(runner)
    torch.testing.assert_close(block.mlp.c_fc.weight, start + 0.7)
    hook.after_val_epoch(runner)
    torch.testing.assert_close(block.mlp.c_fc.weight, start + 1.0)


def test_converter_exports_the_checkpoints_own_ensemble(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without options the export is the weight ensemble the checkpoint's config evaluates
    (model.weight_ensemble with model.clip.pretrained); --alpha 1 exports the trained weights."""
    original_file = _random_checkpoint(tmp_path / 'original.pt', TOY)
    model = _model(clip=dict(type='OpenCLIPRegion', model_name=TOY, pretrained=original_file,
                             unlocked_vision_blocks=1))
    with torch.no_grad():
        model.clip.clip.visual.proj.add_(0.5)
    cfg_text = Config(dict(model=dict(type='CLIMCLIP', weight_ensemble=0.7, clip=dict(
        pretrained=original_file)))).pretty_text
    ckpt = tmp_path / 'iter_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=1, cfg=cfg_text)), ckpt)
    ensembled, trained = tmp_path / 'ensembled.pt', tmp_path / 'trained.pt'
    _convert(monkeypatch, str(ckpt), str(ensembled))
    _convert(monkeypatch, str(ckpt), str(trained), '--alpha', '1')
    original = torch.load(original_file, weights_only=True)['visual.proj']
    torch.testing.assert_close(torch.load(ensembled, weights_only=True)['visual.proj'],
                               original + 0.7 * 0.5)
    loaded = OpenCLIPRegion(model_name=TOY, pretrained=str(trained))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.dense_features(images),
                                   model.clip.dense_features(images))
    bare = tmp_path / 'bare.pth'
    torch.save(dict(state_dict=model.state_dict()), bare)
    with pytest.raises(ValueError, match='needs the original weights: pass --original'):
        _convert(monkeypatch, str(bare), str(trained), '--alpha', '0.5')


def _convert(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    """Run tools/model_converters/clim_to_openclip.py in this process."""
    path = REPO_ROOT / 'tools' / 'model_converters' / 'clim_to_openclip.py'
    spec = importlib.util.spec_from_file_location('clim_to_openclip', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, 'argv', [str(path), *argv])
    tool.main()
