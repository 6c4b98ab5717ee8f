# Copyright (c) mmclim contributors. All rights reserved.
"""The torchvision fallback of mmcv's ops equals mmcv's CPU kernels (forced onto the CPU), and on
CUDA (tests marked ``gpu``) mmcv's CUDA kernels or the fallback equal them too."""
import contextlib
import importlib

import pytest
import torch
import torchvision
from mmcv.ops import RoIAlign, batched_nms, nms, roi_align, sigmoid_focal_loss
from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
from mmdet.structures.mask import BitmapMasks

from mmclim.models.utils import box_pool, torchvision_ops
from mmclim.models.utils.ops_fallback import probe_kernels


def random_rois(generator: torch.Generator, num: int, batch: int, height: int, width: int,
                inverted: bool = False) -> torch.Tensor:
    """RoIs (num, 5) on input pixels: ordinary boxes, degenerate ones (zero width or height, a
    point, and with ``inverted`` one with x2 < x1, which mmcv's CPU kernel refuses when aligned)
    and boxes partly or wholly outside the map."""
    x1 = torch.rand(num, generator=generator) * width * 1.2 - 0.1 * width
    y1 = torch.rand(num, generator=generator) * height * 1.2 - 0.1 * height
    w = torch.rand(num, generator=generator) * width * 0.6
    h = torch.rand(num, generator=generator) * height * 0.6
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    boxes[0, 2] = boxes[0, 0]  # zero width
    boxes[1, 3] = boxes[1, 1]  # zero height
    if inverted:
        boxes[2, 2] = boxes[2, 0] - 3
    boxes[3, 2:] = boxes[3, :2]  # a point
    boxes[4] = torch.tensor([width + 5.0, height + 5.0, width + 9.0, height + 9.0])  # outside
    index = torch.randint(batch, (num, 1), generator=generator).float()
    return torch.cat([index, boxes], dim=1)


def roi_align_with_grad(features: torch.Tensor, rois: torch.Tensor, *args):
    """RoIAlign's output and the gradient of a fixed weighting of it w.r.t. the features."""
    features = features.clone().requires_grad_(True)
    out = roi_align(features, rois, *args)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), features.grad


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('output_size,spatial_scale', [(1, 1.0), (7, 0.25), ((2, 3), 0.5)])
def test_roi_align_fallback_equals_mmcv(aligned, sampling_ratio, output_size, spatial_scale,
                                        monkeypatch):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 20, 24, generator=generator)
    rois = random_rois(generator, 40, 2, int(20 / spatial_scale), int(24 / spatial_scale),
                       inverted=not aligned)
    args = (output_size, spatial_scale, sampling_ratio, 'avg', aligned)
    expected, expected_grad = roi_align_with_grad(features, rois, *args)

    calls = []
    original = torchvision.ops.roi_align
    monkeypatch.setattr(torchvision.ops, 'roi_align',
                        lambda *args, **kw: calls.append(1) or original(*args, **kw))
    with torchvision_ops():
        got, got_grad = roi_align_with_grad(features, rois, *args)
    assert calls, 'the fallback did not run'
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_roi_align_fallback_reaches_every_caller():
    """mmcv's module, mmdet's mask cropping (imported by name before mmclim) and box_pool."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 4, 16, 16, generator=generator)
    rois = random_rois(generator, 12, 1, 64, 64)
    layer = RoIAlign(output_size=3, spatial_scale=0.25, sampling_ratio=0, aligned=True)
    masks = BitmapMasks((torch.rand(2, 30, 40, generator=generator) > 0.5).numpy(), 30, 40)
    crop_boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0], [0.0, 0.0, 40.0, 30.0]])
    expected = (layer(features, rois), box_pool(features, rois, stride=4),
                masks.crop_and_resize(crop_boxes, (7, 7), torch.arange(2)).masks)
    with torchvision_ops():
        got = (layer(features, rois), box_pool(features, rois, stride=4),
               masks.crop_and_resize(crop_boxes, (7, 7), torch.arange(2)).masks)
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-5, atol=1e-6)


def test_roi_align_fallback_empty_and_max_mode():
    features = torch.randn(1, 2, 8, 8)
    with torchvision_ops():
        empty = roi_align(features, torch.zeros(0, 5), (2, 2), 1.0, 0, 'avg', True)
        assert empty.shape == (0, 2, 2, 2)
        with pytest.raises(NotImplementedError, match="pool_mode='max'"):
            roi_align(features, torch.tensor([[0.0, 1, 1, 5, 5]]), (2, 2), 1.0, 0, 'max', True)


def random_boxes(generator: torch.Generator, num: int) -> torch.Tensor:
    xy = torch.rand(num, 2, generator=generator) * 100
    wh = torch.rand(num, 2, generator=generator) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize('iou_threshold', [0.3, 0.5, 0.7])
@pytest.mark.parametrize('offset', [0, 1])
def test_nms_fallback_equals_mmcv(iou_threshold, offset):
    generator = torch.Generator().manual_seed(2)
    boxes = random_boxes(generator, 300)
    scores = torch.randperm(300, generator=generator).float() / 300  # distinct: no ties
    for kwargs in (dict(), dict(score_threshold=0.4), dict(max_num=20)):
        expected_dets, expected_keep = nms(boxes, scores, iou_threshold, offset=offset, **kwargs)
        with torchvision_ops():
            dets, keep = nms(boxes, scores, iou_threshold, offset=offset, **kwargs)
        assert torch.equal(keep, expected_keep)
        assert torch.equal(dets, expected_dets)
    assert 0 < len(expected_keep)


def test_batched_nms_fallback_equals_mmcv():
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(generator, 200)
    scores = torch.randperm(200, generator=generator).float() / 200
    labels = torch.randint(5, (200, ), generator=generator)
    nms_cfg = dict(type='nms', iou_threshold=0.5)
    expected = batched_nms(boxes, scores, labels, nms_cfg)
    with torchvision_ops():
        got = batched_nms(boxes, scores, labels, nms_cfg)
        empty_dets, empty_keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert torch.equal(got[1], expected[1]) and torch.equal(got[0], expected[0])
    assert empty_dets.shape == (0, 5) and empty_keep.numel() == 0


def test_nms_offset_on_hand_worked_boxes():
    """Boxes [0, 0, 1, 1] and [1, 0, 2, 1]: IoU 0 with offset 0; with offset 1 each is 2 x 2 and
    they share a 1 x 2 column, IoU 2 / 6 = 1/3, so a threshold of 0.3 drops the second."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    with torchvision_ops():
        assert nms(boxes, scores, 0.3, offset=0)[1].tolist() == [0, 1]
        assert nms(boxes, scores, 0.3, offset=1)[1].tolist() == [0]
        assert nms(boxes, scores, 0.34, offset=1)[1].tolist() == [0, 1]


def test_sigmoid_focal_loss_fallback_equals_mmdet_reference():
    """mmcv has no CPU focal-loss kernel: the reference is mmdet's torch implementation."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(30, 6, generator=generator) * 3
    target = torch.randint(7, (30, ), generator=generator)  # 6 is background
    ref_logits = logits.clone().requires_grad_(True)
    one_hot = torch.nn.functional.one_hot(target, 7)[:, :6].float()
    expected = py_sigmoid_focal_loss(ref_logits, one_hot, gamma=2.0, alpha=0.25, reduction='sum')
    expected.backward()
    got_logits = logits.clone().requires_grad_(True)
    with torchvision_ops():
        got = sigmoid_focal_loss(got_logits, target, 2.0, 0.25, None, 'sum')
        got.backward()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_logits.grad, ref_logits.grad, rtol=1e-4, atol=1e-6)


def test_sigmoid_focal_loss_fallback_class_weight_hand_worked():
    """One logit 0 (p = 1/2), target its class, gamma 2, alpha 0.25, class weight 3:
    loss = 3 * 0.25 * (1/2)^2 * log 2; d/dx = -3 * 0.25 * (1/2)^2 * (1 - 1/2 + 2 * 1/2 * log 2)."""
    logit = torch.zeros(1, 1, requires_grad=True)
    with torchvision_ops():
        loss = sigmoid_focal_loss(logit, torch.tensor([0]), 2.0, 0.25, torch.tensor([3.0]), 'sum')
        loss.backward()
    log2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(loss, 3 * 0.25 * 0.25 * log2)
    torch.testing.assert_close(logit.grad, -3 * 0.25 * 0.25 * (0.5 + log2).view(1, 1))


def test_mmcv_path_computes_bfloat16_in_float32():
    """mmcv's kernels have no bfloat16: the dispatch runs them on float32 copies."""
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(1, 2, 12, 12, generator=generator).bfloat16()
    rois = torch.tensor([[0.0, 1.0, 2.0, 9.0, 8.0], [0.0, 0.0, 0.0, 12.0, 12.0]])
    got = roi_align(features, rois.bfloat16(), (2, 2), 1.0, 0, 'avg', True)
    expected = roi_align(features.float(), rois, (2, 2), 1.0, 0, 'avg', True)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected.bfloat16())
    boxes = random_boxes(generator, 50)
    scores = torch.randperm(50, generator=generator).float() / 50
    assert torch.equal(nms(boxes.bfloat16(), scores.bfloat16(), 0.5)[1],
                       nms(boxes.bfloat16().float(), scores.bfloat16().float(), 0.5)[1])


def test_box_pool_keeps_box_precision_under_bfloat16_autocast():
    """Pixel i of the map holds i + 1/2 - 1000 (exact in bfloat16 near i = 1000), so aligned
    RoIAlign (pixel centres at i + 1/2) reads c - 1000 at coordinate c, and the box
    x in [1001, 1002] at stride 1 has mean 1001.5 - 1000 = 1.5. Cast to bfloat16 (spacing 4 between
    512 and 1024) the box would become [1000, 1000] or [1000, 1004], mean 0 or 2."""
    columns = torch.arange(1024, dtype=torch.float32) + 0.5 - 1000
    features = columns.view(1, 1, 1, 1024).expand(1, 1, 4, 1024).contiguous()
    boxes = [torch.tensor([[1001.0, 0.0, 1002.0, 4.0]])]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        pooled = box_pool(features.bfloat16(), boxes, stride=1)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, torch.tensor([[1.5]]))


@pytest.mark.gpu
@pytest.mark.parametrize('forced', [False, True], ids=['default', 'forced_fallback'])
def test_cuda_ops_equal_the_cpu_kernels(forced):
    """On CUDA (mmcv's kernels where its build has them, else the fallback; then the fallback
    forced), RoIAlign forward and backward, NMS, batched NMS and the focal loss equal mmcv's CPU
    kernels (the focal loss: mmdet's torch implementation)."""
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(2, 8, 40, 48, generator=generator)
    rois = random_rois(generator, 200, 2, 160, 192)
    args = ((7, 7), 0.25, 0, 'avg', True)
    expected, expected_grad = roi_align_with_grad(features, rois, *args)
    boxes = random_boxes(generator, 1000)
    scores = torch.randperm(1000, generator=generator).float() / 1000
    labels = torch.randint(10, (1000, ), generator=generator)
    nms_cfg = dict(type='nms', iou_threshold=0.5)
    expected_nms = nms(boxes, scores, 0.5)[1]
    expected_batched = batched_nms(boxes, scores, labels, nms_cfg)[1]
    logits = torch.randn(64, 8, generator=generator)
    target = torch.randint(9, (64, ), generator=generator)
    one_hot = torch.nn.functional.one_hot(target, 9)[:, :8].float()
    expected_focal = py_sigmoid_focal_loss(logits, one_hot, gamma=2.0, alpha=0.25,
                                           reduction='sum')

    context = torchvision_ops() if forced else contextlib.nullcontext()
    with context:
        got, got_grad = roi_align_with_grad(features.cuda(), rois.cuda(), *args)
        got_nms = nms(boxes.cuda(), scores.cuda(), 0.5)[1]
        got_batched = batched_nms(boxes.cuda(), scores.cuda(), labels.cuda(), nms_cfg)[1]
        got_focal = sigmoid_focal_loss(logits.cuda(), target.cuda(), 2.0, 0.25, None, 'sum')
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad.cpu(), expected_grad, rtol=1e-5, atol=1e-5)
    assert torch.equal(got_nms.cpu(), expected_nms)
    assert torch.equal(got_batched.cpu(), expected_batched)
    torch.testing.assert_close(got_focal.cpu(), expected_focal, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
def test_bfloat16_roi_align_on_cuda_pools_in_float32():
    """mmdet's extractors hand RoIAlign bfloat16 maps and boxes under autocast: it runs (mmcv's
    kernels have no bfloat16) and equals the float32 pooling of the same values."""
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(1, 4, 32, 32, generator=generator).bfloat16().cuda()
    rois = torch.tensor([[0.0, 3.0, 5.0, 60.0, 44.0], [0.0, 0.0, 0.0, 128.0, 128.0]]).cuda()
    got = roi_align(features, rois.bfloat16(), (7, 7), 0.25, 0, 'avg', True)
    expected = roi_align(features.float().cpu(), rois.bfloat16().float().cpu(), (7, 7), 0.25, 0,
                         'avg', True)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float().cpu(), expected, rtol=1e-2, atol=1e-2)


class _ExtWithoutKernels:
    """An ``mmcv._ext`` whose NMS raises as mmcv's device registry does for a missing kernel."""

    @staticmethod
    def nms(boxes, scores, iou_threshold, offset):
        raise RuntimeError(f'nms_impl: implementation for device {boxes.device} not found.')


class _ExtBroken:

    @staticmethod
    def nms(boxes, scores, iou_threshold, offset):
        raise RuntimeError('CUDA error: an illegal memory access was encountered')


def test_probe_kernels_reads_mmcvs_missing_kernel_error():
    assert probe_kernels(importlib.import_module('mmcv._ext'), 'cpu')
    assert not probe_kernels(_ExtWithoutKernels(), 'cpu')
    with pytest.raises(RuntimeError, match='illegal memory access'):  # not a missing kernel
        probe_kernels(_ExtBroken(), 'cpu')
    if not torch.cuda.is_available():
        assert not probe_kernels(_ExtBroken(), 'cuda')  # nothing to run there
