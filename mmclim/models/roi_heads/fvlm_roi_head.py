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

from .fvlm_scores import (CLIP_TEMPERATURE, FVLM_BASE_ALPHA, FVLM_NOVEL_BETA, fvlm_fuse_scores,
                          vlm_region_scores)
from .text_embedding_classifier import TextEmbeddingClassifier


@MODELS.register_module()
class FVLMRoIHead(StandardRoIHead):
    """Mask R-CNN RoI head of F-VLM: class-agnostic boxes and masks, text-embedding classifier,
    and detection scores fused with a frozen VLM's region scores at test time.

    Training is that of ``StandardRoIHead``; the bbox head's classifier
    (:class:`~.TextEmbeddingClassifier`) masks the novel classes, and ground truth of a novel
    class is an error (the training file must be base-only).

    At test time every RoI is scored by the bbox head (softmax over classes and background) and
    regressed to one class-agnostic box. The VLM scores the same boxes, after regression and
    before NMS (:func:`~.fvlm_scores.vlm_region_scores` on the frozen backbone's dense map, with
    the classifier's text embeddings), so each output box carries the fused score of the very box
    that is output. The scores are fused per class (:func:`~.fvlm_scores.fvlm_fuse_scores`; the
    novel classes are the classifier's), then NMS and the mask head run as in Mask R-CNN.

    Args:
        vlm_temperature (float): Temperature of the VLM's softmax over classes. Defaults to
            0.01, CLIP's logit scale of 100.
        base_alpha (float): VLM weight in the fusion for the base classes, in [0, 1]. Defaults
            to 0.35 (F-VLM, OV-LVIS).
        novel_beta (float): VLM weight in the fusion for the novel classes, in [0, 1]. Defaults
            to 0.65 (F-VLM, OV-LVIS).
        **kwargs: ``StandardRoIHead`` arguments. ``bbox_head`` must regress class-agnostic boxes
            with a ``TextEmbeddingClassifier`` as ``cls_predictor_cfg``; a ``mask_head`` must be
            class-agnostic.
    """

    def __init__(self,
                 vlm_temperature: float = CLIP_TEMPERATURE,
                 base_alpha: float = FVLM_BASE_ALPHA,
                 novel_beta: float = FVLM_NOVEL_BETA,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if vlm_temperature <= 0:
            raise ValueError(f'{name}.vlm_temperature: expected a positive number, got '
                             f'{vlm_temperature}')
        for field, weight in (('base_alpha', base_alpha), ('novel_beta', novel_beta)):
            if not 0 <= weight <= 1:
                raise ValueError(f'{name}.{field}: expected a weight in [0, 1], got {weight}')
        if not self.with_bbox or not getattr(self.bbox_head, 'reg_class_agnostic', False):
            raise ValueError(f'{name}.bbox_head: expected a bbox head with '
                             'reg_class_agnostic=True (novel classes have no trained regressor)')
        if not isinstance(getattr(self.bbox_head, 'fc_cls', None), TextEmbeddingClassifier):
            raise ValueError(f"{name}.bbox_head.cls_predictor_cfg: expected "
                             f"type='TextEmbeddingClassifier', got "
                             f'{type(getattr(self.bbox_head, "fc_cls", None)).__name__}')
        if self.with_mask and not self.mask_head.class_agnostic:
            raise ValueError(f'{name}.mask_head: expected class_agnostic=True (novel classes '
                             'have no trained mask channel)')
        self.vlm_temperature = vlm_temperature
        self.base_alpha = base_alpha
        self.novel_beta = novel_beta

    @property
    def classifier(self) -> TextEmbeddingClassifier:
        """The bbox head's text-embedding classifier."""
        return self.bbox_head.fc_cls

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

    def predict(self,
                x: Tuple[Tensor],
                rpn_results_list: InstanceList,
                batch_data_samples: SampleList,
                rescale: bool = False,
                *,
                vlm_map: Tensor,
                vlm_stride: int) -> InstanceList:
        """Boxes (and masks) scored by the fusion of the detection and VLM scores.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            rpn_results_list (InstanceList): B proposal sets, ``bboxes`` of shape (K_i, 4).
            batch_data_samples (SampleList): B samples (their metainfo is used).
            rescale (bool): Return boxes and masks in original image pixels. Defaults to False.
            vlm_map (Tensor): The frozen VLM's dense map in the text-embedding space, shape
                (B, D, H/s, W/s).
            vlm_stride (int): Input pixels per cell s of ``vlm_map``.

        Returns:
            InstanceList: B results with ``bboxes`` (N_i, 4), ``scores`` (N_i,), ``labels``
            (N_i,) and, with a mask head, ``masks`` (N_i, H, W).
        """
        batch_img_metas = [data_sample.metainfo for data_sample in batch_data_samples]
        # The mask branch rescales boxes and masks together (as StandardRoIHead.predict).
        results_list = self.predict_bbox(
            x, batch_img_metas, rpn_results_list, rcnn_test_cfg=self.test_cfg,
            rescale=rescale and not self.with_mask, vlm_map=vlm_map, vlm_stride=vlm_stride)
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
                     vlm_map: Tensor,
                     vlm_stride: int) -> InstanceList:
        """Detections scored by the F-VLM fusion, after NMS.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            batch_img_metas (List[dict]): B image metas.
            rpn_results_list (InstanceList): B proposal sets, ``bboxes`` of shape (K_i, 4).
            rcnn_test_cfg (ConfigType): ``score_thr``, ``nms`` and ``max_per_img``.
            rescale (bool): Return boxes in original image pixels. Defaults to False.
            vlm_map (Tensor): See :meth:`predict`, shape (B, D, H/s, W/s).
            vlm_stride (int): See :meth:`predict`.

        Returns:
            InstanceList: B results with ``bboxes`` (N_i, 4), ``scores`` (N_i,) and ``labels``
            (N_i,).
        """
        # Without a test config, mmdet's bbox head returns each RoI's regressed box (clipped to
        # the image, in input pixels) and its softmax over the classes and background, no NMS.
        per_roi = super().predict_bbox(x, batch_img_metas, rpn_results_list, rcnn_test_cfg=None,
                                       rescale=False)
        num_classes = self.classifier.num_classes
        vlm_scores = vlm_region_scores(vlm_map, [rois.bboxes for rois in per_roi], vlm_stride,
                                       self.classifier.text_embeddings, self.vlm_temperature)
        results_list = []
        for rois, image_vlm_scores, img_meta in zip(
                per_roi, vlm_scores.split([len(rois) for rois in per_roi]), batch_img_metas):
            fused = fvlm_fuse_scores(rois.scores[:, :num_classes], image_vlm_scores,
                                     self.classifier.novel_mask, self.base_alpha, self.novel_beta)
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
