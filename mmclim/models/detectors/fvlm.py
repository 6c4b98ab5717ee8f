# Copyright (c) mmclim contributors. All rights reserved.
from typing import Tuple

from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from ..backbones.clip_vit_pyramid import CLIPViTPyramidBackbone
from ..roi_heads.fvlm_roi_head import FVLMRoIHead


@MODELS.register_module()
class FVLM(MaskRCNN):
    """F-VLM: open-vocabulary Mask R-CNN on a frozen vision-language model (Kuo et al., ICLR 2023).

    The backbone (:class:`~mmclim.models.backbones.CLIPViTPyramidBackbone`) is the frozen CLIP
    image tower; it returns the pyramid maps and, last, the CLIP dense map in the text-embedding
    space. The detector separates them: the maps go through the trainable neck to the RPN and
    the RoI head, as in Mask R-CNN; the dense map only serves prediction, where the RoI head
    (:class:`~mmclim.models.roi_heads.FVLMRoIHead`) fuses its detection scores with the VLM's
    scores of the same boxes. Training is Mask R-CNN's, on base classes.

    Args:
        backbone (dict): A ``CLIPViTPyramidBackbone`` config.
        rpn_head (dict): RPN head config.
        roi_head (dict): An ``FVLMRoIHead`` config.
        train_cfg (dict): ``rpn``, ``rpn_proposal`` and ``rcnn`` training configs.
        test_cfg (dict): ``rpn`` and ``rcnn`` test configs.
        neck (dict): The neck taking the backbone's pyramid maps: ``SimplePyramidFPN`` for a
            ViT, ``FPN`` for a ModifiedResNet.
        data_preprocessor (dict, optional): Normalises with CLIP's mean and std. Defaults to None.
        init_cfg (dict or List[dict], optional): mmengine initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: ConfigType,
                 rpn_head: ConfigType,
                 roi_head: ConfigType,
                 train_cfg: ConfigType,
                 test_cfg: ConfigType,
                 neck: ConfigType,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(backbone=backbone, rpn_head=rpn_head, roi_head=roi_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, neck=neck,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        for field, module, expected in (('backbone', self.backbone, CLIPViTPyramidBackbone),
                                        ('roi_head', self.roi_head, FVLMRoIHead)):
            if not isinstance(module, expected):
                raise ValueError(f"{type(self).__name__}.{field}: expected "
                                 f"type='{expected.__name__}', got {type(module).__name__}")

    def extract_feat_and_vlm_map(self, batch_inputs: Tensor) -> Tuple[Tuple[Tensor], Tensor]:
        """Neck maps for the detector and the frozen VLM's dense map.

        Args:
            batch_inputs (Tensor): Normalised images of shape (B, 3, H, W).

        Returns:
            Tuple[Tuple[Tensor], Tensor]: The neck's maps, each of shape (B, C, H_l, W_l), and
            the dense map of shape (B, D, H/s, W/s), s the backbone's ``dense_stride``.
        """
        *pyramid, vlm_map = self.backbone(batch_inputs)
        return self.neck(tuple(pyramid)), vlm_map

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """Neck maps for the detector (the dense map is dropped: training does not use it).

        Args:
            batch_inputs (Tensor): Normalised images of shape (B, 3, H, W).

        Returns:
            Tuple[Tensor]: The neck's maps, each of shape (B, C, H_l, W_l).
        """
        return self.extract_feat_and_vlm_map(batch_inputs)[0]

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections with F-VLM's fused scores.

        Args:
            batch_inputs (Tensor): Normalised images of shape (B, 3, H, W).
            batch_data_samples (SampleList): B samples (their metainfo is used).
            rescale (bool): Return boxes and masks in original image pixels. Defaults to True.

        Returns:
            SampleList: The samples with ``pred_instances`` (``bboxes`` (N_i, 4), ``scores``
            (N_i,), ``labels`` (N_i,) and, with a mask head, ``masks`` (N_i, H, W)).
        """
        feats, vlm_map = self.extract_feat_and_vlm_map(batch_inputs)
        rpn_results_list = self.rpn_head.predict(feats, batch_data_samples, rescale=False)
        results_list = self.roi_head.predict(feats, rpn_results_list, batch_data_samples,
                                             rescale=rescale, vlm_map=vlm_map,
                                             vlm_stride=self.backbone.dense_stride)
        return self.add_pred_to_datasample(batch_data_samples, results_list)
