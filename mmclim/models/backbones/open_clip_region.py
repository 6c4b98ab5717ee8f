# Copyright (c) mmclim contributors. All rights reserved.
from contextlib import nullcontext
from pathlib import Path
from typing import List, NoReturn, Optional, Tuple

import open_clip
import torch
import torch.nn.functional as F
from mmcv.ops import roi_align
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from mmengine.utils import is_list_of
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from .clip_checkpoint import load_clip_checkpoint
from .clip_dense import (RESNET_STRIDE, mask_pool, resnet_dense_features, vit_box_attention_pool,
                         vit_dense_features, vit_tokens_before_last_block)

# open_clip-format JSON configs of the tiny test models; registered on import.
MODEL_CONFIG_DIR = Path(__file__).parent / 'model_configs'
open_clip.add_model_config(MODEL_CONFIG_DIR)

REGION_MODES = ('roi_align', 'attn_mask')
# One RoIAlign bin per box with adaptive sampling (ceil(box size / bin size) points per axis):
# on a map of stride s, the whole-image box samples every cell centre once, so its feature is the
# map's spatial mean.
ROI_OUTPUT_SIZE = 1
ROI_ADAPTIVE_SAMPLING = 0
DEFAULT_TEXT_BATCH_SIZE = 256
# open_clip's ViT lock groups are [embeddings], blocks[0], ..., blocks[-2], [blocks[-1], ln_post],
# [proj]: unlocking the last N blocks with ln_post and proj means unlocking the last N + 1 groups.
VIT_HEAD_GROUPS = 1


@MODELS.register_module()
class OpenCLIPRegion(BaseModule):
    """An open_clip CLIP model with dense, region, image and text embeddings for CLIM.

    Region features follow CLIM's "Enhancing CLIP Model's Region Representation": MaskCLIP dense
    maps from the last attention layer (:mod:`.clip_dense`), pooled per box by RoIAlign. For ViTs a
    second mode pools each box with the last block's class-token attention masked to the box.

    Images are expected normalised with the CLIP mean and std (``open_clip.OPENAI_DATASET_MEAN``
    and ``OPENAI_DATASET_STD``). Weights released by OpenAI need the ``-quickgelu`` configs
    (e.g. ``ViT-B-16-quickgelu``, ``RN50x64-quickgelu``), which use their activation.

    Args:
        model_name (str): An open_clip model config, e.g. ``'ViT-B-16-quickgelu'`` or the
            bundled ``'mmclim-tiny-vit'`` and ``'mmclim-tiny-rn'``. Its image tower must be a
            ``VisionTransformer`` whose last block is a ``ResidualAttentionBlock`` (OpenAI-style,
            no attentional pooler) or a ``ModifiedResNet``.
        pretrained (str, optional): Local CLIP checkpoint (see
            :func:`~.clip_checkpoint.load_clip_checkpoint`). Nothing is downloaded; None keeps
            the random initialisation. Defaults to None.
        region_mode (str): ``'roi_align'``: RoIAlign on the dense map. ``'attn_mask'`` (ViT with
            class-token pooling only): class-token attention restricted to each box's patches.
            Defaults to 'roi_align'.
        unlocked_vision_blocks (int, optional): None trains the whole image tower. N freezes all
            of it but, for a ViT, the last N transformer blocks with ``ln_post`` and ``proj``
            (open_clip ``lock_image_tower(unlocked_groups=N + 1)``). N = 0 freezes everything;
            N = the number of blocks still freezes the patch and positional embeddings and
            ``ln_pre``.
            open_clip's ModifiedResNet only locks as a whole, so for it N must be 0.
            Defaults to None.
        freeze_text (bool): Freeze the text tower (open_clip ``lock_text_tower``).
            ``logit_scale`` belongs to neither tower and stays trainable. Defaults to True.
        norm_eval (bool): Keep the BatchNorm layers of a ModifiedResNet in eval mode, i.e. their
            running statistics frozen. They always are when the tower is frozen.
            Defaults to True.
        grad_checkpointing (bool): Gradient checkpointing of the ViT blocks before the last
            (open_clip ``set_grad_checkpointing``). Defaults to False.
        init_cfg (dict or List[dict], optional): mmengine initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 region_mode: str = 'roi_align',
                 unlocked_vision_blocks: Optional[int] = None,
                 freeze_text: bool = True,
                 norm_eval: bool = True,
                 grad_checkpointing: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if region_mode not in REGION_MODES:
            raise ValueError(f'{type(self).__name__}.region_mode: expected one of {REGION_MODES}, '
                             f'got {region_mode!r}')
        self.model_name = model_name
        self.region_mode = region_mode
        self.norm_eval = norm_eval
        self.clip = open_clip.create_model(model_name, pretrained=None)
        self._check_supported()
        if pretrained is not None:
            load_clip_checkpoint(self.clip, pretrained)
        self.clip.set_grad_checkpointing(grad_checkpointing)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.vision_locked = unlocked_vision_blocks == 0
        self._lock_vision(unlocked_vision_blocks)
        if freeze_text:
            self.clip.lock_text_tower(unlocked_layers=0)

    @property
    def is_vit(self) -> bool:
        """Whether the image tower is a ViT (else a ModifiedResNet)."""
        return isinstance(self.clip.visual, VisionTransformer)

    @property
    def stride(self) -> int:
        """Pixels per dense-map cell: the ViT patch size, or 32 for a ModifiedResNet."""
        return self.clip.visual.patch_size[0] if self.is_vit else RESNET_STRIDE

    @property
    def embed_dim(self) -> int:
        """Size D of the embedding space shared by the image and text towers."""
        return self.clip.visual.output_dim

    @property
    def logit_scale(self) -> Tensor:
        """CLIP's learned similarity scale, ``exp`` of the ``clip.logit_scale`` parameter."""
        return self.clip.logit_scale.exp()

    def _fail(self, field: str, expected: str) -> NoReturn:
        raise ValueError(f'{type(self).__name__}.{field}: {expected} (model_name='
                         f'{self.model_name!r})')

    def _check_supported(self) -> None:
        """Raise for open_clip towers whose dense or region features are not defined here."""
        if not isinstance(self.clip, open_clip.CLIP):
            self._fail('model_name', f'expected a config building open_clip.CLIP, got '
                       f'{type(self.clip).__name__}')
        visual = self.clip.visual
        if isinstance(visual, ModifiedResNet):
            if self.region_mode == 'attn_mask':
                self._fail('region_mode', "'attn_mask' needs a ViT image tower, got a "
                           "ModifiedResNet; use 'roi_align'")
            return
        if not isinstance(visual, VisionTransformer):
            self._fail('model_name', f'expected a VisionTransformer or ModifiedResNet image '
                       f'tower, got {type(visual).__name__}')
        last_block = visual.transformer.resblocks[-1]
        if not (isinstance(last_block, ResidualAttentionBlock)
                and isinstance(last_block.attn, nn.MultiheadAttention)
                and last_block.attn.in_proj_weight is not None and last_block.attn.batch_first
                and not hasattr(last_block, 'ln_1_kv')):
            self._fail('model_name', 'expected the last ViT block to be a ResidualAttentionBlock '
                       'with batch-first, packed-projection self-attention (vision_cfg without '
                       'block_type/qk_norm/scaled_cosine_attn/scale_* options), got '
                       f'{type(last_block).__name__}')
        if visual.attn_pool is not None or visual.proj is None:
            self._fail('model_name', 'expected a ViT with ln_post and proj and without '
                       'attentional_pool')
        if visual.pool_type not in ('tok', 'avg'):
            self._fail('model_name', f"expected vision_cfg.pool_type 'tok' or 'avg', got "
                       f'{visual.pool_type!r}')
        if self.region_mode == 'attn_mask' and visual.pool_type != 'tok':
            self._fail('region_mode', "'attn_mask' needs class-token pooling "
                       f"(vision_cfg.pool_type 'tok'), got {visual.pool_type!r}")

    def _lock_vision(self, unlocked_blocks: Optional[int]) -> None:
        """Freeze the image tower but its last ``unlocked_blocks`` blocks (None: train all)."""
        if unlocked_blocks is None:
            return
        if not self.is_vit:
            if unlocked_blocks != 0:
                self._fail('unlocked_vision_blocks', 'open_clip locks a ModifiedResNet only as a '
                           f'whole: expected None or 0, got {unlocked_blocks}')
            self.clip.lock_image_tower(unlocked_groups=0)
            return
        num_blocks = len(self.clip.visual.transformer.resblocks)
        if not 0 <= unlocked_blocks <= num_blocks:
            self._fail('unlocked_vision_blocks', f'expected None or 0 to {num_blocks} (the number '
                       f'of ViT blocks), got {unlocked_blocks}')
        unlocked_groups = unlocked_blocks + VIT_HEAD_GROUPS if unlocked_blocks else 0
        self.clip.lock_image_tower(unlocked_groups=unlocked_groups)

    def train(self, mode: bool = True) -> 'OpenCLIPRegion':
        """Set the training mode, keeping ModifiedResNet BatchNorm in eval mode when frozen.

        Args:
            mode (bool): Training (True) or evaluation (False) mode. Defaults to True.

        Returns:
            OpenCLIPRegion: self.
        """
        super().train(mode)
        if mode and not self.is_vit and (self.norm_eval or self.vision_locked):
            for module in self.clip.visual.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def dense_features(self, images: Tensor) -> Tensor:
        """MaskCLIP dense map in the text-embedding space.

        Args:
            images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of
                :attr:`stride` s; any size for a ViT (positional embeddings are interpolated).

        Returns:
            Tensor: Shape (B, D, H/s, W/s).
        """
        if self.is_vit:
            return vit_dense_features(self.clip.visual, images)
        return resnet_dense_features(self.clip.visual, images)

    def forward(self, images: Tensor) -> Tuple[Tensor]:
        """Backbone interface: the dense map as a one-level feature tuple.

        Args:
            images (Tensor): See :meth:`dense_features`, shape (B, 3, H, W).

        Returns:
            Tuple[Tensor]: One map of shape (B, D, H/s, W/s).
        """
        return (self.dense_features(images), )

    def region_features(self, images: Tensor, boxes: List[Tensor],
                        normalize: bool = False) -> Tensor:
        """Embeddings of boxes, pooled as set by ``region_mode``.

        Args:
            images (Tensor): See :meth:`dense_features`, shape (B, 3, H, W).
            boxes (List[Tensor]): B tensors of boxes (x1, y1, x2, y2) in pixels of ``images``,
                shape (K_i, 4).
            normalize (bool): L2-normalise the embeddings. Defaults to False.

        Returns:
            Tensor: Shape (sum K_i, D), image then box order.
        """
        if not is_list_of(boxes, Tensor) or len(boxes) != images.shape[0]:
            raise ValueError(f'boxes: expected a list of {images.shape[0]} tensors (one per '
                             f'image) of shape (K_i, 4), got {type(boxes).__name__}')
        if self.region_mode == 'attn_mask':
            tokens = vit_tokens_before_last_block(self.clip.visual, images)
            grid = (images.shape[-2] // self.stride, images.shape[-1] // self.stride)
            features = vit_box_attention_pool(self.clip.visual, tokens, boxes, grid)
        else:
            dense = self.dense_features(images)
            rois = bbox2roi([b.to(dense) for b in boxes])
            features = roi_align(dense, rois, ROI_OUTPUT_SIZE, 1.0 / self.stride,
                                 ROI_ADAPTIVE_SAMPLING, 'avg', True).flatten(1)
        return F.normalize(features, dim=-1) if normalize else features

    def mask_features(self, images: Tensor, masks: List[Tensor],
                      normalize: bool = False) -> Tensor:
        """Embeddings of masks: the dense map averaged over each mask (whatever ``region_mode``).

        Each mask is reduced to the fraction of every dense-map cell it covers, and the feature
        is the mean of the cells weighted by those fractions (:func:`~.clip_dense.mask_pool`).
        The full-image mask gives the map's spatial mean (the whole-image box's RoIAlign
        feature), and a mask of a box on cell borders that box's RoIAlign feature. An empty
        mask falls back to the map's spatial mean.

        Args:
            images (Tensor): See :meth:`dense_features`, shape (B, 3, H, W).
            masks (List[Tensor]): B tensors of masks on ``images``' pixels, bool or with values
                in [0, 1] (soft masks weight their pixels), shape (K_i, H, W).
            normalize (bool): L2-normalise the embeddings. Defaults to False.

        Returns:
            Tensor: Shape (sum K_i, D), image then mask order.
        """
        if not is_list_of(masks, Tensor) or len(masks) != images.shape[0]:
            raise ValueError(f'masks: expected a list of {images.shape[0]} tensors (one per '
                             f'image) of shape (K_i, H, W), got {type(masks).__name__}')
        image_size = tuple(images.shape[-2:])
        for index, image_masks in enumerate(masks):
            if image_masks.ndim != 3 or tuple(image_masks.shape[-2:]) != image_size:
                raise ValueError(f'masks[{index}]: expected shape (K_i, {image_size[0]}, '
                                 f'{image_size[1]}) like the images, got '
                                 f'{tuple(image_masks.shape)}')
        features = mask_pool(self.dense_features(images), masks)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """CLIP's global image embedding (open_clip ``encode_image``).

        Args:
            images (Tensor): Normalised images at the model's native size, shape (B, 3, H, W).
            normalize (bool): L2-normalise the embeddings. Defaults to False.

        Returns:
            Tensor: Shape (B, D).
        """
        image_size = self.clip.visual.image_size
        native = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, ) * 2
        if tuple(images.shape[-2:]) != native:
            raise ValueError(f'images: encode_image expects the native size {native} of '
                             f'{self.model_name!r}, got {tuple(images.shape[-2:])}; '
                             'dense_features and region_features take any size')
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self,
                    texts: List[str],
                    normalize: bool = True,
                    batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
                    no_grad: bool = True) -> Tensor:
        """Text embeddings with the model's bundled open_clip tokenizer.

        Args:
            texts (List[str]): T texts.
            normalize (bool): L2-normalise the embeddings. Defaults to True.
            batch_size (int): Texts per forward pass. Defaults to 256.
            no_grad (bool): Run without building a graph. Defaults to True.

        Returns:
            Tensor: Shape (T, D).
        """
        if not is_list_of(texts, str):
            raise ValueError(f'texts: expected a list of str, got {type(texts).__name__}')
        if batch_size < 1:
            raise ValueError(f'batch_size: expected a positive int, got {batch_size}')
        device = self.clip.token_embedding.weight.device
        embeddings = [self.clip.logit_scale.new_zeros(0, self.embed_dim)]
        with torch.no_grad() if no_grad else nullcontext():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size]).to(device)
                embeddings.append(self.clip.encode_text(tokens, normalize=normalize))
        return torch.cat(embeddings)
