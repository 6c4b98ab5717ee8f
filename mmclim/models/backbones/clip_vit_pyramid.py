# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import Tensor

from .clip_dense import (NUM_PREFIX_TOKENS, resnet_dense_from_c5, vit_embed_tokens,
                         vit_last_block_dense, vit_tokens_to_map)
from .open_clip_region import OpenCLIPRegion

# ViT-B/16 blocks whose patch tokens feed the pyramid: CLIM's F-VLM on ViT-B/16 takes the "3th,
# 5th, 7th and 11th attention layers", read here as 0-based block indices (the 4th, 6th, 8th and
# last of 12 blocks).
VIT_B_OUT_INDICES = (3, 5, 7, 11)
# open_clip ModifiedResNet.forward_intermediates numbers the stem 0 and layer1-4 1 to 4; the
# stages C2-C5 (strides 4, 8, 16, 32) are 1 to 4.
RESNET_NUM_BLOCKS = 5
RESNET_STAGE_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}
# The ViT "block" index of the embedded tokens entering block 0 (the dense map's input when the
# ViT has a single block).
EMBEDDED_TOKENS_INDEX = -1


@MODELS.register_module()
class CLIPViTPyramidBackbone(BaseModule):
    """A frozen CLIP image tower as a detector backbone (F-VLM), with its dense map for scoring.

    F-VLM (Kuo et al., ICLR 2023) keeps the whole vision-language model frozen and trains only
    the detector on top of it. This backbone wraps an :class:`~.OpenCLIPRegion`, freezes every
    parameter, keeps it in eval mode and computes without a graph. One pass of the tower gives:

    - for a ViT, the patch tokens after the blocks ``out_indices`` as maps of stride p (the patch
      size); turning them into strides 4-32 takes learned layers, which belong to a trainable
      neck (:class:`~mmclim.models.necks.SimplePyramidFPN`);
    - for a ModifiedResNet (e.g. RN50x64), the stage outputs ``out_indices`` (1-4: C2-C5 at
      strides 4, 8, 16, 32), for a plain FPN;
    - in both cases, last, the MaskCLIP dense map in the text-embedding space
      (:meth:`OpenCLIPRegion.dense_features`, from the same pass), from which the detector
      scores regions against class-name text embeddings at test time.

    Args:
        model_name (str): An open_clip model config accepted by :class:`~.OpenCLIPRegion`, e.g.
            ``'ViT-B-16-quickgelu'``, ``'RN50x64-quickgelu'`` or ``'mmclim-toy-vit'``.
        pretrained (str, optional): Local CLIP checkpoint (OpenAI, open_clip or a CLIM export).
            None keeps random weights, which only suits tests. Defaults to None.
        out_indices (Sequence[int]): For a ViT, the 0-based blocks whose tokens are returned
            (repeats allowed, e.g. ViTDet's ``(11, 11, 11, 11)``); for a ModifiedResNet, the
            open_clip ``forward_intermediates`` blocks, 1-4 for C2-C5. Defaults to
            ``(3, 5, 7, 11)``, CLIM's choice for ViT-B/16.
        init_cfg (dict or List[dict], optional): mmengine initialisation config; the CLIP
            weights come from ``pretrained``, so leave it None. Defaults to None.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 out_indices: Sequence[int] = VIT_B_OUT_INDICES,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.vlm = OpenCLIPRegion(model_name, pretrained=pretrained, unlocked_vision_blocks=0,
                                  freeze_text=True)
        # OpenCLIPRegion leaves logit_scale trainable; F-VLM trains nothing of the VLM.
        self.requires_grad_(False)
        num_blocks = (len(self.visual.transformer.resblocks)
                      if self.vlm.is_vit else RESNET_NUM_BLOCKS)
        valid = range(num_blocks) if self.vlm.is_vit else tuple(RESNET_STAGE_STRIDES)
        out_indices = tuple(out_indices)
        if not out_indices or any(index not in valid for index in out_indices):
            kind = (f'0-based blocks of the {num_blocks}-block ViT' if self.vlm.is_vit else
                    'ModifiedResNet stages 1-4 (C2-C5)')
            raise ValueError(f'{type(self).__name__}.out_indices: expected a non-empty sequence '
                             f'of {kind} in {tuple(valid)}, got {out_indices} '
                             f'(model_name={model_name!r})')
        self.out_indices = out_indices
        # The ViT's dense map comes from the tokens entering its last block (the output of the
        # block before it); the ResNet's from C5.
        self._dense_index = num_blocks - 2 if self.vlm.is_vit else num_blocks - 1
        self.train()

    @property
    def visual(self) -> Union[VisionTransformer, ModifiedResNet]:
        """The open_clip image tower (``VisionTransformer`` or ``ModifiedResNet``)."""
        return self.vlm.clip.visual

    @property
    def dense_stride(self) -> int:
        """Pixels per cell of the dense map: the ViT patch size, or 32 for a ModifiedResNet."""
        return self.vlm.stride

    @property
    def embed_dim(self) -> int:
        """Channels D of the dense map: the size of the shared image-text embedding space."""
        return self.vlm.embed_dim

    @property
    def out_channels(self) -> List[int]:
        """Channels of each pyramid map, in ``out_indices`` order (the dense map excluded)."""
        if self.vlm.is_vit:
            return [self.visual.transformer.width] * len(self.out_indices)
        stages = (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4)
        return [stages[index - 1][-1].conv3.out_channels for index in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        """Stride of each pyramid map, in ``out_indices`` order (the dense map excluded)."""
        if self.vlm.is_vit:
            return [self.dense_stride] * len(self.out_indices)
        return [RESNET_STAGE_STRIDES[index] for index in self.out_indices]

    def train(self, mode: bool = True) -> 'CLIPViTPyramidBackbone':
        """Stay in eval mode whatever ``mode`` is: the tower is frozen, BatchNorm statistics too.

        Args:
            mode (bool): The mode asked for; ignored. Defaults to True.

        Returns:
            CLIPViTPyramidBackbone: self.
        """
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """The pyramid maps of ``out_indices``, then the dense map.

        Args:
            images (Tensor): Images normalised with CLIP's mean and std, shape (B, 3, H, W), H
                and W multiples of the patch size p (ViT) or of 32 (ModifiedResNet).

        Returns:
            Tuple[Tensor, ...]: ``len(out_indices) + 1`` maps. For a ViT, the tokens of each
            block in ``out_indices``, shape (B, width, H/p, W/p); for a ModifiedResNet, each
            stage's output, shape (B, C_i, H/s_i, W/s_i) with :attr:`out_channels` C_i and
            :attr:`out_strides` s_i. Last, the dense map of shape (B, D, H/s, W/s), s =
            :attr:`dense_stride`.
        """
        if self.vlm.is_vit:
            return self._forward_vit(images)
        return self._forward_resnet(images)

    def _forward_vit(self, images: Tensor) -> Tuple[Tensor, ...]:
        visual = self.visual
        batch_size = images.shape[0]
        grid = (images.shape[-2] // self.dense_stride, images.shape[-1] // self.dense_stride)
        tokens = vit_embed_tokens(visual, images)
        wanted = sorted({*self.out_indices, self._dense_index} - {EMBEDDED_TOKENS_INDEX})
        _, intermediates = visual.transformer.forward_intermediates(tokens, indices=wanted,
                                                                    stop_early=True)
        tokens_after = {EMBEDDED_TOKENS_INDEX: tokens, **dict(zip(wanted, intermediates))}
        maps = tuple(tokens_after[index][:, NUM_PREFIX_TOKENS:].transpose(1, 2).reshape(
            batch_size, -1, *grid).contiguous() for index in self.out_indices)
        mode = self.vlm.dense_mode
        patches = vit_last_block_dense(visual.transformer.resblocks[-1],
                                       tokens_after[self._dense_index][:, NUM_PREFIX_TOKENS:],
                                       mode)
        return maps + (vit_tokens_to_map(visual, patches, grid, normalize=mode == 'clim'), )

    def _forward_resnet(self, images: Tensor) -> Tuple[Tensor, ...]:
        height, width = images.shape[-2:]
        stride = RESNET_STAGE_STRIDES[self._dense_index]
        if height % stride or width % stride:
            raise ValueError(f'images: expected height and width divisible by the tower stride '
                             f'{stride}, got {height}x{width}')
        wanted = sorted(set(self.out_indices) | {self._dense_index})
        intermediates = self.visual.forward_intermediates(images, indices=wanted,
                                                          intermediates_only=True)
        outputs = dict(zip(wanted, intermediates['image_intermediates']))
        dense = resnet_dense_from_c5(self.visual, outputs[self._dense_index], self.vlm.dense_mode)
        return tuple(outputs[index] for index in self.out_indices) + (dense, )
