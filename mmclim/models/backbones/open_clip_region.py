# Copyright (c) mmclim contributors. All rights reserved.
from contextlib import nullcontext
from pathlib import Path
from typing import List, NoReturn, Optional, Tuple, Union

import open_clip
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from mmengine.utils import is_list_of
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from mmclim.models.utils.box_pool import box_pool
from .clip_checkpoint import load_clip_checkpoint
from .clip_dense import (DENSE_MODES, RESNET_STRIDE, mask_pool, resnet_attnpool_regions, resnet_c5,
                         resnet_dense_from_c5, vit_box_attention_pool, vit_dense_features,
                         vit_tokens_before_last_block)
from .clip_text_paths import (check_text_output, encode_text_tower, text_pool_index,
                              text_tower_output_dim)

# open_clip-format JSON configs of the tiny test models; registered on import.
MODEL_CONFIG_DIR = Path(__file__).parent / 'model_configs'
open_clip.add_model_config(MODEL_CONFIG_DIR)

# 'roi_align' (ViT): RoIAlign of the dense map; 'attn_pool' (ModifiedResNet): RoIAlign of C5 to
# the attention pool's grid, then the pool; 'attn_mask' (ViT): class-token attention restricted
# to the box. The first two are the official CLIM code's region features of each tower.
REGION_MODES = ('roi_align', 'attn_pool', 'attn_mask')
DEFAULT_REGION_MODE = dict(vit='roi_align', resnet='attn_pool')
DEFAULT_TEXT_BATCH_SIZE = 256
RESNET_STAGES = ('layer1', 'layer2', 'layer3', 'layer4')


@MODELS.register_module()
class OpenCLIPRegion(BaseModule):
    """An open_clip CLIP model with dense, region, image and text embeddings for CLIM.

    Dense maps and region features are those of the official CLIM code by default
    (:mod:`.clip_dense`, ``dense_mode='clim'``): for a ViT, the normalised "v2" map with each box
    RoIAligned from it; for a ModifiedResNet, each box RoIAligned from C5 to the attention pool's
    grid and pooled by CLIP's attention pool. MaskCLIP's map (``dense_mode='maskclip'``) and
    class-token attention masked to the box (``region_mode='attn_mask'``, ViT) are options.

    Trainable parameters, as the official CLIM fine-tuning sets them with
    ``unlocked_vision_blocks=N`` and ``freeze_projection=True``: for a ViT, the last N
    transformer blocks (``ln_post`` and ``proj``, which map into the text space, stay frozen);
    for a ModifiedResNet, the last N stages (N=1: ``layer4``) and the attention pool's
    positional embedding and query and key projections (its value and output projections stay
    frozen); BatchNorm layers always frozen (``norm_eval``). ``logit_scale`` is trainable
    unless both towers are entirely frozen.

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
        dense_mode (str): ``'clim'`` or ``'maskclip'`` (:data:`.clip_dense.DENSE_MODES`).
            Defaults to ``'clim'``.
        region_mode (str, optional): One of :data:`REGION_MODES`; None picks the official one,
            ``'roi_align'`` for a ViT and ``'attn_pool'`` for a ModifiedResNet. Defaults to None.
        unlocked_vision_blocks (int, optional): None trains the whole image tower. N freezes it
            but the last N ViT blocks or ModifiedResNet stages (see above); 0 freezes it all.
            Defaults to None.
        freeze_projection (bool): With ``unlocked_vision_blocks``, keep frozen the layers that
            project into the text space (ViT ``ln_post`` and ``proj``; ModifiedResNet attention
            pool ``v_proj`` and ``c_proj``), as the official code does. Defaults to True.
        freeze_text (bool): Freeze the text tower (open_clip ``lock_text_tower``); texts are
            then embedded without a graph. Defaults to True.
        norm_eval (bool): Keep the BatchNorm layers of a ModifiedResNet frozen: eval mode and no
            gradient (the official code's ``freeze_all_bns``). Defaults to True.
        grad_checkpointing (bool): Gradient checkpointing of the ViT blocks before the last
            (open_clip ``set_grad_checkpointing``). Defaults to False.
        init_cfg (dict or List[dict], optional): mmengine initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 dense_mode: str = 'clim',
                 region_mode: Optional[str] = None,
                 unlocked_vision_blocks: Optional[int] = None,
                 freeze_projection: bool = True,
                 freeze_text: bool = True,
                 norm_eval: bool = True,
                 grad_checkpointing: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.model_name = model_name
        self.pretrained = pretrained
        if dense_mode not in DENSE_MODES:
            self._fail('dense_mode', f'expected one of {DENSE_MODES}, got {dense_mode!r}')
        self.dense_mode = dense_mode
        self.norm_eval = norm_eval
        self.clip = open_clip.create_model(model_name, pretrained=None)
        tower = 'vit' if self.is_vit else 'resnet'
        self.region_mode = DEFAULT_REGION_MODE[tower] if region_mode is None else region_mode
        self._check_supported()
        if pretrained is not None:
            load_clip_checkpoint(self.clip, pretrained)
        self.clip.set_grad_checkpointing(grad_checkpointing)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._lock_vision(unlocked_vision_blocks, freeze_projection)
        self.freeze_text = freeze_text
        if freeze_text:
            self.clip.lock_text_tower(unlocked_layers=0)
        if unlocked_vision_blocks == 0 and freeze_text:
            self.clip.logit_scale.requires_grad_(False)

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
    def native_size(self) -> Tuple[int, int]:
        """(H, W) of the image tower's native input, what :meth:`encode_image` takes."""
        image_size = self.clip.visual.image_size
        return tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, ) * 2

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
        if self.region_mode not in REGION_MODES:
            self._fail('region_mode', f'expected None or one of {REGION_MODES}, got '
                       f'{self.region_mode!r}')
        visual = self.clip.visual
        if isinstance(visual, ModifiedResNet):
            if self.region_mode == 'attn_mask':
                self._fail('region_mode', "'attn_mask' needs a ViT image tower, got a "
                           "ModifiedResNet; use 'attn_pool' or 'roi_align'")
            return
        if not isinstance(visual, VisionTransformer):
            self._fail('model_name', f'expected a VisionTransformer or ModifiedResNet image '
                       f'tower, got {type(visual).__name__}')
        if self.region_mode == 'attn_pool':
            self._fail('region_mode', "'attn_pool' needs a ModifiedResNet image tower; use "
                       "'roi_align' or 'attn_mask'")
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

    def _lock_vision(self, unlocked_blocks: Optional[int], freeze_projection: bool) -> None:
        """Freeze the image tower but its last ``unlocked_blocks`` blocks or stages (None: train
        it all; BatchNorm of a ModifiedResNet stays frozen with ``norm_eval``)."""
        visual = self.clip.visual
        if unlocked_blocks is None:
            if not self.is_vit and self.norm_eval:
                self._freeze_batch_norms()
            return
        units = (list(visual.transformer.resblocks) if self.is_vit else
                 [getattr(visual, name) for name in RESNET_STAGES])
        kind = 'ViT blocks' if self.is_vit else 'ModifiedResNet stages'
        if not (isinstance(unlocked_blocks, int) and 0 <= unlocked_blocks <= len(units)):
            self._fail('unlocked_vision_blocks', f'expected None or 0 to {len(units)} (the '
                       f'number of {kind}), got {unlocked_blocks!r}')
        # open_clip's lock freezes the whole tower; the official trainable part is unlocked
        # again below.
        self.clip.lock_image_tower(unlocked_groups=0)
        if unlocked_blocks == 0:
            return
        for unit in units[len(units) - unlocked_blocks:]:
            unit.requires_grad_(True)
        if self.is_vit:
            head = [visual.ln_post]
            head_params = [visual.proj]
        else:
            pool = visual.attnpool
            pool.q_proj.requires_grad_(True)
            pool.k_proj.requires_grad_(True)
            pool.positional_embedding.requires_grad_(True)
            head, head_params = [pool.v_proj, pool.c_proj], []
        if not freeze_projection:
            for module in head:
                module.requires_grad_(True)
            for param in head_params:
                param.requires_grad_(True)
        if not self.is_vit:
            self._freeze_batch_norms()

    def _batch_norms(self) -> List[nn.Module]:
        return [module for module in self.clip.visual.modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)]

    def _freeze_batch_norms(self) -> None:
        for module in self._batch_norms():
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> 'OpenCLIPRegion':
        """Set the training mode, keeping frozen ModifiedResNet BatchNorm in eval mode.

        Args:
            mode (bool): Training (True) or evaluation (False) mode. Defaults to True.

        Returns:
            OpenCLIPRegion: self.
        """
        super().train(mode)
        if mode and not self.is_vit:
            for module in self._batch_norms():
                if self.norm_eval or not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def dense_features(self, images: Tensor) -> Tensor:
        """The dense map in the text-embedding space (``dense_mode``; normalised for
        ``'clim'``).

        Args:
            images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of
                :attr:`stride` s; any size for a ViT (positional embeddings are interpolated).

        Returns:
            Tensor: Shape (B, D, H/s, W/s).
        """
        if self.is_vit:
            return vit_dense_features(self.clip.visual, images, self.dense_mode)
        return resnet_dense_from_c5(self.clip.visual, resnet_c5(self.clip.visual, images),
                                    self.dense_mode)

    def forward(self, images: Tensor) -> Tuple[Tensor]:
        """Backbone interface: the dense map as a one-level feature tuple.

        Args:
            images (Tensor): See :meth:`dense_features`, shape (B, 3, H, W).

        Returns:
            Tuple[Tensor]: One map of shape (B, D, H/s, W/s).
        """
        return (self.dense_features(images), )

    def region_source(self, images: Tensor) -> Tensor:
        """The map :meth:`pool_regions` pools boxes from (``'roi_align'`` and ``'attn_pool'``).

        Args:
            images (Tensor): See :meth:`dense_features`, shape (B, 3, H, W).

        Returns:
            Tensor: The dense map (B, D, H/s, W/s) for ``'roi_align'``; C5 of a ModifiedResNet,
            (B, 32 * width, H/32, W/32), for ``'attn_pool'``.
        """
        if self.region_mode == 'attn_pool':
            return resnet_c5(self.clip.visual, images)
        if self.region_mode != 'roi_align':
            self._fail('region_mode', f"region_source needs 'roi_align' or 'attn_pool', got "
                       f'{self.region_mode!r}')
        return self.dense_features(images)

    def pool_regions(self, source: Tensor, boxes: Union[List[Tensor], Tensor],
                     normalize: bool = False) -> Tensor:
        """Region embeddings of boxes from :meth:`region_source`'s map.

        Args:
            source (Tensor): Output of :meth:`region_source` (or the same map computed in
                another pass, e.g. by the F-VLM backbone), shape (B, C, h, w).
            boxes (list[Tensor] | Tensor): B tensors of boxes (x1, y1, x2, y2) in input pixels
                of shape (K_i, 4), or RoIs (K, 5).
            normalize (bool): L2-normalise the embeddings. Defaults to False.

        Returns:
            Tensor: Shape (K, D), images then boxes in order.
        """
        if self.region_mode == 'attn_pool':
            features = resnet_attnpool_regions(self.clip.visual, source, boxes)
        else:
            features = box_pool(source, boxes, self.stride)
        return F.normalize(features, dim=-1) if normalize else features

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
            return F.normalize(features, dim=-1) if normalize else features
        return self.pool_regions(self.region_source(images), boxes, normalize)

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
        native = self.native_size
        if tuple(images.shape[-2:]) != native:
            raise ValueError(f'images: encode_image expects the native size {native} of '
                             f'{self.model_name!r}, got {tuple(images.shape[-2:])}; '
                             'dense_features and region_features take any size')
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self,
                    texts: List[str],
                    normalize: bool = True,
                    batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
                    no_grad: Optional[bool] = None,
                    output: str = 'projection') -> Tensor:
        """Text embeddings with the model's bundled open_clip tokenizer.

        Both outputs come from :func:`~.clip_text_paths.encode_text_tower`, whose
        ``'projection'`` is open_clip ``CLIP.encode_text``'s embedding.

        Args:
            texts (List[str]): T texts.
            normalize (bool): L2-normalise the embeddings. Defaults to True.
            batch_size (int): Texts per forward pass. Defaults to 256.
            no_grad (bool, optional): Run without building a graph. None builds one exactly when
                the text tower trains (``freeze_text=False``). Defaults to None.
            output (str): One of :data:`~.clip_text_paths.TEXT_OUTPUTS`: ``'projection'``,
                CLIP's text embedding (size D), or ``'last_block'``, the EOT token's output of
                the last transformer block (size W, the width; BARON's OV-COCO classifier).
                Defaults to ``'projection'``.

        Returns:
            Tensor: Shape (T, D) for ``'projection'``, (T, W) for ``'last_block'``.
        """
        if not is_list_of(texts, str):
            raise ValueError(f'texts: expected a list of str, got {type(texts).__name__}')
        if batch_size < 1:
            raise ValueError(f'batch_size: expected a positive int, got {batch_size}')
        check_text_output(output)
        device = self.clip.token_embedding.weight.device
        embeddings = [self.clip.logit_scale.new_zeros(0, text_tower_output_dim(self.clip, output))]
        if no_grad is None:
            no_grad = self.freeze_text
        with torch.no_grad() if no_grad else nullcontext():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size]).to(device)
                embeddings.append(
                    encode_text_tower(self.clip, self.clip.token_embedding(tokens),
                                      text_pool_index(self.clip, tokens), output, normalize))
        return torch.cat(embeddings)
