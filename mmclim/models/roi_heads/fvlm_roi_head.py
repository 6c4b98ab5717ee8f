# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Tuple

import torch
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import scale_boxes
from mmdet.utils import ConfigType, InstanceList
from mmengine.structures import InstanceData
from torch import Tensor

from mmclim.models.utils.box_pool import float32_maps
from .fvlm_bbox_head import FVLMBBoxHead
from .fvlm_scores import cosine_logits, fvlm_fuse_scores
from .text_embedding_classifier import TextEmbeddingClassifier


@MODELS.register_module()
class FVLMRoIHead(StandardRoIHead):
    """F-VLM's RoI head: class-agnostic boxes and masks, text-embedding classifier, and the
    detection scores fused with the frozen VLM's scores at test time.

    Training is ``StandardRoIHead``'s, with the ground truth checked to hold base classes only.

    At test time, as the official ``FVLMStandardRoIHead`` and ``FVLMConvFCBBoxHead``: every
    proposal is scored by the box head (softmax over the classes and background) and regressed
    to one class-agnostic box; the VLM scores the same proposal, before regression (its region
    embedding ``vlm_embeddings`` comes from the detector, pooled from the frozen backbone's VLM
    map), as a softmax over the classes and background of ``vlm_logit_scale`` times the cosine
    similarities with the classifier's class and learned background embeddings. The two are
    fused per class (:func:`~.fvlm_scores.fvlm_fuse_scores`: ``base_alpha`` for the base classes,
    ``novel_beta`` for the novel ones), then the regressed boxes go through mmdet's
    ``multiclass_nms`` and the mask head as in Mask R-CNN.

    Args:
        vlm_logit_scale (float): Multiplier of the VLM's cosine similarities (the official
            ``clip_temp``: 50 on OV-LVIS, 75 on OV-COCO).
        base_alpha (float): VLM weight in the fusion for the base classes, in [0, 1] (official
            ``alpha``: 0.35 on OV-LVIS, 0.1 on OV-COCO).
        novel_beta (float): VLM weight for the novel classes, in [0, 1] (official ``beta``:
            0.65 on OV-LVIS, 0.8 on OV-COCO).
        **kwargs: ``StandardRoIHead`` arguments. ``bbox_head`` must be an ``FVLMBBoxHead``; a
            ``mask_head`` must be class-agnostic.
    """

    def __init__(self, vlm_logit_scale: float, base_alpha: float, novel_beta: float,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if vlm_logit_scale <= 0:
            raise ValueError(f'{name}.vlm_logit_scale: expected a positive number, got '
                             f'{vlm_logit_scale}')
        for field, weight in (('base_alpha', base_alpha), ('novel_beta', novel_beta)):
            if not 0 <= weight <= 1:
                raise ValueError(f'{name}.{field}: expected a weight in [0, 1], got {weight}')
        if not isinstance(getattr(self, 'bbox_head', None), FVLMBBoxHead):
            raise ValueError(f"{name}.bbox_head: expected type='FVLMBBoxHead', got "
                             f'{type(getattr(self, "bbox_head", None)).__name__}')
        if self.with_mask and not self.mask_head.class_agnostic:
            raise ValueError(f'{name}.mask_head: expected class_agnostic=True (novel classes '
                             'have no trained mask channel)')
        self.vlm_logit_scale = vlm_logit_scale
        self.base_alpha = base_alpha
        self.novel_beta = novel_beta

    @property
    def classifier(self) -> TextEmbeddingClassifier:
        """The box head's text-embedding classifier."""
        return self.bbox_head.classifier

    def loss(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
             batch_data_samples: SampleList) -> dict:
        """``StandardRoIHead.loss`` on base-class ground truth only.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            rpn_results_list (InstanceList): B proposal sets.
            batch_data_samples (SampleList): B samples with ``gt_instances``.

        Returns:
            dict: The losses.
        """
        labels = torch.cat([sample.gt_instances.labels for sample in batch_data_samples])
        is_novel = self.classifier.novel_mask[labels]
        if is_novel.any():
            raise ValueError(f'gt_instances: the novel class labels '
                             f'{sorted(set(labels[is_novel].tolist()))} are in the ground truth; '
                             'F-VLM trains on base classes only: expected base-only annotations '
                             '(the *_ov_base.json of tools/dataset_converters/prepare_ov_*.py)')
        return super().loss(x, rpn_results_list, batch_data_samples)

    def _bbox_forward(self, x: Tuple[Tensor], rois: Tensor) -> dict:
        """``StandardRoIHead._bbox_forward`` with the maps in float32 (``float32_maps``)."""
        return super()._bbox_forward(float32_maps(x), rois)

    def _mask_forward(self, x: Tuple[Tensor], *args, **kwargs) -> dict:
        """``StandardRoIHead._mask_forward`` with the maps in float32 (``float32_maps``)."""
        return super()._mask_forward(float32_maps(x), *args, **kwargs)

    def vlm_scores(self, vlm_embeddings: Tensor) -> Tensor:
        """The VLM's probabilities of the classes and background.

        Args:
            vlm_embeddings (Tensor): VLM region embeddings, shape (K, D).

        Returns:
            Tensor: Softmax over the C classes and background (last), shape (K, C + 1).
        """
        logits = cosine_logits(vlm_embeddings, self.classifier.class_and_background_embeddings(),
                               self.vlm_logit_scale)
        return logits.softmax(dim=-1)

    def predict(self,
                x: Tuple[Tensor],
                rpn_results_list: InstanceList,
                batch_data_samples: SampleList,
                rescale: bool = False,
                *,
                vlm_embeddings: Tensor) -> InstanceList:
        """Boxes (and masks) scored by the fusion of the detection and VLM scores.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            rpn_results_list (InstanceList): B proposal sets, ``bboxes`` of shape (K_i, 4).
            batch_data_samples (SampleList): B samples (their metainfo is used).
            rescale (bool): Return boxes and masks in original image pixels. Defaults to False.
            vlm_embeddings (Tensor): The VLM region embedding of every proposal, images then
                proposals in order, shape (sum K_i, D).

        Returns:
            InstanceList: B results with ``bboxes`` (N_i, 4), ``scores`` (N_i,), ``labels``
            (N_i,) and, with a mask head, ``masks`` (N_i, H, W).
        """
        batch_img_metas = [data_sample.metainfo for data_sample in batch_data_samples]
        # The mask branch rescales boxes and masks together (as StandardRoIHead.predict).
        results_list = self.predict_bbox(
            x, batch_img_metas, rpn_results_list, rcnn_test_cfg=self.test_cfg,
            rescale=rescale and not self.with_mask, vlm_embeddings=vlm_embeddings)
        if self.with_mask:
            results_list = self.predict_mask(x, batch_img_metas, results_list, rescale=rescale)
        return results_list

    def predict_bbox(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     rpn_results_list: InstanceList,
                     rcnn_test_cfg: ConfigType,
                     rescale: bool = False,
                     *,
                     vlm_embeddings: Tensor) -> InstanceList:
        """Detections scored by the F-VLM fusion, after NMS.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            batch_img_metas (List[dict]): B image metas.
            rpn_results_list (InstanceList): B proposal sets, ``bboxes`` of shape (K_i, 4).
            rcnn_test_cfg (ConfigType): ``score_thr``, ``nms`` and ``max_per_img``.
            rescale (bool): Return boxes in original image pixels. Defaults to False.
            vlm_embeddings (Tensor): See :meth:`predict`, shape (sum K_i, D).

        Returns:
            InstanceList: B results with ``bboxes`` (N_i, 4), ``scores`` (N_i,) and ``labels``
            (N_i,).
        """
        num_proposals = [len(results) for results in rpn_results_list]
        if vlm_embeddings.shape[0] != sum(num_proposals):
            raise ValueError(f'vlm_embeddings: expected one per proposal ({sum(num_proposals)}), '
                             f'got shape {tuple(vlm_embeddings.shape)}')
        # Without a test config, mmdet's box head returns every proposal's regressed box
        # (clipped to the image, in input pixels) and its softmax over the classes and
        # background, in proposal order, without NMS.
        per_roi = super().predict_bbox(x, batch_img_metas, rpn_results_list, rcnn_test_cfg=None,
                                       rescale=False)
        num_classes = self.classifier.num_classes
        vlm_scores = self.vlm_scores(vlm_embeddings).split(num_proposals)
        results_list = []
        for rois, image_vlm_scores, img_meta in zip(per_roi, vlm_scores, batch_img_metas):
            fused = fvlm_fuse_scores(rois.scores[:, :num_classes],
                                     image_vlm_scores[:, :num_classes].to(rois.scores),
                                     self.classifier.novel_mask, self.base_alpha,
                                     self.novel_beta)
            # multiclass_nms ignores the last (background) column.
            scores = torch.cat([fused, rois.scores[:, num_classes:]], dim=1)
            bboxes = rois.bboxes
            if rescale and len(bboxes):
                bboxes = scale_boxes(bboxes, [1 / s for s in img_meta['scale_factor']])
            det_bboxes, det_labels = multiclass_nms(bboxes, scores, rcnn_test_cfg.score_thr,
                                                    rcnn_test_cfg.nms, rcnn_test_cfg.max_per_img)
            results_list.append(InstanceData(bboxes=det_bboxes[:, :-1], scores=det_bboxes[:, -1],
                                             labels=det_labels))
        return results_list
