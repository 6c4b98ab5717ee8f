# Copyright (c) mmclim contributors. All rights reserved.
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from ..losses import BaronCaptionLoss, image_ids_to_tensor
from ..roi_heads.baron_bbox_head import BaronBBoxHead
from ..utils.bag_of_regions import (BAG_SAMPLING_DEFAULTS, DEFAULT_MAX_PERMS,
                                    BoxPositionalEmbedding, boxes_in_frame, drop_words,
                                    random_permutations, sample_bag)
from .detic import DeticDetector, PseudoRegions

# The official BaronCaption's bag encoding (wusize/ovdet configs/baron/ov_coco/
# baron_caption_faster_rcnn_r50_caffe_c4_90k.py, ovd_cfg): up to 4 orders of each bag's
# regions (sampling_cfg.max_perms), half of the pseudo words dropped (words_drop_ratio), a
# positional embedding of each box in its bag's frame (use_pe).
DEFAULT_BAG_ENCODING = dict(
    max_perms=DEFAULT_MAX_PERMS, word_drop_ratio=0.5, positional_embedding=True)


class Bags(NamedTuple):
    """The bags of regions of a caption batch, one per pseudo region.

    Attributes:
        boxes (List[Tensor]): Per image, the boxes of its bags one after the other, shape
            (n_i, 4) in input pixels; each bag ends with its frame (the pseudo box).
        normed_boxes (Tensor): Every box relative to its bag's frame, shape (sum n_i, 4).
        sizes (List[int]): Number of boxes of each bag, in order.
        captions (List[List[str]]): The captions each bag is aligned with: every caption of its
            image when the samples carry ``region_caption_lists`` (the official loss), else
            the one drawn caption.
        image_ids (List): The source image id of each bag.
    """
    boxes: List[Tensor]
    normed_boxes: Tensor
    sizes: List[int]
    captions: List[List[str]]
    image_ids: list


@MODELS.register_module()
class BaronDetector(DeticDetector):
    """BARON (Wu et al., CVPR 2023, "Aligning Bag of Regions for Open-Vocabulary Object
    Detection") with caption supervision, and with CLIM's pseudo regions (CLIM paper, "OVD with
    BARON").

    The detector is :class:`~.DeticDetector`'s Faster R-CNN whose box head is a
    :class:`~mmclim.models.roi_heads.BaronBBoxHead`: regions are classified by reading their
    pseudo words with the frozen CLIP text tower (``text_encoder``), which the head borrows
    from here. The detection branch trains on base-class boxes; each caption branch of
    ``caption_branches`` trains BARON's caption loss on its pseudo regions (the whole image of a
    caption image, or each cell of a mosaic):

    1. a no-grad RPN pass (``train_cfg.rpn_proposal``) gives proposals; for each pseudo region a
       *bag* is sampled inside it (:func:`mmclim.models.utils.sample_bag`, ``bag_sampling``) and
       the pseudo box joins it, last;
    2. every box is pooled through the detection RoI path and projected to pseudo words by the
       box head (``vision_to_language``); a positional embedding of the box in its bag's frame
       is added (:class:`~mmclim.models.utils.BoxPositionalEmbedding`);
    3. each bag, in up to ``max_perms`` random orders of its boxes, with words dropped at
       ``word_drop_ratio``, is read by the text tower as one sentence: the bag embedding
       (CLIP's projected output);
    4. :class:`~mmclim.models.losses.BaronCaptionLoss` aligns the bag embeddings with the
       caption embeddings of their pseudo regions (positives by source image id, queues): every
       caption of the region's image when the pipeline keeps them (``all_captions=True`` of
       :class:`~mmclim.datasets.transforms.CaptionPseudoBox` and the mosaic transforms, which
       write ``region_caption_lists``; the official loss), else the one drawn caption.

    With CLIM the bag's frame is the pseudo region, so its proposals come from inside that cell
    and its embedding is aligned with that cell's image's captions.

    Args:
        backbone (dict): Backbone config.
        rpn_head (dict): RPN head config.
        roi_head (dict): A :class:`~mmclim.models.roi_heads.DeticRoIHead` config whose
            ``bbox_head`` is a ``BaronBBoxHead`` without ``clip_model_name``, ``embed_dim`` and
            ``word_dim`` (filled in from the text tower).
        train_cfg (dict): ``rpn``, ``rpn_proposal`` and ``rcnn`` training configs.
        test_cfg (dict): ``rpn`` and ``rcnn`` test configs.
        text_encoder (dict): A ``CLIPTextEncoder`` config (required: the box head reads through
            it, also in stage 1 and at test time).
        neck (dict, optional): Neck config. Defaults to None.
        caption_branches (dict, optional): ``{branch: dict(caption=True)}`` (no tags, no
            composed regions). Defaults to None (detection only).
        caption_loss (dict, optional): A ``BaronCaptionLoss`` config, required with caption
            branches. Defaults to None.
        bag_sampling (dict): Fields of :func:`~mmclim.models.utils.sample_bag`. Defaults to
            :data:`~mmclim.models.utils.BAG_SAMPLING_DEFAULTS` (official, plus our
            ``inside_thr``).
        bag_encoding (dict): ``max_perms``, ``word_drop_ratio`` and ``positional_embedding``.
            Defaults to :data:`DEFAULT_BAG_ENCODING` (official).
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
                 text_encoder: OptConfigType = None,
                 neck: OptConfigType = None,
                 caption_branches: Optional[Dict[str, dict]] = None,
                 caption_loss: OptConfigType = None,
                 bag_sampling: dict = BAG_SAMPLING_DEFAULTS,
                 bag_encoding: dict = DEFAULT_BAG_ENCODING,
                 detection_branch: str = 'det_batch',
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        name = type(self).__name__
        if text_encoder is None:
            raise ValueError(f'{name}.text_encoder: required (the box head classifies by reading '
                             "pseudo words with it), e.g. dict(type='CLIPTextEncoder', ...)")
        for branch, spec in (caption_branches or {}).items():
            extra = sorted(key for key in ('tags', 'num_groups') if spec.get(key))
            if extra:
                raise ValueError(f'{name}.caption_branches.{branch}: {extra} are Detic\'s; a BARON '
                                 'branch trains the bag-of-regions caption loss only')
        head_type = roi_head.get('bbox_head', {}).get('type')
        head_class = MODELS.get(head_type) if isinstance(head_type, str) else head_type
        if not (isinstance(head_class, type) and issubclass(head_class, BaronBBoxHead)):
            raise ValueError(f"{name}.roi_head.bbox_head: expected type='BaronBBoxHead' (its "
                             f'classifier reads pseudo words), got {head_type!r}')
        super().__init__(
            backbone=backbone, rpn_head=rpn_head, roi_head=roi_head, train_cfg=train_cfg,
            test_cfg=test_cfg, neck=neck, text_encoder=text_encoder,
            caption_branches=caption_branches, caption_loss=caption_loss,
            detection_branch=detection_branch, data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        heads = self.bbox_heads
        if len(heads) != 1 or not isinstance(heads[0], BaronBBoxHead):
            raise ValueError(f"{name}.roi_head: expected a DeticRoIHead with type='BaronBBoxHead', "
                             f'got box heads {[type(head).__name__ for head in heads]}')
        if self.caption_branches and not isinstance(self.caption_loss, BaronCaptionLoss):
            raise ValueError(f"{name}.caption_loss: expected type='BaronCaptionLoss', got "
                             f'{type(self.caption_loss).__name__}')
        heads[0].classifier.attach_text_encoder(self.text_encoder)
        self.bag_sampling = self._check_fields(f'{name}.bag_sampling', bag_sampling,
                                               BAG_SAMPLING_DEFAULTS)
        self.bag_encoding = self._check_fields(f'{name}.bag_encoding', bag_encoding,
                                               DEFAULT_BAG_ENCODING)
        num_words = heads[0].num_words
        longest = (self.bag_sampling['max_num'] + 1) * num_words + 2  # + start and end tokens
        if self.caption_branches and longest > self.text_encoder.context_length:
            raise ValueError(
                f'{name}.bag_sampling.max_num: a bag of max_num={self.bag_sampling["max_num"]} '
                f'proposals and its pseudo box, {num_words} words each (roi_head.bbox_head.'
                f'num_words), is {longest} tokens with the start and end tokens, more than the '
                f'text tower\'s context of {self.text_encoder.context_length}')
        self.box_positional_embedding = (
            BoxPositionalEmbedding(num_words, self.text_encoder.word_dim)
            if self.caption_branches and self.bag_encoding['positional_embedding'] else None)

    @staticmethod
    def _check_fields(field: str, cfg: dict, defaults: dict) -> dict:
        """``defaults`` updated with ``cfg``; unknown keys are an error naming ``field``."""
        unknown = sorted(set(cfg) - set(defaults))
        if unknown:
            raise ValueError(f'{field}: unknown keys {unknown}; expected {sorted(defaults)}')
        return dict(defaults, **cfg)

    @staticmethod
    def _text_tower_fields(text_tower: nn.Module) -> dict:
        """The box-head fields the text tower determines: model, embedding and word sizes."""
        return dict(clip_model_name=text_tower.model_name, embed_dim=text_tower.embed_dim,
                    word_dim=text_tower.word_dim)

    def _bags(self, x: Tuple[Tensor, ...], samples: SampleList,
              regions: List[PseudoRegions]) -> Bags:
        """Sample one bag of proposals inside each pseudo region; its frame joins it, last."""
        proposals = self._proposals(x, samples)
        boxes, normed, sizes, captions = [], [], [], []
        for props, region, sample in zip(proposals, regions, samples):
            lists = sample.metainfo.get('region_caption_lists')
            captions += ([list(lists[i]) for i in sample.gt_instances.labels.tolist()]
                         if lists is not None else [[c] for c in region.captions])
            image_boxes = [region.boxes.new_zeros(0, 4)]
            for frame in region.boxes:
                bag = torch.cat([
                    sample_bag(props.bboxes, props.scores, frame, **self.bag_sampling),
                    frame[None]
                ])
                image_boxes.append(bag)
                normed.append(boxes_in_frame(bag, frame))
                sizes.append(bag.shape[0])
            boxes.append(torch.cat(image_boxes).detach())
        return Bags(boxes, torch.cat(normed), sizes, captions,
                    [i for region in regions for i in region.image_ids])

    def bag_embeddings(self, words: Tensor, normed_boxes: Tensor,
                       sizes: List[int]) -> Tuple[Tensor, Tensor]:
        """Read each bag of pseudo words with the text tower, in several orders.

        Args:
            words (Tensor): Pseudo words of every box of every bag, shape (sum sizes, K, W).
            normed_boxes (Tensor): The boxes relative to their bag's frame, (sum sizes, 4).
            sizes (List[int]): Boxes per bag.

        Returns:
            tuple[Tensor, Tensor]: The embeddings (S, D), L2-normalised, of S sentences (up to
            ``max_perms`` per bag), and the index of each sentence's bag (S,).
        """
        if self.box_positional_embedding is not None:
            words = words + self.box_positional_embedding(normed_boxes).to(words.dtype)
        sentences, owners = [], []
        for index, bag in enumerate(words.split(sizes)):
            for order in random_permutations(bag.shape[0], self.bag_encoding['max_perms']):
                sentences.append(bag[order])
                owners.append(index)
        lengths = [sentence.shape[0] for sentence in sentences]
        num_words = words.shape[1]
        keep = drop_words(sum(lengths), num_words, self.bag_encoding['word_drop_ratio'],
                          self.training, device=words.device).split(lengths)
        padded = pad_sequence(sentences, batch_first=True)  # (S, boxes, K, W)
        padded_keep = pad_sequence(list(keep), batch_first=True, padding_value=False)
        embeddings = self.text_encoder.encode_pseudo_words(
            padded.flatten(1, 2), padded_keep.flatten(1), output='projection', normalize=True)
        return embeddings, torch.tensor(owners, device=words.device)

    def caption_branch_loss(self, inputs: Optional[Tensor], samples: SampleList,
                            spec: dict) -> Dict[str, Tensor]:
        """BARON's caption loss of one caption branch.

        Args:
            inputs (Tensor, optional): The branch's images (B, 3, H, W); None when the batch has
                none.
            samples (SampleList): Its B samples with pseudo boxes and per-region metainfo.
            spec (dict): The branch's entry of ``caption_branches``.

        Returns:
            dict[str, Tensor]: ``loss_caption``.
        """
        if inputs is None or len(samples) == 0:
            return self._zero_losses(spec)
        x = self.extract_feat(inputs)
        regions = [self._pseudo_regions(sample, 0, False) for sample in samples]
        if not any(region.members for region in regions):  # every pseudo box filtered out
            return self._zero_losses(spec)
        bags = self._bags(x, samples, regions)
        [(words, _)] = self.roi_head.region_embeddings(x, bags.boxes)
        embeddings, owners = self.bag_embeddings(words, bags.normed_boxes, bags.sizes)
        device = embeddings.device
        region_ids = image_ids_to_tensor(bags.image_ids).to(device)
        texts = [caption for captions in bags.captions for caption in captions]
        text_ids = region_ids.repeat_interleave(
            torch.tensor([len(captions) for captions in bags.captions], device=device))
        loss = self.caption_loss(embeddings, self.text_encoder(texts).to(device),
                                 region_ids[owners], text_ids)
        return {'loss_caption': loss}
