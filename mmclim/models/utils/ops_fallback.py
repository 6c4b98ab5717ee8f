# Copyright (c) mmclim contributors. All rights reserved.
"""mmcv's compiled ops with a torchvision fallback for devices mmcv was not built for.

mmcv 2.1.0's CUDA kernels are built from source against the local torch and CUDA; where that
build is CPU-only (no ``nvcc`` at install time, or a build that failed under a newer CUDA), every
RoIAlign, NMS and CUDA focal loss that mmdet and mmclim call on a GPU tensor fails with
``... implementation for device cuda:0 not found``. On ``import mmclim`` the extension module that
three of mmcv's op modules call (``mmcv.ops.roi_align``, ``mmcv.ops.nms``,
``mmcv.ops.focal_loss``) is wrapped, so every caller goes through one dispatch, whatever name it
imported the op under (mmdet's RoI extractors, ``batched_nms``, ``BitmapMasks.crop_and_resize``,
``FocalLoss``, :func:`~mmclim.models.utils.box_pool`):

- on a device mmcv's build lacks (or on every device, with ``MMCLIM_OPS=torchvision`` or inside
  :func:`torchvision_ops`), RoIAlign and NMS run torchvision's kernels and the sigmoid focal loss
  mmcv's own closed form in torch ops; the results are mmcv's (tested against mmcv's CPU kernels);
- on devices mmcv was built for, mmcv's kernels run, with bfloat16 inputs computed in float32
  (mmcv's RoIAlign kernels dispatch float, double and half only; its CUDA NMS reads float only,
  so half and bfloat16 boxes are converted for it).

These are the ops the shipped configs reach (CLIM fine-tuning, F-VLM, the toy RetinaNet); any other
mmcv op still needs mmcv's own build for the device.
"""
import contextlib
import importlib
import os
import sys
from typing import Dict, Iterator, Tuple

import torch
import torchvision
from torch import Tensor

#: ``MMCLIM_OPS=torchvision`` runs the fallback on every device, CPU included.
ENV_VAR = 'MMCLIM_OPS'
#: The mmcv op modules whose ``ext_module`` is wrapped.
WRAPPED_MODULES = ('mmcv.ops.roi_align', 'mmcv.ops.nms', 'mmcv.ops.focal_loss')
# mmcv's RoIAlign pool_mode codes (RoIAlignFunction: 0 is 'max', 1 is 'avg').
_POOL_MAX = 0
# mmcv's kernels clamp probabilities at FLT_MIN before their logarithm.
_FLT_MIN = float(torch.finfo(torch.float32).tiny)

#: What mmcv's device registry says of an op without a kernel for the device.
_NO_KERNEL = 'not found'

_forced = False
_kernels: Dict[str, bool] = {}


def probe_kernels(ext, device_type: str) -> bool:
    """Whether ``ext`` (``mmcv._ext``) has kernels for ``device_type``: an NMS of one box runs,
    or mmcv's device registry raises ``nms_impl: implementation for device ... not found``.

    mmcv's build information (``get_compiling_cuda_version``) is not asked: a CUDA build of mmcv
    2.1.0 against CUDA 13.0 and torch 2.11 crashed in it (docs/gpu.md).
    """
    if device_type == 'cuda' and not torch.cuda.is_available():
        return False
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=device_type)
    try:
        ext.nms(box, box.new_ones(1), iou_threshold=0.5, offset=0)
    except RuntimeError as error:
        if _NO_KERNEL not in str(error):
            raise
        return False
    return True


def mmcv_has_kernels(device_type: str) -> bool:
    """Whether mmcv's compiled ops run on ``device_type`` (``'cpu'``, ``'cuda'``); probed once
    per process and device type (:func:`probe_kernels`)."""
    if device_type not in _kernels:
        _kernels[device_type] = probe_kernels(importlib.import_module('mmcv._ext'), device_type)
    return _kernels[device_type]


def uses_fallback(device_type: str) -> bool:
    """Whether ops on ``device_type`` run the fallback: where mmcv has no kernels for it, and on
    every device when forced (``MMCLIM_OPS=torchvision`` or :func:`torchvision_ops`)."""
    if _forced or os.environ.get(ENV_VAR, '') == 'torchvision':
        return True
    return not mmcv_has_kernels(device_type)


@contextlib.contextmanager
def torchvision_ops() -> Iterator[None]:
    """Run the fallback on every device inside the block (to test it on CPU)."""
    global _forced
    previous, _forced = _forced, True
    try:
        yield
    finally:
        _forced = previous


class MMCVOpsDispatch:
    """Stands in for ``mmcv._ext`` in mmcv's op modules: RoIAlign, NMS and the sigmoid focal loss
    dispatch as the module docstring says; every other attribute is mmcv's own.

    Args:
        ext (module): ``mmcv._ext``.
    """

    def __init__(self, ext) -> None:
        self._ext = ext

    def __getattr__(self, name: str):
        return getattr(self._ext, name)

    @staticmethod
    def _fallback(tensor: Tensor) -> bool:
        return uses_fallback(tensor.device.type)

    def roi_align_forward(self, input: Tensor, rois: Tensor, output: Tensor, argmax_y: Tensor,
                          argmax_x: Tensor, aligned_height: int, aligned_width: int,
                          spatial_scale: float, sampling_ratio: int, pool_mode: int,
                          aligned: bool) -> None:
        """mmcv's ``roi_align_forward``: fills ``output`` (K, C, h, w) from ``input`` (B, C, H, W)
        and ``rois`` (K, 5) in place (and, for ``pool_mode`` 0, ``argmax_y``/``argmax_x``)."""
        params = dict(aligned_height=aligned_height, aligned_width=aligned_width,
                      spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                      pool_mode=pool_mode, aligned=aligned)
        if self._fallback(input):
            if pool_mode == _POOL_MAX:
                raise NotImplementedError(
                    "RoIAlign pool_mode='max' has no torchvision kernel, and mmcv's ops were built "
                    f'without kernels for {input.device.type}: rebuild mmcv with them, or use '
                    "pool_mode='avg'")
            # torchvision's adaptive sampling (ratio <= 0) is mmcv's (ratio 0): ceil(bin size).
            output.copy_(
                torchvision.ops.roi_align(input.float(), rois.float(),
                                          (aligned_height, aligned_width), spatial_scale,
                                          sampling_ratio, aligned))
        elif input.dtype != torch.bfloat16:
            self._ext.roi_align_forward(input, rois, output, argmax_y, argmax_x, **params)
        else:
            outputs32 = [output.float(), argmax_y.float(), argmax_x.float()]
            self._ext.roi_align_forward(input.float(), rois.float(), *outputs32, **params)
            for tensor, tensor32 in zip((output, argmax_y, argmax_x), outputs32):
                tensor.copy_(tensor32)

    def roi_align_backward(self, grad_output: Tensor, rois: Tensor, argmax_y: Tensor,
                           argmax_x: Tensor, grad_input: Tensor, aligned_height: int,
                           aligned_width: int, spatial_scale: float, sampling_ratio: int,
                           pool_mode: int, aligned: bool) -> None:
        """mmcv's ``roi_align_backward``: accumulates ``grad_output`` (K, C, h, w) into
        ``grad_input`` (B, C, H, W) in place."""
        params = dict(aligned_height=aligned_height, aligned_width=aligned_width,
                      spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                      pool_mode=pool_mode, aligned=aligned)
        if self._fallback(grad_output):
            batch, channels, height, width = grad_input.shape
            grad_input.copy_(
                torch.ops.torchvision._roi_align_backward(grad_output.float(), rois.float(),
                                                          spatial_scale, aligned_height,
                                                          aligned_width, batch, channels, height,
                                                          width, sampling_ratio, aligned))
        elif grad_output.dtype != torch.bfloat16:
            self._ext.roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input,
                                         **params)
        else:
            grad_input32 = grad_input.float()
            self._ext.roi_align_backward(grad_output.float(), rois.float(), argmax_y.float(),
                                         argmax_x.float(), grad_input32, **params)
            grad_input.copy_(grad_input32)

    def nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int) -> Tensor:
        """mmcv's ``nms``: indices (M,) of the kept boxes among ``boxes`` (N, 4), by decreasing
        score; ``offset`` 1 counts a box's width as ``x2 - x1 + 1``."""
        if boxes.dtype in (torch.bfloat16, torch.float16):  # mmcv's CUDA NMS reads float only
            boxes, scores = boxes.float(), scores.float()
        if not self._fallback(boxes):
            return self._ext.nms(boxes, scores, iou_threshold=iou_threshold, offset=offset)
        if offset:
            # IoU with widths x2 - x1 + 1 is the IoU of the boxes grown by 1 at x2 and y2.
            boxes = boxes + boxes.new_tensor([0.0, 0.0, offset, offset])
        return torchvision.ops.nms(boxes.float(), scores.float(), iou_threshold)

    def sigmoid_focal_loss_forward(self, input: Tensor, target: Tensor, weight: Tensor,
                                   output: Tensor, gamma: float, alpha: float) -> None:
        """mmcv's ``sigmoid_focal_loss_forward``: the loss of each logit of ``input`` (N, C)
        against ``target`` (N,) (C is background) into ``output`` (N, C), weighted by
        ``weight[target]`` when ``weight`` (C,) is not empty."""
        if not self._fallback(input):
            self._ext.sigmoid_focal_loss_forward(input, target, weight, output, gamma=gamma,
                                                 alpha=alpha)
            return
        prob, positive = self._focal_terms(input, target)
        term_p = (1 - prob).pow(gamma) * prob.clamp(min=_FLT_MIN).log()
        term_n = prob.pow(gamma) * (1 - prob).clamp(min=_FLT_MIN).log()
        loss = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n)
        output.copy_(self._focal_weighted(loss, target, weight))

    def sigmoid_focal_loss_backward(self, input: Tensor, target: Tensor, weight: Tensor,
                                    grad_input: Tensor, gamma: float, alpha: float) -> None:
        """mmcv's ``sigmoid_focal_loss_backward``: d loss / d logit (N, C) into ``grad_input``."""
        if not self._fallback(input):
            self._ext.sigmoid_focal_loss_backward(input, target, weight, grad_input, gamma=gamma,
                                                  alpha=alpha)
            return
        prob, positive = self._focal_terms(input, target)
        term_p = (1 - prob).pow(gamma) * (1 - prob - gamma * prob * prob.clamp(min=_FLT_MIN).log())
        term_n = prob.pow(gamma) * (gamma * (1 - prob) * (1 - prob).clamp(min=_FLT_MIN).log() -
                                    prob)
        grad = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n)
        grad_input.copy_(self._focal_weighted(grad, target, weight))

    @staticmethod
    def _focal_terms(input: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
        """Sigmoid probabilities (N, C) in float32, and whether each logit is its row's target."""
        prob = input.float().sigmoid()
        classes = torch.arange(input.shape[1], device=input.device)
        return prob, target[:, None] == classes[None, :]

    @staticmethod
    def _focal_weighted(value: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        """``value`` (N, C) scaled by ``weight[target]`` (mmcv's class weights), if any."""
        return value * weight.float()[target][:, None] if weight.numel() else value


def install_ops_fallback() -> None:
    """Wrap ``ext_module`` of the modules in :data:`WRAPPED_MODULES` (once per process)."""
    import mmcv.ops  # noqa: F401  (imports the op modules)
    for name in WRAPPED_MODULES:
        module = sys.modules[name]
        if not isinstance(module.ext_module, MMCVOpsDispatch):
            module.ext_module = MMCVOpsDispatch(module.ext_module)
