# Copyright (c) mmclim contributors. All rights reserved.
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.config import ConfigDict
from torch import Tensor, nn

from mmclim.structures import sample_cell_groups
from ..losses import CLIMCaptionLoss, caption_ids_from_texts, image_ids_to_tensor
from ..losses.detic_caption_loss import IMAGE_ID_PAD
from ..utils.derived_config import with_derived
from ..utils.max_size_proposal import max_size_proposal

# The keys of one entry of ``caption_branches`` and their defaults.
BRANCH_DEFAULTS = dict(caption=True, tags=False, num_groups=0)
# Official DeticTags sampling_cfg (ovdet detic_w_tags_* configs): the top 128 proposals by
# objectness among those at least 30% inside the pseudo region (intersection over proposal).
DEFAULT_TAG_SAMPLING = dict(topk=128, iof_thr=0.3)


class PseudoRegions(NamedTuple):
    """The pseudo regions of one caption-branch image.

    Attributes:
        boxes (Tensor): Shape (R, 4): the pseudo boxes (one per mosaic cell, or the whole image),
            then the composed group boxes.
        members (List[List[int]]): For each of the R regions, the indices of the pseudo boxes
            (cells) it covers: ``[i]`` for cell ``i``, several for a group.
        captions (List[str]): One caption per cell (the first ``len(captions)`` regions).
        image_ids (List): The source image id of each cell.
        tags (List[List[int]]): The class labels named by each cell's captions (empty lists
            without tags).
    """
    boxes: Tensor
    members: List[List[int]]
    captions: List[str]
    image_ids: list
    tags: List[List[int]]


@MODELS.register_module()
class DeticDetector(TwoStageDetector):
    """A two-stage open-vocabulary detector trained with box and caption supervision (Detic,
    Zhou et al., ECCV 2022), with CLIM's mosaicked pseudo regions (CLIM paper, "Application to
    Detic & BARON"), as the official ``OVDTwoStageDetector`` of the CLIM code trains it.

    Training takes several batches per iteration, one per *branch* (mmdet's ``MultiBranch``
    packing, :class:`mmclim.models.data_preprocessors.MultiBranchDetDataPreprocessor`):

    - the detection branch (``detection_branch``) trains the RPN and the RoI head on base-class
      boxes as usual (``TwoStageDetector.loss``);
    - each caption branch of ``caption_branches`` runs the backbone on its images, whose
      ``gt_instances`` are pseudo boxes: the whole image of a caption image
      (:class:`mmclim.datasets.transforms.CaptionPseudoBox`) or the cells of a mosaic
      (:class:`mmclim.datasets.transforms.MosaicPseudoRegion`); ``gt_instances.labels`` index
      the per-region metainfo ``region_captions``, ``image_ids`` and ``region_tags``. The pseudo
      boxes (and, with ``num_groups``, rectangles of several mosaic cells) are pooled through
      the RoI head's detection path and projected to the text space by the box head's own
      classifier projection (``roi_head.region_embeddings``), then

      * the caption loss (``caption_loss``: Detic's BCE with a caption queue,
        :class:`~mmclim.models.losses.DeticCaptionLoss`, or CLIM's InfoNCE,
        :class:`~mmclim.models.losses.CLIMCaptionLoss`) meets them with the frozen text tower's
        caption embeddings, positives by source image id;
      * the tag loss (``tag_loss``, :class:`~mmclim.models.losses.DeticTagLoss`) meets Detic's
        max-size box of each pseudo region (the largest of the RPN's top proposals inside it,
        from a no-grad RPN pass with ``train_cfg.rpn_proposal``) with the class embeddings of
        the region's image tags.

    A branch with no image in the batch still returns its losses, as zeros connected to every
    trainable parameter, so the backward is the same on every rank (no DDP hang). Loss keys are
    ``f'{key}_{branch}'``, e.g. ``loss_caption_mosaic_batch``. Given a plain tensor batch (no
    branches), ``loss`` is ``TwoStageDetector``'s: the stage-1 base-class detector is this class
    without ``caption_branches``.

    The text tower (``text_encoder``, a frozen :class:`~mmclim.models.backbones.CLIPTextEncoder`)
    determines the box heads' ``clip_model_name`` and ``embed_dim``, which are filled in here and
    checked against the class embeddings' sidecar; configs do not type them.

    Args:
        backbone (dict): Backbone config.
        rpn_head (dict): RPN head config (mmdet's ``RPNHead`` or
            :class:`~mmclim.models.dense_heads.CenterNetRPNHead`).
        roi_head (dict): A :class:`~mmclim.models.roi_heads.DeticRoIHead` or
            :class:`~mmclim.models.roi_heads.DeticCascadeRoIHead` config whose box heads are
            ``DeticBBoxHead``s without ``clip_model_name`` and ``embed_dim``.
        train_cfg (dict): ``rpn``, ``rpn_proposal`` and ``rcnn`` training configs.
        test_cfg (dict): ``rpn`` and ``rcnn`` test configs.
        neck (dict, optional): Neck config. Defaults to None.
        text_encoder (dict, optional): A ``CLIPTextEncoder`` config; required with caption
            branches. Defaults to None.
        caption_branches (dict, optional): ``{branch: dict(caption=True, tags=False,
            num_groups=0)}``: which losses each caption branch trains, and how many composed
            multi-cell regions each mosaic adds (official: 4 on OV-COCO, 2 on OV-LVIS, 0 for
            single images). Defaults to None (detection only).
        caption_loss (dict, optional): ``DeticCaptionLoss`` or ``CLIMCaptionLoss`` config,
            required when a branch has ``caption=True``. Defaults to None.
        tag_loss (dict, optional): ``DeticTagLoss`` config, required when a branch has
            ``tags=True``. Defaults to None.
        tag_sampling (dict): ``topk`` and ``iof_thr`` of the max-size box. Defaults to
            ``dict(topk=128, iof_thr=0.3)`` (official).
        detection_branch (str): Name of the box-supervised branch. Defaults to ``'det_batch'``.
        data_preprocessor (dict, optional): Data preprocessor config. Defaults to None.
        init_cfg (dict or List[dict], optional): mmengine initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: ConfigType,
                 rpn_head: ConfigType,
                 roi_head: ConfigType,
                 train_cfg: ConfigType,
                 test_cfg: ConfigType,
                 neck: OptConfigType = None,
                 text_encoder: OptConfigType = None,
                 caption_branches: Optional[Dict[str, dict]] = None,
                 caption_loss: OptConfigType = None,
                 tag_loss: OptConfigType = None,
                 tag_sampling: dict = DEFAULT_TAG_SAMPLING,
                 detection_branch: str = 'det_batch',
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        name = type(self).__name__
        branches = self._check_branches(caption_branches or {})
        text_tower = None if text_encoder is None else MODELS.build(text_encoder)
        if branches and text_tower is None:
            raise ValueError(f'{name}.text_encoder: caption branches {sorted(branches)} need a '
                             "text tower, e.g. dict(type='CLIPTextEncoder', ...)")
        if text_tower is not None:
            roi_head = self._with_text_tower(roi_head, text_tower)
        super().__init__(backbone=backbone, neck=neck, rpn_head=rpn_head, roi_head=roi_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not (hasattr(self.roi_head, 'region_embeddings')
                and hasattr(self.roi_head, 'bbox_heads')):
            raise ValueError(f'{name}.roi_head: expected a DeticRoIHead or DeticCascadeRoIHead, '
                             f'got {type(self.roi_head).__name__}')
        self.text_encoder = text_tower
        self.caption_branches = branches
        self.detection_branch = detection_branch
        needs_caption = any(spec['caption'] for spec in branches.values())
        needs_tags = any(spec['tags'] for spec in branches.values())
        for field, needed, cfg in (('caption_loss', needs_caption, caption_loss),
                                   ('tag_loss', needs_tags, tag_loss)):
            if needed and cfg is None:
                raise ValueError(f'{name}.{field}: a caption branch uses it; give its config')
        self.caption_loss = MODELS.build(caption_loss) if needs_caption else None
        self.tag_loss = MODELS.build(tag_loss) if needs_tags else None
        if isinstance(self.caption_loss, CLIMCaptionLoss) and any(
                spec['num_groups'] for spec in branches.values()):
            raise ValueError(f'{name}.caption_branches: num_groups must be 0 with '
                             'CLIMCaptionLoss, which pairs each region with one caption; '
                             'composed regions need DeticCaptionLoss')
        unknown = sorted(set(tag_sampling) - set(DEFAULT_TAG_SAMPLING))
        if unknown:
            raise ValueError(f'{name}.tag_sampling: unknown keys {unknown}; expected '
                             f'{sorted(DEFAULT_TAG_SAMPLING)}')
        self.tag_sampling = dict(DEFAULT_TAG_SAMPLING, **tag_sampling)

    @classmethod
    def _check_branches(cls, caption_branches: Dict[str, dict]) -> Dict[str, dict]:
        branches = {}
        for branch, spec in caption_branches.items():
            unknown = sorted(set(spec) - set(BRANCH_DEFAULTS))
            if unknown:
                raise ValueError(f'{cls.__name__}.caption_branches.{branch}: unknown keys '
                                 f'{unknown}; expected {sorted(BRANCH_DEFAULTS)}')
            spec = dict(BRANCH_DEFAULTS, **spec)
            if not (spec['caption'] or spec['tags']):
                raise ValueError(f'{cls.__name__}.caption_branches.{branch}: trains neither the '
                                 'caption nor the tag loss')
            if not (isinstance(spec['num_groups'], int) and spec['num_groups'] >= 0):
                raise ValueError(f'{cls.__name__}.caption_branches.{branch}.num_groups: expected '
                                 f'an int >= 0, got {spec["num_groups"]!r}')
            branches[branch] = spec
        return branches

    @staticmethod
    def _text_tower_fields(text_tower: nn.Module) -> dict:
        """The box-head fields the text tower determines: its model and embedding size."""
        return dict(clip_model_name=text_tower.model_name, embed_dim=text_tower.embed_dim)

    @classmethod
    def _with_text_tower(cls, roi_head: ConfigType, text_tower: nn.Module) -> ConfigDict:
        """``roi_head`` with the box heads' fields that the text tower determines filled in."""
        derived = cls._text_tower_fields(text_tower)
        field = f'{cls.__name__}.roi_head.bbox_head'
        heads = roi_head['bbox_head']
        if isinstance(heads, (list, tuple)):
            heads = [with_derived(head, f'{field}[{i}]', 'the text tower', **derived)
                     for i, head in enumerate(heads)]
        else:
            heads = with_derived(heads, field, 'the text tower', **derived)
        return ConfigDict(dict(roi_head, bbox_head=heads))

    @property
    def bbox_heads(self) -> List[nn.Module]:
        """The box heads (one, or one per cascade stage), the RoI head's."""
        return self.roi_head.bbox_heads

    def loss(self, batch_inputs: Union[Tensor, Dict[str, Tensor]],
             batch_data_samples: Union[SampleList, Dict[str, SampleList]]) -> Dict[str, Tensor]:
        """Detection losses of the detection branch and caption losses of the others.

        Args:
            batch_inputs (Tensor | dict[str, Tensor]): The images of one batch (B, 3, H, W), or
                per branch.
            batch_data_samples (SampleList | dict[str, SampleList]): The samples, as the inputs.

        Returns:
            dict[str, Tensor]: The detection losses (plain names) and ``f'{key}_{branch}'`` for
            each caption branch.
        """
        if isinstance(batch_inputs, Tensor):
            return super().loss(batch_inputs, batch_data_samples)
        name = type(self).__name__
        unknown = sorted(set(batch_inputs) - {self.detection_branch, *self.caption_branches})
        if unknown:
            raise ValueError(f'{name}: the batch has branches {unknown} that neither '
                             f'detection_branch ({self.detection_branch!r}) nor caption_branches '
                             f'({sorted(self.caption_branches)}) name')
        if self.detection_branch not in batch_inputs:
            raise ValueError(f'{name}: the batch has no image of the detection branch '
                             f'{self.detection_branch!r}; check the sampler\'s source_ratio')
        losses = super().loss(batch_inputs[self.detection_branch],
                              batch_data_samples[self.detection_branch])
        for branch, spec in self.caption_branches.items():
            branch_losses = self.caption_branch_loss(
                batch_inputs.get(branch), batch_data_samples.get(branch, []), spec)
            losses.update({f'{key}_{branch}': value for key, value in branch_losses.items()})
        return losses

    def _zero_losses(self, spec: dict) -> Dict[str, Tensor]:
        """The branch's losses as zeros with a gradient path to every trainable parameter."""
        zero = sum(param.flatten()[0] * 0 for param in self.parameters() if param.requires_grad)
        return {key: zero for key, used in (('loss_caption', spec['caption']),
                                            ('loss_tag', spec['tags'])) if used}

    def _pseudo_regions(self, sample, num_groups: int, branch_tags: bool) -> PseudoRegions:
        """The pseudo regions of one sample, with ``num_groups`` composed regions for a mosaic."""
        instances = sample.gt_instances
        boxes = instances.bboxes
        boxes = boxes.tensor if hasattr(boxes, 'tensor') else boxes
        meta = sample.metainfo
        missing = [key for key in ('region_captions', 'image_ids') if key not in meta]
        if branch_tags and 'region_tags' not in meta:
            missing.append('region_tags')
        if missing:
            raise KeyError(f'{type(self).__name__}: caption sample {meta.get("img_path")} lacks '
                           f'metainfo {missing}; pack them with PackDetInputs(meta_keys=...)')
        index = instances.labels.tolist()
        captions = [meta['region_captions'][i] for i in index]
        image_ids = [meta['image_ids'][i] for i in index]
        tags = [list(meta['region_tags'][i]) for i in index] if branch_tags else [[]] * len(index)
        members = [[i] for i in range(len(index))]
        grid = meta.get('mosaic_grid')
        if num_groups and grid is not None and len(index) == grid[0] * grid[1] > 1:
            groups = sample_cell_groups(tuple(grid), num_groups)
            members += groups
            boxes = torch.cat([boxes, torch.stack([self._union(boxes[g]) for g in groups])])
        return PseudoRegions(boxes, members, captions, image_ids, tags)

    @staticmethod
    def _union(boxes: Tensor) -> Tensor:
        """The smallest box around ``boxes`` (n, 4), shape (4,)."""
        return torch.cat([boxes[:, :2].min(dim=0).values, boxes[:, 2:].max(dim=0).values])

    @torch.no_grad()
    def _proposals(self, x: Tuple[Tensor, ...], samples: SampleList) -> list:
        """The RPN's proposals of caption images, without a graph (``train_cfg.rpn_proposal``).

        Returns:
            list[InstanceData]: Per image, ``bboxes`` (n, 4) in input pixels and ``scores`` (n,).
        """
        outs = self.rpn_head(x)
        return self.rpn_head.predict_by_feat(
            *outs, batch_img_metas=[s.metainfo for s in samples],
            cfg=self.train_cfg.rpn_proposal, rescale=False)

    def _tag_boxes(self, x: Tuple[Tensor, ...], samples: SampleList,
                   regions: List[PseudoRegions]) -> List[Tensor]:
        """Detic's max-size box of each pseudo region; a group's is the union of its cells'."""
        proposals = self._proposals(x, samples)
        tag_boxes = []
        for props, region in zip(proposals, regions):
            cells = region.boxes[:len(region.captions)]
            cell_boxes = max_size_proposal(props.bboxes, props.scores, cells, **self.tag_sampling)
            tag_boxes.append(torch.stack([self._union(cell_boxes[m]) for m in region.members])
                             if region.members else cells.new_zeros(0, 4))
        return tag_boxes

    def caption_branch_loss(self, inputs: Optional[Tensor], samples: SampleList,
                            spec: dict) -> Dict[str, Tensor]:
        """The caption and tag losses of one caption branch.

        Args:
            inputs (Tensor, optional): The branch's images (B, 3, H, W); None when the batch has
                none.
            samples (SampleList): Its B samples with pseudo boxes and per-region metainfo.
            spec (dict): The branch's entry of ``caption_branches``.

        Returns:
            dict[str, Tensor]: ``loss_caption`` and/or ``loss_tag``.
        """
        if inputs is None or len(samples) == 0:
            return self._zero_losses(spec)
        x = self.extract_feat(inputs)
        regions = [self._pseudo_regions(s, spec['num_groups'], spec['tags']) for s in samples]
        if not any(region.members for region in regions):  # every pseudo box filtered out
            return self._zero_losses(spec)
        boxes = [region.boxes for region in regions]
        if spec['tags']:
            tag_boxes = self._tag_boxes(x, samples, regions)
            boxes = [torch.cat(pair) for pair in zip(boxes, tag_boxes)]
        stages = self.roi_head.region_embeddings(x, [b.detach() for b in boxes])
        counts = [len(region.members) for region in regions]
        losses = {}
        if spec['caption']:
            losses['loss_caption'] = self._caption_loss(stages, regions, counts, spec['tags'])
        if spec['tags']:
            losses['loss_tag'] = self._tag_loss(stages, regions, counts)
        return losses

    @staticmethod
    def _split(embeddings: Tensor, counts: Sequence[int], with_tags: bool) -> Tuple[Tensor, ...]:
        """Caption-box rows and, with tags, tag-box rows of the per-image concatenation."""
        per_image = embeddings.split([c * (2 if with_tags else 1) for c in counts])
        caption_rows = torch.cat([rows[:c] for rows, c in zip(per_image, counts)])
        tag_rows = torch.cat([rows[c:] for rows, c in zip(per_image, counts)])
        return caption_rows, tag_rows

    def _caption_loss(self, stages: List[Tuple[Tensor, float]], regions: List[PseudoRegions],
                      counts: List[int], with_tags: bool) -> Tensor:
        captions = [c for region in regions for c in region.captions]
        device = stages[0][0].device
        texts = self.text_encoder(captions).to(device)
        cell_ids = [i for region in regions for i in region.image_ids]
        loss = 0
        if isinstance(self.caption_loss, CLIMCaptionLoss):
            caption_ids = caption_ids_from_texts(captions, device=device)
            for embeddings, weight in stages:
                rows, _ = self._split(embeddings, counts, with_tags)
                loss = loss + weight * self.caption_loss(rows, texts, caption_ids=caption_ids)
            return loss
        text_ids = image_ids_to_tensor(cell_ids).to(device)
        region_ids = self._region_id_rows(regions, device)
        for stage, (embeddings, weight) in enumerate(stages):
            rows, _ = self._split(embeddings, counts, with_tags)
            loss = loss + weight * self.caption_loss(
                rows, texts, region_ids, text_ids, update_queue=stage == len(stages) - 1)
        return loss

    @staticmethod
    def _region_id_rows(regions: List[PseudoRegions], device: torch.device) -> Tensor:
        """Image ids of each region's cells, shape (R, K) padded with ``IMAGE_ID_PAD``."""
        rows = [image_ids_to_tensor([region.image_ids[i] for i in members])
                for region in regions for members in region.members]
        width = max(len(row) for row in rows)
        out = torch.full((len(rows), width), IMAGE_ID_PAD, dtype=torch.int64)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out.to(device)

    def _tag_loss(self, stages: List[Tuple[Tensor, float]], regions: List[PseudoRegions],
                  counts: List[int]) -> Tensor:
        tags = [sorted({t for i in members for t in region.tags[i]})
                for region in regions for members in region.members]
        loss = 0
        for (embeddings, weight), head in zip(stages, self.bbox_heads):
            _, rows = self._split(embeddings, counts, True)
            loss = loss + weight * self.tag_loss(rows, head.classifier.class_embeddings, tags)
        return loss
