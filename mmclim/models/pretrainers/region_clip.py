# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP region-text pre-training (Zhong et al., CVPR 2022) on mmclim's CLIP wrapper."""
import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.structures import BaseDataElement
from torch import Tensor

from mmclim.models.losses import caption_ids_from_texts
from mmclim.models.losses.region_concept_loss import REGIONCLIP_TEMPERATURE
from mmclim.models.utils import box_pool
from mmclim.models.utils.frozen_proposals import FrozenProposalNetwork
from mmclim.models.utils.pseudo_concepts import (CONCEPT_THRESHOLD, TEACHER_TEMPERATURE,
                                                 pseudo_concept_labels)
from mmclim.structures import load_class_embeddings
from .clip_pretrainer import CLIPPretrainer

# How the teacher sees a proposal: RoIAlign on its dense map of the whole image (the official
# RegionCLIP code) or the proposal cropped and resized to its native input (CLIM's account of
# its Table 5 RegionCLIP: "cropped and sent to CLIP's image encoder").
TEACHER_REGION_MODES = ('roi', 'crop')
# The image-level feature of the image-caption loss: the whole (padded) image as one region
# (the official code's global RoI, for its ResNets CLIP's own attention pool over the whole map)
# or CLIP's own embedding of the batch resized to the native input (bilinear, as wusize/CLIM
# src/training/region_clip.py resizes its batch): for a ViT, whose own embedding is its class
# token, not a pooled region.
IMAGE_FEATURE_MODES = ('region', 'global')
# microsoft/RegionCLIP configs/pretrain/RegionCLIP_RN50.yaml MODEL.CLIP.PRETRAIN_SAMPLE_REGIONS:
# the proposals drawn at random per image from the RPN's.
SAMPLED_PROPOSALS = 100
# RegionCLIP's RPN settings (its RPN always runs in eval mode): PRE_NMS_TOPK_TEST 1000 per level
# (Base-RCNN-FPN.yaml), OFFLINE_RPN_NMS_THRESH 0.5 and PRETRAIN_RPN_REGIONS 300 (RN50.yaml), no
# minimum size nor score threshold; the defaults of the ``rpn.test_cfg`` a config leaves out.
REGIONCLIP_PROPOSALS = dict(nms_pre=1000, max_per_img=300,
                            nms=dict(type='nms', iou_threshold=0.5), min_bbox_size=0)


@MODELS.register_module()
class RegionCLIP(CLIPPretrainer):
    """Region-text pre-training of a student CLIP from pseudo-labelled proposals (RegionCLIP).

    Per batch of image-caption pairs:

    1. a frozen class-agnostic RPN (:class:`FrozenProposalNetwork`) proposes regions; up to
       ``num_proposals`` per image are drawn at random;
    2. the frozen teacher CLIP embeds each proposal (``teacher_regions``) and scores it against
       the concept pool (``concept_pool``, embedded by the teacher's text tower): its pseudo
       label is the top concept, kept when the teacher's probability exceeds
       ``concept_threshold`` (:func:`pseudo_concept_labels`);
    3. the student's region features of the kept proposals (:meth:`OpenCLIPRegion.pool_regions`
       on one dense map per image) are trained with the region-concept contrastive loss
       (``loss_concept``, :class:`RegionConceptLoss`) and the distillation of the teacher's
       concept distribution (``loss_distill``, :class:`ConceptDistillLoss`);
    4. the image-level feature is aligned with one of its captions (``loss_caption``, the
       symmetric InfoNCE of :class:`CLIMCaptionLoss` at RegionCLIP's fixed temperature 0.01,
       negatives from every rank); the text tower is frozen, as RegionCLIP's.

    The three losses are summed unweighted, as in RegionCLIP. Evaluation (region
    classification) and weight ensembling are :class:`CLIPPretrainer`'s, shared with CLIM. The
    teacher and the RPN stay in eval mode and get no gradient; their weights are in the state
    dict (rebuilt from their files at every build, so a resume reloads the same).

    Args:
        clip (dict): The student :class:`OpenCLIPRegion` (the trained tower).
        concept_pool (str): ``.npy`` of the (C, D) concept embeddings
            (``tools/dataset_converters/extract_concepts.py``, then
            ``tools/generate_text_embeddings.py`` with the teacher's tower), checked against the
            teacher's model name and embedding size.
        rpn (dict): :class:`FrozenProposalNetwork` arguments: ``config`` (a path, relative to
            the working directory as every path of a config), ``checkpoint`` and ``test_cfg``
            (defaults to :data:`REGIONCLIP_PROPOSALS`: 1000 per level before NMS 0.5, 300 after).
        teacher (dict, optional): The frozen teacher :class:`OpenCLIPRegion`. None: the
            student's config, wholly frozen (RegionCLIP's teacher is the CLIP the student starts
            from). Defaults to None.
        num_proposals (int): Proposals drawn per image from the RPN's. Defaults to
            :data:`SAMPLED_PROPOSALS`.
        teacher_regions (str): ``'roi'`` or ``'crop'`` (:data:`TEACHER_REGION_MODES`).
            Defaults to ``'roi'``.
        teacher_temperature (float): Temperature of the teacher's softmax over the pool.
            Defaults to 0.01.
        concept_threshold (float): Least top probability of a kept proposal. Defaults to 0.1.
        image_feature (str): ``'region'`` or ``'global'`` (:data:`IMAGE_FEATURE_MODES`).
            Defaults to ``'region'``.
        loss_concept (dict, optional): Defaults to ``dict(type='RegionConceptLoss')``.
        loss_distill (dict, optional): Defaults to ``dict(type='ConceptDistillLoss')``.
        loss_caption (dict, optional): Defaults to ``dict(type='CLIMCaptionLoss',
            logit_scale=1 / 0.01)``.
        class_embeddings, use_masks, weight_ensemble, data_preprocessor, init_cfg: See
            :class:`CLIPPretrainer`.
    """

    def __init__(self,
                 clip: dict,
                 concept_pool: str,
                 rpn: dict,
                 teacher: Optional[dict] = None,
                 num_proposals: int = SAMPLED_PROPOSALS,
                 teacher_regions: str = 'roi',
                 teacher_temperature: float = TEACHER_TEMPERATURE,
                 concept_threshold: float = CONCEPT_THRESHOLD,
                 image_feature: str = 'region',
                 loss_concept: Optional[dict] = None,
                 loss_distill: Optional[dict] = None,
                 loss_caption: Optional[dict] = None,
                 class_embeddings: Optional[str] = None,
                 use_masks: bool = True,
                 weight_ensemble: Optional[float] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(clip, class_embeddings=class_embeddings, use_masks=use_masks,
                         weight_ensemble=weight_ensemble, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        name = type(self).__name__
        for field, value, choices in (('teacher_regions', teacher_regions, TEACHER_REGION_MODES),
                                      ('image_feature', image_feature, IMAGE_FEATURE_MODES)):
            if value not in choices:
                raise ValueError(f'{name}.{field}: expected one of {choices}, got {value!r}')
        if isinstance(num_proposals, bool) or not (isinstance(num_proposals, int)
                                                   and num_proposals > 0):
            raise ValueError(f'{name}.num_proposals: expected a positive int, got '
                             f'{num_proposals!r}')
        if not teacher_temperature > 0:
            raise ValueError(f'{name}.teacher_temperature: expected a positive number, got '
                             f'{teacher_temperature!r}')
        if not 0 <= concept_threshold < 1:
            raise ValueError(f'{name}.concept_threshold: expected a probability in [0, 1), got '
                             f'{concept_threshold!r}')
        # RegionCLIP's temperatures are fixed; CLIP's learned scale takes no part.
        self.clip.clip.logit_scale.requires_grad_(False)
        self._original.pop('clip.logit_scale', None)
        if teacher is None:
            teacher = dict(copy.deepcopy(clip), unlocked_vision_blocks=0, freeze_text=True)
        self.teacher = MODELS.build(teacher).requires_grad_(False).eval()
        if self.teacher.embed_dim != self.clip.embed_dim:
            raise ValueError(f'{name}.teacher: its embedding size {self.teacher.embed_dim} '
                             f'({self.teacher.model_name}) differs from the student\'s '
                             f'{self.clip.embed_dim} ({self.clip.model_name}); both meet the '
                             'same concept embeddings')
        if teacher_regions == 'crop' and len(set(self.teacher.native_size)) != 1:
            raise ValueError(f"{name}.teacher_regions='crop' needs a square native input, "
                             f'{self.teacher.model_name} has {self.teacher.native_size}')
        self.concept_pool_file = concept_pool
        self.register_buffer(
            'concept_pool',
            load_class_embeddings(concept_pool, model_name=self.teacher.model_name,
                                  embed_dim=self.teacher.embed_dim, field='model.concept_pool'),
            persistent=False)
        rpn = dict(rpn)
        rpn.setdefault('test_cfg', REGIONCLIP_PROPOSALS)
        self.rpn = FrozenProposalNetwork(**rpn, field='model.rpn')
        self.num_proposals = num_proposals
        self.teacher_regions = teacher_regions
        self.teacher_temperature = teacher_temperature
        self.concept_threshold = concept_threshold
        self.image_feature = image_feature
        self.loss_concept = MODELS.build(loss_concept or dict(type='RegionConceptLoss'))
        self.loss_distill = MODELS.build(loss_distill or dict(type='ConceptDistillLoss'))
        self.loss_caption = MODELS.build(
            loss_caption or dict(type='CLIMCaptionLoss', logit_scale=1 / REGIONCLIP_TEMPERATURE))

    def train(self, mode: bool = True) -> 'RegionCLIP':
        """Set the student's mode; the teacher and the RPN stay in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _pixels(self, inputs: Tensor) -> Tensor:
        """The batch back in 0-255 pixels and the channel order it was loaded in."""
        preprocessor = self.data_preprocessor
        pixels = inputs
        if getattr(preprocessor, '_enable_normalize', False):
            pixels = pixels * preprocessor.std + preprocessor.mean
        if getattr(preprocessor, '_channel_conversion', False):
            pixels = pixels.flip(1)
        return pixels

    def propose(self, inputs: Tensor, data_samples: List[BaseDataElement]) -> List[Tensor]:
        """The RPN's proposals, up to ``num_proposals`` per image drawn at random.

        Args:
            inputs (Tensor): Normalised images, (B, 3, H, W).
            data_samples (list): B samples; ``metainfo['img_shape']`` (before padding) when
                present, else the batch's size.

        Returns:
            list[Tensor]: B tensors of boxes (K_i, 4) in input pixels.
        """
        shapes = [sample.metainfo.get('img_shape', tuple(inputs.shape[-2:]))
                  for sample in data_samples]
        proposals = self.rpn(self._pixels(inputs), shapes)
        return [boxes[torch.randperm(len(boxes), device=boxes.device)[:self.num_proposals]]
                for boxes in proposals]

    @torch.no_grad()
    def teacher_region_features(self, inputs: Tensor, boxes: List[Tensor]) -> Tensor:
        """The teacher's unit embeddings of boxes, as ``teacher_regions`` sets.

        Args:
            inputs (Tensor): Normalised images, (B, 3, H, W).
            boxes (list[Tensor]): B tensors of boxes (K_i, 4) in input pixels.

        Returns:
            Tensor: Shape (sum K_i, D).
        """
        if self.teacher_regions == 'roi':
            return self.teacher.region_features(inputs, boxes, normalize=True)
        crops = box_pool(inputs, boxes, stride=1, output_size=self.teacher.native_size[0])
        if crops.shape[0] == 0:
            return inputs.new_zeros(0, self.teacher.embed_dim)
        return self.teacher.encode_image(crops.to(inputs), normalize=True)

    def _student_features(self, inputs: Tensor, boxes: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Student region features of ``boxes`` and the image-level feature of every image."""
        source = self.clip.region_source(inputs)
        if self.image_feature == 'global':
            native = self.clip.native_size
            images = inputs if tuple(inputs.shape[-2:]) == native else F.interpolate(
                inputs, size=native, mode='bilinear', align_corners=False)
            return self.clip.pool_regions(source, boxes), self.clip.encode_image(images)
        height, width = inputs.shape[-2:]
        whole = inputs.new_tensor([[0, 0, width, height]])
        feats = self.clip.pool_regions(source, [torch.cat([b, whole]) for b in boxes])
        is_image = torch.cat([
            torch.arange(len(b) + 1, device=inputs.device) == len(b) for b in boxes])
        return feats[~is_image], feats[is_image]

    def loss(self, inputs: Tensor, data_samples: List[BaseDataElement]) -> Dict[str, Tensor]:
        """RegionCLIP's three losses on one batch.

        Args:
            inputs (Tensor): Normalised images, (B, 3, H, W).
            data_samples (list): B samples whose ``metainfo['captions']`` lists their captions.

        Returns:
            dict: ``loss_concept``, ``loss_distill``, ``loss_caption`` and, for logging,
            ``num_proposals`` and ``num_regions`` (the pseudo-labelled ones) of this rank.
        """
        captions = self._draw_captions(data_samples)
        proposals = self.propose(inputs, data_samples)
        teacher = pseudo_concept_labels(
            self.teacher_region_features(inputs, proposals), self.concept_pool,
            self.teacher_temperature, self.concept_threshold)
        keep = teacher.keep.split([len(boxes) for boxes in proposals])
        kept = [boxes[mask] for boxes, mask in zip(proposals, keep)]
        region_feats, image_feats = self._student_features(inputs, kept)
        labels = teacher.labels[teacher.keep]
        texts = self.clip.encode_text(captions, normalize=True)
        ids = caption_ids_from_texts(captions, device=inputs.device)
        device = inputs.device
        return dict(
            loss_concept=self.loss_concept(region_feats, self.concept_pool[labels], labels),
            loss_distill=self.loss_distill(region_feats, self.concept_pool,
                                           teacher.probs[teacher.keep]),
            loss_caption=self.loss_caption(image_feats, texts, caption_ids=ids),
            num_proposals=torch.tensor(float(len(teacher.keep)), device=device),
            num_regions=torch.tensor(float(len(labels)), device=device))
