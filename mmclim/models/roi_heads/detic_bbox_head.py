# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Optional

import torch
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, InstanceList
from mmengine.structures import InstanceData
from torch import Tensor

from mmclim.structures import read_split_file
from .sigmoid_text_classifier import SigmoidTextClassifier

DEFAULT_LOSS_CLS = dict(type='DeticSigmoidClassLoss', loss_weight=1.0)
# Sigmoid cross-entropy weight of the base classes; the novel classes get 0 (official OV-COCO
# stage-1 config, class_weight: 1 for the 48 base classes, 0 for the others).
BASE_CLASS_WEIGHT = 1.0


def detic_class_weight(novel_mask: Tensor, novel_class_weight: float) -> List[float]:
    """The sigmoid loss's per-class weights: :data:`BASE_CLASS_WEIGHT` for the base classes,
    ``novel_class_weight`` for the novel ones.

    Args:
        novel_mask (Tensor): Bool of shape (C,), True for the novel classes.
        novel_class_weight (float): The novel classes' weight.

    Returns:
        List[float]: C weights.
    """
    return [novel_class_weight if novel else BASE_CLASS_WEIGHT for novel in novel_mask.tolist()]


@MODELS.register_module()
class DeticBBoxHead(ConvFCBBoxHead):
    """Detic's box head: mmdet's ``ConvFCBBoxHead`` with a sigmoid zero-shot classifier.

    The classifier ``fc_cls`` is a :class:`~.SigmoidTextClassifier` (projection to the text
    space, cosine similarity with the class-name embeddings and a zero background embedding,
    fixed logit scale, learned training bias). The regression is class-agnostic. The
    classification loss is :class:`mmclim.models.losses.DeticSigmoidClassLoss` with per-class
    weights derived here from the split file: 1 for base classes and ``novel_class_weight`` for
    novel ones (0: the official OV-COCO ``class_weight`` mask, :func:`detic_class_weight`; kept
    as ``novel_class_weight`` for :func:`mmclim.apis.set_vocabulary`).

    The two official heads are both this class:

    - OV-COCO, R50-C4 (``ovdet`` ``DeticBBoxHead``): ``num_shared_fcs=0``, ``with_avg_pool=True``
      (the res5 map is averaged, then projected to the text space), and a 2-layer regression
      MLP (``num_reg_fcs=1`` of ``fc_out_channels=2048``, then ``fc_reg``);
    - OV-LVIS CenterNet2 (``OriginalDeticBBoxHead``): two shared fully connected layers of 1024.

    :meth:`vision_to_language` is the embedding the caption and tag losses train.

    Args:
        num_classes (int): The number C of classes, base and novel.
        class_embeddings (str): See :class:`~.SigmoidTextClassifier`.
        split_file (str): See :class:`~.SigmoidTextClassifier`.
        clip_model_name (str, optional): The text tower's model, filled in by the detector.
            Defaults to None.
        embed_dim (int, optional): The text tower's embedding size, filled in by the detector.
            Defaults to None.
        logit_scale (float): Multiplier of the cosine similarities (official ``cls_temp`` 25
            on OV-COCO, ``norm_temperature`` 50 on OV-LVIS). Defaults to 25.
        cls_bias (float, optional): Initial learned bias of the training logits (official -20
            on OV-COCO; none on OV-LVIS). Defaults to None.
        novel_class_weight (float): Loss weight of the novel classes' columns (the base ones
            have 1). 0 on OV-COCO (the official class weights); 1 on OV-LVIS, whose official
            head has no class weights, so the rare classes, never boxed in the base-only data,
            are negatives (drawn by the federated loss). Defaults to 0.
        loss_cls (dict): A ``DeticSigmoidClassLoss`` config without ``class_weight``. Defaults
            to ``dict(type='DeticSigmoidClassLoss', loss_weight=1.0)``.
        **kwargs: ``ConvFCBBoxHead`` arguments; ``reg_class_agnostic`` must be True.
    """

    def __init__(self,
                 num_classes: int,
                 class_embeddings: str,
                 split_file: str,
                 clip_model_name: Optional[str] = None,
                 embed_dim: Optional[int] = None,
                 logit_scale: float = 25.0,
                 cls_bias: Optional[float] = None,
                 novel_class_weight: float = 0.0,
                 loss_cls: ConfigType = DEFAULT_LOSS_CLS,
                 **kwargs) -> None:
        name = type(self).__name__
        if kwargs.get('reg_class_agnostic') is not True:
            raise ValueError(f'{name}.reg_class_agnostic: expected True (novel classes have no '
                             f'trained regressor), got {kwargs.get("reg_class_agnostic")}')
        if 'class_weight' in loss_cls:
            raise ValueError(f'{name}.loss_cls.class_weight: derived from split_file (base 1, '
                             f'novel novel_class_weight); remove it from the config')
        novel_mask = read_split_file(split_file).novel_mask()
        if len(novel_mask) != num_classes:
            raise ValueError(f'{name}.num_classes: {num_classes}, but {split_file} lists '
                             f'{len(novel_mask)} base and novel classes')
        class_weight = detic_class_weight(novel_mask, novel_class_weight)
        super().__init__(num_classes=num_classes,
                         loss_cls=dict(loss_cls, class_weight=class_weight), **kwargs)
        self.novel_class_weight = float(novel_class_weight)
        if not self.with_cls:
            raise ValueError(f'{name}.with_cls: expected True, got False')
        # Replaces the linear classifier ConvFCBBoxHead built.
        self.fc_cls = self._build_classifier(
            class_embeddings, split_file, clip_model_name=clip_model_name, embed_dim=embed_dim,
            logit_scale=logit_scale, bias=cls_bias)
        if self.fc_cls.num_classes != num_classes:
            raise ValueError(f'{name}.num_classes: {num_classes}, but {class_embeddings} has '
                             f'{self.fc_cls.num_classes} rows')

    def _build_classifier(self, class_embeddings: str, split_file: str,
                          **kwargs) -> SigmoidTextClassifier:
        """The zero-shot classifier on the ``cls_last_dim`` features (overridden by heads that
        classify differently).

        Args:
            class_embeddings (str): The class-embedding file.
            split_file (str): The split file.
            **kwargs: ``clip_model_name``, ``embed_dim``, ``logit_scale`` and ``bias``.

        Returns:
            SigmoidTextClassifier: The classifier.
        """
        return SigmoidTextClassifier(self.cls_last_dim, class_embeddings, split_file, **kwargs)

    @property
    def classifier(self) -> SigmoidTextClassifier:
        """The zero-shot classifier (``fc_cls``)."""
        return self.fc_cls

    def _cls_features(self, x: Tensor) -> Tensor:
        """The classification branch of ``ConvFCBBoxHead.forward`` up to ``fc_cls``.

        Args:
            x (Tensor): RoI features of shape (N, C_in, h, w).

        Returns:
            Tensor: Shape (N, cls_last_dim).
        """
        for conv in self.shared_convs:
            x = conv(x)
        if self.num_shared_fcs > 0:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
            for fc in self.shared_fcs:
                x = self.relu(fc(x))
        for conv in self.cls_convs:
            x = conv(x)
        if x.dim() > 2:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
        for fc in self.cls_fcs:
            x = self.relu(fc(x))
        return x

    def vision_to_language(self, x: Tensor) -> Tensor:
        """Region embeddings in the text space, not normalised (official
        ``vision_to_language``), for the caption and tag losses.

        Args:
            x (Tensor): RoI features of shape (N, C_in, h, w).

        Returns:
            Tensor: Shape (N, D).
        """
        return self.classifier.embed(self._cls_features(x))

    def refine_bboxes(self, sampling_results: list, bbox_results: dict,
                      batch_img_metas: List[dict]) -> InstanceList:
        """``BBoxHead.refine_bboxes`` keeping the refined ground-truth boxes: mmdet drops the
        ground truth that stage 0 added to its proposals, Detic's cascade keeps it for the next
        stages (official ``DeticBBoxHead.refine_bboxes``: "don't filter gt bboxes like D2").

        Args:
            sampling_results (list): The stage's sampling results (their ``pos_is_gt``).
            bbox_results (dict): ``rois``, ``cls_score``, ``bbox_pred`` and ``bbox_targets``
                of the stage.
            batch_img_metas (List[dict]): Image metas.

        Returns:
            InstanceList: The refined boxes of every RoI of each image.
        """
        none_gt = [InstanceData(pos_is_gt=torch.zeros_like(result.pos_is_gt))
                   for result in sampling_results]
        return super().refine_bboxes(none_gt, bbox_results, batch_img_metas)
