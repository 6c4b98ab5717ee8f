# Copyright (c) mmclim contributors. All rights reserved.
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import Scale
from mmdet.models.dense_heads import CenterNetUpdateHead
from mmdet.models.losses import GaussianFocalLoss
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, InstanceList, OptInstanceList, reduce_mean
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

# CenterNet2's heatmap focal loss as the official OV-LVIS config sets it
# (detic_centernet2_r50_fpn_4x_lvis_boxsup.py L61-70): alpha 0.25 balances positives and
# negatives, then pos_weight 0.5 and neg_weight 0.5 scale them; focal exponent gamma 2 and
# heatmap exponent beta 4.
HM_FOCAL_ALPHA = 0.25
HM_POS_WEIGHT = 0.5
HM_NEG_WEIGHT = 0.5
# mmdet's GaussianFocalLoss computes the same terms, with its ``alpha`` the focal exponent
# (CenterNet2 gamma), its ``gamma`` the heatmap exponent (CenterNet2 beta), and the balance
# folded into its weights.
DEFAULT_LOSS_CLS = dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0,
                        pos_weight=HM_FOCAL_ALPHA * HM_POS_WEIGHT,
                        neg_weight=(1 - HM_FOCAL_ALPHA) * HM_NEG_WEIGHT, loss_weight=1.0)
# Official config L71: GIoU with eps 1e-6, weight 1.
DEFAULT_LOSS_BBOX = dict(type='GIoULoss', eps=1e-6, loss_weight=1.0)
# CenterNet2 proposals are not clipped to the image (nor are the official ones).
DEFAULT_BBOX_CODER = dict(type='DistancePointBBoxCoder', clip_border=False)
# Negatives predicted above this probability get no loss (official config L69
# ``ignore_high_fp=0.85``; CenterNet2 IGNORE_HIGH_FP in Detic's CenterNet2 configs).
IGNORE_HIGH_FP = 0.85


@MODELS.register_module()
class CenterNetRPNHead(CenterNetUpdateHead):
    """CenterNet2's first stage: a class-agnostic CenterNet proposing boxes for a cascade.

    mmdet's ``CenterNetUpdateHead`` is a single-stage detector head; as an ``rpn_head`` of a
    ``TwoStageDetector`` (Detic's CenterNet2, official ``CenterNetRPNHead``) it needs:

    - **One tower.** CenterNet2 as a proposal network has no classification tower: the
      heatmap and the box distances are both predicted from the 4-convolution box tower
      (``reg_convs``); mmdet's head would also build ``cls_convs``.
    - **Proposals during training.** mmdet's ``forward_single`` returns distances in stride
      units in training mode and in pixels in eval mode, and the inherited ``predict_by_feat``
      decodes them as pixels: ``loss_and_predict`` (training mode) would propose boxes a stride
      too small. Here ``forward`` always returns stride units and :meth:`predict_by_feat`
      multiplies by the stride.
    - **Scores.** A proposal's ``scores`` is the square root of its sigmoid heatmap value
      (CenterNet2 with an agnostic heatmap, and the official head): the objectness that the
      cascade multiplies into its class scores before another square root
      (:class:`~mmclim.models.roi_heads.DeticCascadeRoIHead`). ``score_thr`` applies to the
      sigmoid before the root, as in CenterNet2. ``GaussianFocalLoss`` has no ``use_sigmoid``,
      so ``AnchorFreeHead`` sets ``use_sigmoid_cls=False``; ``CenterNetUpdateHead`` sets it back
      to True after building, so scores are sigmoids (not a softmax over one channel).
    - **The loss of CenterNet2.** The heatmap positives are each box's center cell on the
      levels whose size range holds the box (CenterNet2 without ``MORE_POS``; mmdet adds up to
      9 neighbours per box, kept as ``more_pos=True``); negatives predicted above
      ``ignore_high_fp`` get no loss; an image without boxes gets an all-zero heatmap (mmdet's
      target for it is the class index, 1 here, which would drop its negatives). Labels are
      ignored: every box is an object.

    Loss keys are ``loss_cls`` (heatmap focal loss, positive and negative terms summed; the
    official logs them apart) and ``loss_bbox`` (GIoU); a ``TwoStageDetector`` prefixes
    ``rpn_``.

    Args:
        num_classes (int): Must be 1 (``TwoStageDetector`` sets it). Defaults to 1.
        in_channels (int): Channels of the input maps.
        ignore_high_fp (float, optional): Probability above which a negative location gets no
            loss; None keeps all. Defaults to 0.85.
        more_pos (bool): Use mmdet's extra positives around each center instead of the center
            alone. Defaults to False.
        loss_cls (dict): A ``GaussianFocalLoss`` config. Defaults to the official values.
        loss_bbox (dict): Box loss on decoded boxes. Defaults to GIoU, weight 1.
        bbox_coder (dict): Defaults to ``DistancePointBBoxCoder(clip_border=False)``.
        **kwargs: ``CenterNetUpdateHead`` arguments (``strides``, ``regress_ranges``,
            ``stacked_convs``, ``norm_cfg``, ``conv_bias``, ``test_cfg``, ...).
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 1,
                 ignore_high_fp: Optional[float] = IGNORE_HIGH_FP,
                 more_pos: bool = False,
                 loss_cls: ConfigType = DEFAULT_LOSS_CLS,
                 loss_bbox: ConfigType = DEFAULT_LOSS_BBOX,
                 bbox_coder: ConfigType = DEFAULT_BBOX_CODER,
                 **kwargs) -> None:
        name = type(self).__name__
        if num_classes != 1:
            raise ValueError(f'{name}.num_classes: expected 1 (class-agnostic proposals), got '
                             f'{num_classes}')
        if ignore_high_fp is not None and not 0 < ignore_high_fp <= 1:
            raise ValueError(f'{name}.ignore_high_fp: expected a probability in (0, 1] or None, '
                             f'got {ignore_high_fp}')
        super().__init__(num_classes=num_classes, in_channels=in_channels, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, bbox_coder=bbox_coder, **kwargs)
        if not isinstance(self.loss_cls, GaussianFocalLoss):
            raise ValueError(f"{name}.loss_cls: expected type='GaussianFocalLoss', got "
                             f'{type(self.loss_cls).__name__}')
        if len(self.regress_ranges) != len(self.strides):
            raise ValueError(f'{name}.regress_ranges: expected one range per stride '
                             f'({len(self.strides)}), got {len(self.regress_ranges)}')
        self.ignore_high_fp = ignore_high_fp
        self.more_pos = more_pos

    def _init_layers(self) -> None:
        """The box tower (``reg_convs``) and the predictors; no classification tower."""
        self._init_reg_convs()
        self._init_predictor()

    def forward_single(self, x: Tensor, scale: Scale, stride: int) -> Tuple[Tensor, Tensor]:
        """Heatmap logits and box distances of one level.

        Args:
            x (Tensor): Level map, shape (B, C, H, W).
            scale (Scale): The level's learned scale of the distances.
            stride (int): The level's stride (unused: distances stay in stride units).

        Returns:
            tuple[Tensor, Tensor]: Heatmap logits (B, 1, H, W) and float32 non-negative
            distances to the left, top, right and bottom sides in stride units (B, 4, H, W).
        """
        for conv in self.reg_convs:
            x = conv(x)
        cls_score = self.conv_cls(x)
        bbox_pred = scale(self.conv_reg(x)).float().clamp(min=0)
        return cls_score, bbox_pred

    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        score_factors: Optional[List[Tensor]] = None,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> InstanceList:
        """Proposals: ``BaseDenseHead.predict_by_feat`` on the distances in pixels, with the
        square root of the heatmap probability as score.

        Per level, the ``nms_pre`` locations of highest probability above ``score_thr``; then
        NMS (``nms``) and the ``max_per_img`` best.

        Args:
            cls_scores (List[Tensor]): Heatmap logits per level, each (B, 1, H_l, W_l).
            bbox_preds (List[Tensor]): Distances in stride units per level, each
                (B, 4, H_l, W_l).
            score_factors (List[Tensor], optional): Unused. Defaults to None.
            batch_img_metas (List[dict], optional): B image metas. Defaults to None.
            cfg (ConfigDict, optional): ``score_thr``, ``nms_pre``, ``nms``, ``max_per_img``,
                ``min_bbox_size``. Defaults to None (``test_cfg``).
            rescale (bool): Boxes in original image pixels. Defaults to False.
            with_nms (bool): Defaults to True.

        Returns:
            InstanceList: B results with ``bboxes`` (K_i, 4), ``scores`` (K_i,) in (0, 1),
            sorted in decreasing order, and ``labels`` (K_i,), all 0.
        """
        bbox_preds = [pred * stride for pred, stride in zip(bbox_preds, self._stride_values())]
        results_list = super().predict_by_feat(cls_scores, bbox_preds, score_factors,
                                               batch_img_metas, cfg, rescale, with_nms)
        for results in results_list:
            results.scores = results.scores.sqrt()
        return results_list

    def _stride_values(self) -> List[float]:
        """One stride per level (the first of a (w, h) pair)."""
        return [stride[0] if isinstance(stride, Sequence) else stride for stride in self.strides]

    def _get_targets_single(self, gt_instances: InstanceData, points: Tensor,
                            regress_ranges: Tensor, strides: Tensor) -> Tuple[Tensor, Tensor]:
        """``CenterNetUpdateHead._get_targets_single``, with an all-zero heatmap for an image
        without boxes.

        Args:
            gt_instances (InstanceData): ``bboxes`` (G, 4) and ``labels`` (G,) of one image.
            points (Tensor): Points of all levels, shape (M, 2).
            regress_ranges (Tensor): Each point's size range, shape (M, 2).
            strides (Tensor): Each point's stride, shape (M,).

        Returns:
            tuple[Tensor, Tensor]: Heatmap (M, 1) and distances in stride units (M, 4), -1 or
            less where a point regresses no box.
        """
        if len(gt_instances) == 0:
            return points.new_zeros((points.shape[0], self.num_classes)), \
                points.new_full((points.shape[0], 4), -1)
        return super()._get_targets_single(gt_instances, points, regress_ranges, strides)

    def _center_pos_inds(self, batch_gt_instances: InstanceList,
                         featmap_sizes: List[torch.Size]) -> Tensor:
        """Heatmap positives: each box's center cell on the levels whose size range holds the
        box's half-diagonal (CenterNet2's ``_get_label_inds``).

        Args:
            batch_gt_instances (InstanceList): B images' ``bboxes`` (G_i, 4).
            featmap_sizes (List[torch.Size]): (H_l, W_l) per level.

        Returns:
            Tensor: Indices into the flattened locations (levels, then images, then rows and
            columns), shape (P,).
        """
        num_imgs = len(batch_gt_instances)
        device = batch_gt_instances[0].bboxes.device
        inds = []
        level_start = 0
        for (height, width), stride, (low, high) in zip(featmap_sizes, self._stride_values(),
                                                        self.regress_ranges):
            for img_id, gt_instances in enumerate(batch_gt_instances):
                boxes = gt_instances.bboxes
                half_diagonal = (boxes[:, 2:] - boxes[:, :2]).pow(2).sum(dim=1).sqrt() / 2
                cared = (half_diagonal >= low) & (half_diagonal <= high)
                centers = (boxes[cared, :2] + boxes[cared, 2:]) / 2
                col = (centers[:, 0] / stride).floor().long().clamp(0, width - 1)
                row = (centers[:, 1] / stride).floor().long().clamp(0, height - 1)
                inds.append(level_start + img_id * height * width + row * width + col)
            level_start += num_imgs * height * width
        return torch.cat(inds) if inds else torch.zeros(0, dtype=torch.long, device=device)

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> Dict[str, Tensor]:
        """Heatmap focal loss and GIoU loss, as CenterNet2's proposal network.

        Args:
            cls_scores (List[Tensor]): Heatmap logits per level, each (B, 1, H_l, W_l).
            bbox_preds (List[Tensor]): Distances in stride units per level, each
                (B, 4, H_l, W_l).
            batch_gt_instances (InstanceList): B images' ``bboxes`` (G_i, 4); labels ignored.
            batch_img_metas (List[dict]): B image metas.
            batch_gt_instances_ignore (OptInstanceList): Unused. Defaults to None.

        Returns:
            Dict[str, Tensor]: ``loss_cls`` and ``loss_bbox``.
        """
        num_imgs = cls_scores[0].shape[0]
        featmap_sizes = [score.shape[-2:] for score in cls_scores]
        points = self.prior_generator.grid_priors(featmap_sizes, dtype=bbox_preds[0].dtype,
                                                  device=bbox_preds[0].device)
        flat_cls_scores = torch.cat([score.permute(0, 2, 3, 1).reshape(-1, 1)
                                     for score in cls_scores])
        flat_bbox_preds = torch.cat([pred.permute(0, 2, 3, 1).reshape(-1, 4)
                                     for pred in bbox_preds])
        flat_points = torch.cat([level.repeat(num_imgs, 1) for level in points])
        agnostic = [InstanceData(bboxes=gt.bboxes,
                                 labels=torch.zeros_like(gt.labels)) for gt in batch_gt_instances]
        heatmaps, bbox_targets = self.get_targets(points, agnostic)

        if self.more_pos:
            pos_inds, _ = self.add_cls_pos_inds(flat_points, flat_bbox_preds,
                                                flat_points.new_tensor(featmap_sizes), agnostic)
            if pos_inds is None:
                pos_inds = torch.zeros(0, dtype=torch.long, device=flat_points.device)
        else:
            pos_inds = self._center_pos_inds(agnostic, featmap_sizes)
        num_pos = max(reduce_mean(flat_points.new_tensor(float(len(pos_inds)))), 1.0)

        probs = flat_cls_scores.float().sigmoid().clamp(min=self.sigmoid_clamp,
                                                        max=1 - self.sigmoid_clamp)
        if self.ignore_high_fp is not None:
            # GaussianFocalLoss weighs a negative by (1 - heatmap) ** gamma: a heatmap of 1
            # drops it. Positives are scored through pos_inds and keep their loss.
            heatmaps = torch.where(probs.detach() >= self.ignore_high_fp,
                                   torch.ones_like(heatmaps), heatmaps)
        loss_cls = self.loss_cls(probs, heatmaps, pos_inds=pos_inds,
                                 pos_labels=torch.zeros_like(pos_inds), avg_factor=num_pos)

        pos_bbox_inds = torch.nonzero(bbox_targets.max(dim=1)[0] >= 0).squeeze(1)
        num_pos_bbox = max(reduce_mean(flat_points.new_tensor(float(len(pos_bbox_inds)))), 1.0)
        if len(pos_bbox_inds) > 0:
            pos_points = flat_points[pos_bbox_inds]
            loss_bbox = self.loss_bbox(
                self.bbox_coder.decode(pos_points, flat_bbox_preds[pos_bbox_inds]),
                self.bbox_coder.decode(pos_points, bbox_targets[pos_bbox_inds]),
                avg_factor=num_pos_bbox)
        else:
            loss_bbox = flat_bbox_preds.sum() * 0
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)
