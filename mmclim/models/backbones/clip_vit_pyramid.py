# Copyright (c) mmclim contributors. All rights reserved.
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import Tensor

from .clip_dense import (NUM_PREFIX_TOKENS, RESNET_STRIDE, vit_embed_tokens, vit_last_block_dense,
                         vit_tokens_to_map)
from .open_clip_region import OpenCLIPRegion

# ViT-B/16 blocks whose patch tokens feed the pyramid: CLIM's F-VLM on ViT-B/16 takes the "3th,
# 5th, 7th and 11th attention layers" (paper, Sec. 4.1), 0-based in the official config
# (ovdet/configs/clip_based/openai_vitb16/*.py: out_indices=[3, 5, 7, 11]).
VIT_B_OUT_INDICES = (3, 5, 7, 11)
# The official CLIPViT (ovdet/ovdet/models/backbones/clip_vit.py) runs the last block as
# forward_without_attn, the "v2" block of CLIM's region features; clip_dense calls it 'clim'.
LAST_BLOCK_MODE = 'clim'
# open_clip ModifiedResNet.forward_intermediates numbers the stem 0 and layer1-4 1 to 4; the
# stages C2-C5 (strides 4, 8, 16, 32) are 1 to 4, and C5 feeds the attention pool.
RESNET_STAGE_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}
RESNET_C5_INDEX = 4
# The ViT "block" index of the embedded tokens entering block 0 (the last block's input when the
# ViT has a single block).
EMBEDDED_TOKENS_INDEX = -1


class CLIPPyramidOutput(NamedTuple):
    """What :class:`CLIPViTPyramidBackbone` returns.

    Attributes:
        pyramid (Tuple[Tensor, ...]): One map per ``out_indices`` entry, shape
            (B, C_i, H/s_i, W/s_i) (:attr:`CLIPViTPyramidBackbone.out_channels` C_i and
            :attr:`~CLIPViTPyramidBackbone.out_strides` s_i), for the trainable neck.
        vlm (Tensor, optional): The map the VLM region embeddings are pooled from
            (:meth:`CLIPViTPyramidBackbone.vlm_region_embeddings`): for a ViT the L2-normalised
            "v2" map in the text-embedding space, (B, D, H/p, W/p); for a ModifiedResNet C5,
            (B, 32 * width, H/32, W/32). None unless asked for (``with_vlm=True``).
    """
    pyramid: Tuple[Tensor, ...]
    vlm: Optional[Tensor]


@MODELS.register_module()
class CLIPViTPyramidBackbone(BaseModule):
    """A frozen CLIP image tower as an F-VLM backbone: pyramid maps and the VLM's region source.

    F-VLM (Kuo et al., ICLR 2023) keeps the vision-language model frozen and trains a detector on
    its features; as the official CLIM code builds it (``CLIPViT`` and ``CLIPResNet`` of
    ``ovdet/ovdet/models/backbones/``), one pass of the tower gives:

    - for a ViT, the patch tokens after the blocks ``out_indices`` as maps of stride p (the patch
      size), except that the LAST block runs as CLIM's "v2" block (attention reduced to its value
      path, residual and MLP kept; :func:`~.clip_dense.vit_last_block_dense`), so its map is the
      v2 tokens before ``ln_post``. The learned layers taking these maps to strides 4-32 live in
      the trainable neck (:class:`~mmclim.models.necks.SimplePyramidFPN`);
    - for a ModifiedResNet (e.g. RN50x64), the stage outputs ``out_indices`` (1-4: C2-C5);
    - on request (``with_vlm=True``, at test time), the VLM map whose box pooling
      (:meth:`vlm_region_embeddings`, the wrapped :class:`~.OpenCLIPRegion`'s ``pool_regions``)
      gives F-VLM's VLM region embeddings: the normalised v2 map of a ViT (``ln_post`` and
      ``proj`` of the last block's v2 tokens), or C5 of a ModifiedResNet, pooled by CLIP's
      attention pool. Training never computes it.

    Every parameter is frozen, the module stays in eval mode and computes without a graph.

    Args:
        model_name (str): An open_clip model config accepted by :class:`~.OpenCLIPRegion`, e.g.
            ``'ViT-B-16-quickgelu'``, ``'RN50x64-quickgelu'`` or ``'mmclim-toy-vit'``.
        pretrained (str, optional): Local CLIP checkpoint (OpenAI, open_clip or a CLIM export).
            None keeps random weights, which only suits tests. Defaults to None.
        out_indices (Sequence[int]): For a ViT, the 0-based blocks whose tokens are returned
            (the last one as its v2 tokens); for a ModifiedResNet, the open_clip
            ``forward_intermediates`` blocks, 1-4 for C2-C5. Defaults to ``(3, 5, 7, 11)``,
            CLIM's choice for ViT-B/16.
        init_cfg (dict or List[dict], optional): mmengine initialisation config; the CLIP
            weights come from ``pretrained``, so leave it None. Defaults to None.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 out_indices: Sequence[int] = VIT_B_OUT_INDICES,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # The official region features of each tower: RoIAlign of the normalised v2 map (ViT),
        # C5 RoIAligned to the attention pool's grid then the pool (ModifiedResNet).
        self.region = OpenCLIPRegion(model_name, pretrained=pretrained, unlocked_vision_blocks=0,
                                     freeze_text=True)
        # OpenCLIPRegion leaves logit_scale trainable; F-VLM trains nothing of the VLM.
        self.requires_grad_(False)
        is_vit = self.region.is_vit
        valid = (tuple(range(len(self.visual.transformer.resblocks))) if is_vit else
                 tuple(RESNET_STAGE_STRIDES))
        out_indices = tuple(out_indices)
        if not out_indices or any(index not in valid for index in out_indices):
            kind = (f'0-based blocks of the {len(valid)}-block ViT' if is_vit else
                    'ModifiedResNet stages 1-4 (C2-C5)')
            raise ValueError(f'{type(self).__name__}.out_indices: expected a non-empty sequence '
                             f'of {kind} in {valid}, got {out_indices} (model_name='
                             f'{model_name!r})')
        self.out_indices = out_indices
        self.train()

    @property
    def visual(self) -> Union[VisionTransformer, ModifiedResNet]:
        """The open_clip image tower (``VisionTransformer`` or ``ModifiedResNet``)."""
        return self.region.clip.visual

    @property
    def model_name(self) -> str:
        """The open_clip model config of the tower (class embeddings must come from its text
        tower)."""
        return self.region.model_name

    @property
    def embed_dim(self) -> int:
        """Size D of the image-text embedding space of the VLM region embeddings."""
        return self.region.embed_dim

    @property
    def vlm_stride(self) -> int:
        """Input pixels per cell of the VLM map: the ViT patch size, or 32 for a ModifiedResNet."""
        return self.region.stride

    @property
    def out_channels(self) -> List[int]:
        """Channels of each pyramid map, in ``out_indices`` order."""
        if self.region.is_vit:
            return [self.visual.transformer.width] * len(self.out_indices)
        stages = (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4)
        return [stages[index - 1][-1].conv3.out_channels for index in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        """Stride of each pyramid map, in ``out_indices`` order."""
        if self.region.is_vit:
            return [self.vlm_stride] * len(self.out_indices)
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
    def forward(self, images: Tensor, with_vlm: bool = False) -> CLIPPyramidOutput:
        """The pyramid maps of ``out_indices`` and, with ``with_vlm``, the VLM map.

        Args:
            images (Tensor): Images normalised with CLIP's mean and std, shape (B, 3, H, W), H
                and W multiples of the patch size p (ViT) or of 32 (ModifiedResNet).
            with_vlm (bool): Also return the VLM map (test time). Defaults to False.

        Returns:
            CLIPPyramidOutput: ``pyramid``, ``len(out_indices)`` maps of shape
            (B, C_i, H/s_i, W/s_i), and ``vlm`` (see :class:`CLIPPyramidOutput`) or None.
        """
        if self.region.is_vit:
            return self._forward_vit(images, with_vlm)
        return self._forward_resnet(images, with_vlm)

    def _forward_vit(self, images: Tensor, with_vlm: bool) -> CLIPPyramidOutput:
        visual = self.visual
        last = len(visual.transformer.resblocks) - 1
        grid = (images.shape[-2] // self.vlm_stride, images.shape[-1] // self.vlm_stride)
        tokens = vit_embed_tokens(visual, images)
        needs_last = with_vlm or last in self.out_indices
        wanted = {index for index in self.out_indices if index != last}
        if needs_last:
            wanted.add(last - 1)
        wanted = sorted(wanted - {EMBEDDED_TOKENS_INDEX})
        patches: Dict[int, Tensor] = {EMBEDDED_TOKENS_INDEX: tokens[:, NUM_PREFIX_TOKENS:]}
        if wanted:
            _, intermediates = visual.transformer.forward_intermediates(tokens, indices=wanted,
                                                                        stop_early=True)
            patches.update((index, x[:, NUM_PREFIX_TOKENS:])
                           for index, x in zip(wanted, intermediates))
        if needs_last:
            patches[last] = vit_last_block_dense(visual.transformer.resblocks[last],
                                                 patches[last - 1], LAST_BLOCK_MODE)
        batch_size = images.shape[0]
        pyramid = tuple(patches[index].transpose(1, 2).reshape(batch_size, -1, *grid).contiguous()
                        for index in self.out_indices)
        vlm = vit_tokens_to_map(visual, patches[last], grid, normalize=True) if with_vlm else None
        return CLIPPyramidOutput(pyramid, vlm)

    def _forward_resnet(self, images: Tensor, with_vlm: bool) -> CLIPPyramidOutput:
        height, width = images.shape[-2:]
        if height % RESNET_STRIDE or width % RESNET_STRIDE:
            raise ValueError(f'images: expected height and width divisible by the tower stride '
                             f'{RESNET_STRIDE}, got {height}x{width}')
        wanted = sorted(set(self.out_indices) | ({RESNET_C5_INDEX} if with_vlm else set()))
        intermediates = self.visual.forward_intermediates(images, indices=wanted,
                                                          intermediates_only=True)
        outputs = dict(zip(wanted, intermediates['image_intermediates']))
        return CLIPPyramidOutput(tuple(outputs[index] for index in self.out_indices),
                                 outputs[RESNET_C5_INDEX] if with_vlm else None)

    def vlm_region_embeddings(self, vlm: Tensor, rois: Union[List[Tensor], Tensor]) -> Tensor:
        """F-VLM's VLM region embeddings: boxes pooled from the VLM map, L2-normalised.

        The wrapped :class:`~.OpenCLIPRegion`'s ``pool_regions`` (the official ``clip_pool``):
        for a ViT, the box's 1x1 RoIAlign of the normalised v2 map; for a ModifiedResNet, C5
        RoIAligned to the attention pool's grid, then the pool.

        Args:
            vlm (Tensor): ``vlm`` of :meth:`forward`, shape (B, C, h, w).
            rois (list[Tensor] | Tensor): RoIs (batch index, x1, y1, x2, y2) in input pixels,
                shape (K, 5), or B tensors of boxes of shape (K_i, 4).

        Returns:
            Tensor: Unit embeddings of shape (K, D), in RoI order.
        """
        return self.region.pool_regions(vlm, rois, normalize=True)
