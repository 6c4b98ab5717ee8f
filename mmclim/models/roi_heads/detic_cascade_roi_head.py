# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.utils import empty_instances
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmdet.utils import ConfigType, InstanceList, MultiConfig
from mmengine.structures import InstanceData
from torch import Tensor

from mmclim.models.utils.box_pool import float32_maps

# The stage whose samples train the single mask head (detectron2's cascade, as Detic and the
# official DeticRoIHead.loss: "D2 only forward stage.0").
MASK_TRAIN_STAGE = 0


@MODELS.register_module()
class DeticCascadeRoIHead(CascadeRoIHead):
    """The RoI head of Detic's CenterNet2 (OV-LVIS): mmdet's ``CascadeRoIHead`` scored as
    CenterNet2, with one mask head, and region embeddings for the caption branches.

    Differences from ``CascadeRoIHead`` (all from CenterNet2 / Detic, as the official
    ``DeticRoIHead``):

    - **Test scores.** Each stage's head scores the RoIs with its activation (sigmoid for
      ``DeticSigmoidClassLoss``, via ``loss_cls.get_activation``; softmax for a plain head);
      the score is the mean of the three stages' probabilities (mmdet averages the logits and
      activates once) and, with ``mult_proposal_score``, ``sqrt(mean * objectness)`` where the
      objectness is the proposal's ``scores`` (:class:`~mmclim.models.dense_heads
      .CenterNetRPNHead`: already the square root of the heatmap probability). The last
      stage's boxes then go through mmdet's ``multiclass_nms``.
    - **One mask head.** ``mask_head`` and ``mask_roi_extractor`` are single configs built
      once (mmdet builds one per stage and averages the masks): trained on the first stage's
      samples, run once on the final boxes at test time.
    - **Float32 RoIAlign.** Box and mask RoIs are pooled from float32 maps under autocast
      (:func:`~mmclim.models.utils.float32_maps`).

    :meth:`region_embeddings` serves the caption and tag losses (the official
    ``DeticRoIHead.run_ovd``): the given boxes are pooled with every stage's RoI extractor and
    embedded by that stage's box head (``vision_to_language``), each stage's loss weighted by
    its ``stage_loss_weights`` entry.

    Args:
        mult_proposal_score (bool): Multiply the proposal objectness into the test scores
            (CenterNet2 ``MULT_PROPOSAL_SCORE``, always on in the official head). Defaults to
            True.
        **kwargs: ``CascadeRoIHead`` arguments; ``mask_head`` and ``mask_roi_extractor``, if
            given, are single configs.
    """

    def __init__(self, mult_proposal_score: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if len(self.stage_loss_weights) != self.num_stages:
            raise ValueError(f'{type(self).__name__}.stage_loss_weights: expected '
                             f'{self.num_stages} weights (num_stages), got '
                             f'{len(self.stage_loss_weights)}')
        self.mult_proposal_score = mult_proposal_score

    @property
    def bbox_heads(self) -> List[BBoxHead]:
        """The box heads whose classifiers score regions, one per stage."""
        return list(self.bbox_head)

    def init_mask_head(self, mask_roi_extractor: MultiConfig, mask_head: MultiConfig) -> None:
        """Builds one mask head and one mask RoI extractor (the first stage's box extractor
        when None).

        Args:
            mask_roi_extractor (dict, optional): A single RoI extractor config.
            mask_head (dict): A single mask head config.
        """
        name = type(self).__name__
        for field, cfg in (('mask_head', mask_head), ('mask_roi_extractor', mask_roi_extractor)):
            if isinstance(cfg, (list, tuple)):
                raise ValueError(f'{name}.{field}: expected a single config (one mask head for '
                                 f'all stages, as Detic), got a list of {len(cfg)}')
        self.mask_head = MODELS.build(mask_head)
        self.share_roi_extractor = mask_roi_extractor is None
        self.mask_roi_extractor = (self.bbox_roi_extractor[MASK_TRAIN_STAGE]
                                   if mask_roi_extractor is None else
                                   MODELS.build(mask_roi_extractor))

    def _bbox_forward(self, stage: int, x: Tuple[Tensor], rois: Tensor) -> dict:
        """``CascadeRoIHead._bbox_forward`` with the maps in float32 (``float32_maps``)."""
        return super()._bbox_forward(stage, float32_maps(x), rois)

    def _mask_forward(self, stage: int, x: Tuple[Tensor], rois: Tensor) -> dict:
        """The mask head's logits (the same head at every stage).

        Args:
            stage (int): Unused: one mask head.
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            rois (Tensor): Shape (K, 5).

        Returns:
            dict: ``mask_preds`` of shape (K, 1, h, w) for a class-agnostic head.
        """
        maps = float32_maps(x)
        feats = self.mask_roi_extractor(maps[:self.mask_roi_extractor.num_inputs], rois)
        return dict(mask_preds=self.mask_head(feats))

    def mask_loss(self, stage: int, x: Tuple[Tensor], sampling_results: List[SamplingResult],
                  batch_gt_instances: InstanceList) -> dict:
        """The mask loss on the first stage's positive samples; nothing at later stages.

        Args:
            stage (int): The cascade stage.
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            sampling_results (List[SamplingResult]): The stage's samples per image.
            batch_gt_instances (InstanceList): Ground truth with ``masks``.

        Returns:
            dict: ``loss_mask`` (a dict of losses, empty after the first stage) and, at the
            first stage, ``mask_preds``.
        """
        if stage != MASK_TRAIN_STAGE:
            return dict(loss_mask={})
        pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
        mask_results = self._mask_forward(stage, x, pos_rois)
        mask_results.update(self.mask_head.loss_and_target(
            mask_preds=mask_results['mask_preds'], sampling_results=sampling_results,
            batch_gt_instances=batch_gt_instances, rcnn_train_cfg=self.train_cfg[stage]))
        return mask_results

    def predict_mask(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """Masks of the final boxes from the single mask head.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            batch_img_metas (List[dict]): B image metas.
            results_list (InstanceList): B detections with ``bboxes`` (N_i, 4).
            rescale (bool): Masks in original image pixels. Defaults to False.

        Returns:
            InstanceList: The detections with ``masks`` (N_i, H, W) added.
        """
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0:
            return empty_instances(batch_img_metas, mask_rois.device, task_type='mask',
                                   instance_results=results_list,
                                   mask_thr_binary=self.test_cfg.mask_thr_binary)
        mask_preds = self._mask_forward(self.num_stages - 1, x, mask_rois)['mask_preds']
        return self.mask_head.predict_by_feat(
            mask_preds=mask_preds.split([len(res) for res in results_list]),
            results_list=results_list, batch_img_metas=batch_img_metas,
            rcnn_test_cfg=self.test_cfg, rescale=rescale)

    def _stage_scores(self, stage: int, cls_score: Tensor) -> Tensor:
        """One stage's class and background probabilities.

        Args:
            stage (int): The cascade stage.
            cls_score (Tensor): The stage's logits, shape (K, C + 1).

        Returns:
            Tensor: ``loss_cls.get_activation`` for heads with a custom activation, else the
            softmax; shape (K, C + 1).
        """
        bbox_head = self.bbox_head[stage]
        if bbox_head.custom_activation:
            return bbox_head.loss_cls.get_activation(cls_score)
        return F.softmax(cls_score, dim=-1)

    def _refine_roi(self, x: Tuple[Tensor], rois: Tensor, batch_img_metas: List[dict],
                    num_proposals_per_img: Sequence[int], **kwargs) -> tuple:
        """Runs the stages, regressing the RoIs between them; averages the probabilities.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            rois (Tensor): Proposals as RoIs, shape (K, 5).
            batch_img_metas (List[dict]): B image metas.
            num_proposals_per_img (Sequence[int]): K_i per image.
            **kwargs: Passed to ``_bbox_forward``.

        Returns:
            tuple: B RoIs input to the last stage (K_i, 5); B mean probabilities over the
            stages (K_i, C + 1); B last-stage box deltas (K_i, 4 or 4C).
        """
        stage_scores = []
        for stage in range(self.num_stages):
            bbox_results = self._bbox_forward(stage, x, rois, **kwargs)
            scores = self._stage_scores(stage, bbox_results['cls_score'])
            stage_scores.append(scores)
            bbox_preds = bbox_results['bbox_pred']
            if stage < self.num_stages - 1:
                bbox_head = self.bbox_head[stage]
                labels = scores[:, :-1].argmax(dim=1)
                refined = []
                for img_rois, img_labels, img_preds, img_meta in zip(
                        rois.split(num_proposals_per_img), labels.split(num_proposals_per_img),
                        bbox_preds.split(num_proposals_per_img), batch_img_metas):
                    if len(img_rois):
                        boxes = get_box_tensor(bbox_head.regress_by_class(
                            img_rois[:, 1:], img_labels, img_preds, img_meta))
                        img_rois = torch.cat([img_rois[:, :1], boxes], dim=1)
                    refined.append(img_rois)
                rois = torch.cat(refined)
        mean_scores = sum(stage_scores) / len(stage_scores)
        return (rois.split(num_proposals_per_img), mean_scores.split(num_proposals_per_img),
                bbox_preds.split(num_proposals_per_img))

    def predict_bbox(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     rpn_results_list: InstanceList,
                     rcnn_test_cfg: ConfigType,
                     rescale: bool = False,
                     **kwargs) -> InstanceList:
        """Detections with CenterNet2's scores, after NMS.

        Args:
            x (Tuple[Tensor]): Neck maps, each of shape (B, C, H_l, W_l).
            batch_img_metas (List[dict]): B image metas.
            rpn_results_list (InstanceList): B proposal sets, ``bboxes`` (K_i, 4) and, with
                ``mult_proposal_score``, ``scores`` (K_i,).
            rcnn_test_cfg (ConfigType): ``score_thr``, ``nms`` and ``max_per_img``; None
                returns every RoI's box and its (K_i, C + 1) scores without NMS.
            rescale (bool): Boxes in original image pixels. Defaults to False.
            **kwargs: Passed to ``_bbox_forward``.

        Returns:
            InstanceList: B results with ``bboxes`` (N_i, 4), ``scores`` (N_i,) and ``labels``
            (N_i,).
        """
        if self.mult_proposal_score and not all('scores' in res for res in rpn_results_list):
            raise ValueError(f'rpn_results_list: {type(self).__name__}.mult_proposal_score needs '
                             'the proposals\' objectness in "scores" (CenterNetRPNHead sets it)')
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type='bbox',
                                   box_type=self.bbox_head[-1].predict_box_type,
                                   num_classes=self.bbox_head[-1].num_classes,
                                   score_per_cls=rcnn_test_cfg is None)
        rois, cls_scores, bbox_preds = self._refine_roi(
            x, rois, batch_img_metas, [len(boxes) for boxes in proposals], **kwargs)
        if self.mult_proposal_score:
            cls_scores = [(scores * res.scores[:, None].to(scores)).sqrt()
                          for scores, res in zip(cls_scores, rpn_results_list)]
        # Without a test config, mmdet's box head returns every RoI's regressed box (clipped
        # to the image, rescaled if asked) without NMS; its scores re-activate the logits it
        # is given and are replaced here.
        per_roi = self.bbox_head[-1].predict_by_feat(
            rois=rois, cls_scores=cls_scores, bbox_preds=bbox_preds,
            batch_img_metas=batch_img_metas, rcnn_test_cfg=None, rescale=rescale)
        results_list = []
        for results, scores in zip(per_roi, cls_scores):
            if rcnn_test_cfg is None:
                results.scores = scores
                results_list.append(results)
                continue
            det_bboxes, det_labels = multiclass_nms(results.bboxes, scores,
                                                    rcnn_test_cfg.score_thr, rcnn_test_cfg.nms,
                                                    rcnn_test_cfg.max_per_img)
            results_list.append(InstanceData(bboxes=det_bboxes[:, :-1],
                                             scores=det_bboxes[:, -1], labels=det_labels))
        return results_list

    def region_embeddings(self, x: Tuple[Tensor, ...],
                          boxes: List[Tensor]) -> List[Tuple[Tensor, float]]:
        """Text-space embeddings of given boxes at every stage, for the caption and tag losses.

        Each stage pools the boxes with its RoI extractor (float32 maps) and embeds them with
        its box head's ``vision_to_language``; the official applies the caption and tag
        losses at each stage, times the stage's loss weight.

        The boxes are the same at every stage. The official regresses them with each stage's
        head before the next (``refine_bboxes_ovd``), but for the caption loss the refined
        boxes are discarded (``DeticCaption.sample`` returns the ground-truth pseudo boxes at
        every stage), and for the tag loss the next stage re-samples from them (clamped to the
        pseudo region, re-grouped at random): that regression of a max-size proposal is not
        reproduced; the caller's one sampling is pooled at every stage.

        Args:
            x (tuple[Tensor, ...]): Neck maps, each of shape (B, C, H_l, W_l).
            boxes (List[Tensor]): B tensors of shape (n_i, 4), ``(x1, y1, x2, y2)`` in the
                input image's pixels.

        Returns:
            List[tuple[Tensor, float]]: Per stage, the embeddings (sum n_i, D), images in
            order, and the stage's loss weight.
        """
        rois = bbox2roi(boxes)
        maps = float32_maps(x)
        outputs = []
        for stage, (extractor, bbox_head) in enumerate(zip(self.bbox_roi_extractor,
                                                           self.bbox_head)):
            if not callable(getattr(bbox_head, 'vision_to_language', None)):
                raise ValueError(f'{type(self).__name__}.bbox_head[{stage}]: '
                                 f'{type(bbox_head).__name__} has no vision_to_language; '
                                 "expected type='DeticBBoxHead'")
            feats = extractor(maps[:extractor.num_inputs], rois)
            outputs.append((bbox_head.vision_to_language(feats),
                            float(self.stage_loss_weights[stage])))
        return outputs
