# Copyright (c) mmclim contributors. All rights reserved.
from typing import Tuple

from mmdet.models.detectors import TwoStageDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from ..backbones.clip_vit_pyramid import CLIPViTPyramidBackbone
from ..roi_heads.fvlm_roi_head import FVLMRoIHead
from ..utils.derived_config import with_derived


@MODELS.register_module()
class FVLM(TwoStageDetector):
    """F-VLM: an open-vocabulary two-stage detector on a frozen vision-language model (Kuo et
    al., ICLR 2023), as the official CLIM code builds it (``ovdet/ovdet/models/detectors/
    fvlm.py``).

    The backbone (:class:`~mmclim.models.backbones.CLIPViTPyramidBackbone`) is the frozen CLIP
    image tower; its pyramid maps go through the trainable neck to the RPN and the RoI head, as
    in Faster / Mask R-CNN. At test time the backbone also returns the VLM map; every proposal's
    VLM region embedding is pooled from it (before box regression) and the RoI head
    (:class:`~mmclim.models.roi_heads.FVLMRoIHead`) fuses its detection scores with the VLM's.
    Training never computes the VLM map.

    What the tower determines is read from the built backbone, never typed in a config: the
    neck's ``in_channels`` and ``in_strides``, and the box head's ``clip_model_name`` and
    ``embed_dim`` (checked against the class embeddings' sidecar). The backbone is built first,
    then the neck and RoI head with these filled in.

    Args:
        backbone (dict): A ``CLIPViTPyramidBackbone`` config.
        neck (dict): A ``SimplePyramidFPN`` config without ``in_channels`` and ``in_strides``.
        rpn_head (dict): RPN head config.
        roi_head (dict): An ``FVLMRoIHead`` config whose ``bbox_head`` has no
            ``clip_model_name`` and ``embed_dim``.
        train_cfg (dict): ``rpn``, ``rpn_proposal`` and ``rcnn`` training configs.
        test_cfg (dict): ``rpn`` and ``rcnn`` test configs.
        data_preprocessor (dict, optional): Normalises with CLIP's mean and std. Defaults to None.
        init_cfg (dict or List[dict], optional): mmengine initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: ConfigType,
                 neck: ConfigType,
                 rpn_head: ConfigType,
                 roi_head: ConfigType,
                 train_cfg: ConfigType,
                 test_cfg: ConfigType,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        # TwoStageDetector builds the backbone and the RPN head; the neck and the RoI head need
        # the built backbone.
        super().__init__(backbone=backbone, rpn_head=rpn_head, train_cfg=train_cfg,
                         test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        name = type(self).__name__
        if not isinstance(self.backbone, CLIPViTPyramidBackbone):
            raise ValueError(f"{name}.backbone: expected type='CLIPViTPyramidBackbone', got "
                             f'{type(self.backbone).__name__}')
        self.neck = MODELS.build(with_derived(
            neck, f'{name}.neck', 'the backbone', in_channels=list(self.backbone.out_channels),
            in_strides=list(self.backbone.out_strides)))
        bbox_head = with_derived(
            roi_head['bbox_head'], f'{name}.roi_head.bbox_head', 'the backbone',
            clip_model_name=self.backbone.model_name, embed_dim=self.backbone.embed_dim)
        self.roi_head = MODELS.build(dict(
            roi_head, bbox_head=bbox_head,
            train_cfg=train_cfg.rcnn if train_cfg is not None else None,
            test_cfg=test_cfg.rcnn))
        if not isinstance(self.roi_head, FVLMRoIHead):
            raise ValueError(f"{name}.roi_head: expected type='FVLMRoIHead', got "
                             f'{type(self.roi_head).__name__}')

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """Neck maps for the RPN and RoI head (the VLM map is not computed).

        Args:
            batch_inputs (Tensor): Normalised images of shape (B, 3, H, W).

        Returns:
            Tuple[Tensor, ...]: The neck's maps, each of shape (B, C, H_l, W_l).
        """
        return self.neck(self.backbone(batch_inputs).pyramid)

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections with F-VLM's fused scores.

        Args:
            batch_inputs (Tensor): Normalised images of shape (B, 3, H, W).
            batch_data_samples (SampleList): B samples (their metainfo is used; their
                ``proposals``, if any, replace the RPN's).
            rescale (bool): Return boxes and masks in original image pixels. Defaults to True.

        Returns:
            SampleList: The samples with ``pred_instances`` (``bboxes`` (N_i, 4), ``scores``
            (N_i,), ``labels`` (N_i,) and, with a mask head, ``masks`` (N_i, H, W)).
        """
        features = self.backbone(batch_inputs, with_vlm=True)
        x = self.neck(features.pyramid)
        if batch_data_samples[0].get('proposals', None) is None:
            rpn_results_list = self.rpn_head.predict(x, batch_data_samples, rescale=False)
        else:
            rpn_results_list = [sample.proposals for sample in batch_data_samples]
        # The VLM scores the proposals themselves, before box regression (official
        # FVLMStandardRoIHead._bbox_forward pools the RoIs it classifies).
        vlm_embeddings = self.backbone.vlm_region_embeddings(
            features.vlm, bbox2roi([results.bboxes for results in rpn_results_list]))
        results_list = self.roi_head.predict(x, rpn_results_list, batch_data_samples,
                                             rescale=rescale, vlm_embeddings=vlm_embeddings)
        return self.add_pred_to_datasample(batch_data_samples, results_list)
