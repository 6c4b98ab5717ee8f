# Copyright (c) mmclim contributors. All rights reserved.
"""A frozen, class-agnostic proposal network built from an mmdet config and a local checkpoint."""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.models.detectors import RPN
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from torch import Tensor


class FrozenProposalNetwork(nn.Module):
    """The RPN of an mmdet detector (an ``RPN`` or any two-stage detector), frozen and in eval.

    RegionCLIP proposes regions with an RPN trained on base-class boxes and kept in eval mode
    (microsoft/RegionCLIP ``clip_rcnn.py``: ``offline_backbone``/``offline_proposal_generator``).
    Here the network is whatever ``config`` builds, its weights ``checkpoint`` (a local
    mmengine checkpoint, e.g. from ``tools/train.py`` on that config), and ``test_cfg`` replaces
    keys of the config's ``model.test_cfg.rpn`` (how many proposals, NMS). It normalises images
    with its own data preprocessor's mean, std and channel order, whatever the caller's are.

    Args:
        config (str): Path of an mmdet config whose ``model`` has ``extract_feat`` and an
            ``rpn_head`` (mmdet ``RPN``, ``FasterRCNN``, ``MaskRCNN`` ...).
        checkpoint (str, optional): Local checkpoint of that model. None keeps the random
            initialisation (tests only; a warning says so). Defaults to None.
        test_cfg (dict, optional): Keys replacing those of ``model.test_cfg.rpn``. Defaults to
            None.
        field (str): The config field this network was built from, named in errors.
            Defaults to ``'model.rpn'``.
    """

    def __init__(self,
                 config: str,
                 checkpoint: Optional[str] = None,
                 test_cfg: Optional[dict] = None,
                 field: str = 'model.rpn') -> None:
        super().__init__()
        if not osp.isfile(config):
            raise FileNotFoundError(f'{field}.config: no config file {config!r}')
        cfg = Config.fromfile(config)
        model_cfg = cfg.model
        if test_cfg:
            if 'rpn' not in model_cfg.get('test_cfg', {}):
                raise ValueError(f'{field}.test_cfg: the model of {config} has no test_cfg.rpn '
                                 'to update')
            model_cfg.test_cfg.rpn.update(test_cfg)
        # The detector's parts (its data preprocessor too) resolve in its config's scope.
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
            detector = MODELS.build(model_cfg)
        # mmdet's RPN keeps its head as bbox_head, a two-stage detector as rpn_head.
        head = detector.bbox_head if isinstance(detector, RPN) else getattr(
            detector, 'rpn_head', None)
        if head is None or not hasattr(detector, 'extract_feat'):
            raise ValueError(f'{field}.config: {config} builds a {type(detector).__name__}, '
                             'which has no rpn_head; expected an RPN or a two-stage detector')
        if checkpoint is None:
            print_log(f'{field}.checkpoint is None: the proposal network of {config} has random '
                      'weights, so its proposals only suit tests', logger='current', level=30)
        elif not osp.isfile(checkpoint):
            raise FileNotFoundError(f'{field}.checkpoint: no checkpoint file {checkpoint!r} '
                                    f'(train {config} with tools/train.py first)')
        else:
            load_checkpoint(detector, checkpoint, map_location='cpu', strict=True,
                            logger='current')
        # Initialised once, here: a runner's init_weights must not overwrite the checkpoint (nor
        # fetch the config's own init_cfg weights).
        detector._is_init = True
        self.detector = detector.requires_grad_(False).eval()
        self.head = head
        self.config = config
        self.checkpoint = checkpoint

    def train(self, mode: bool = True) -> 'FrozenProposalNetwork':
        """Stay in eval mode: the network is frozen (its BatchNorm statistics too)."""
        return super().train(False)

    def _normalize(self, pixels: Tensor) -> Tensor:
        """Images as the detector's data preprocessor would hand them over."""
        preprocessor = self.detector.data_preprocessor
        if getattr(preprocessor, '_channel_conversion', False):
            pixels = pixels.flip(1)
        if getattr(preprocessor, '_enable_normalize', False):
            pixels = (pixels - preprocessor.mean) / preprocessor.std
        return pixels

    @torch.no_grad()
    def forward(self, pixels: Tensor, image_shapes: Sequence[Tuple[int, int]]) -> List[Tensor]:
        """Proposals of a batch.

        Args:
            pixels (Tensor): Images in 0-255 pixels and the channel order they were loaded in
                (mmcv: BGR), padded to one size, shape (B, 3, H, W).
            image_shapes (Sequence[tuple[int, int]]): (h, w) of each image before padding.

        Returns:
            list[Tensor]: B tensors (N_i, 4) of boxes (x1, y1, x2, y2) in input pixels, at most
            ``test_cfg.rpn.max_per_img`` each, by descending objectness.
        """
        feats = self.detector.extract_feat(self._normalize(pixels.float()))
        batch_shape = tuple(pixels.shape[-2:])
        samples = [DetDataSample(metainfo=dict(img_shape=tuple(shape),
                                               batch_input_shape=batch_shape))
                   for shape in image_shapes]
        results = self.head.predict(feats, samples, rescale=False)
        return [result.bboxes for result in results]
