# Copyright (c) mmclim contributors. All rights reserved.
"""Dense (per-location) and per-box features of open_clip image towers.

Pure functions on the public submodules of open_clip's ``VisionTransformer`` and
``ModifiedResNet``; the one place where a CLIP tower becomes a dense map in the text-embedding
space. Two modes (:data:`DENSE_MODES`):

- ``'clim'``, the default: the official CLIM code's map (``--extract-type v2``). For a ViT, the
  last block runs per token with its attention reduced to the value path, keeping the residual
  and the MLP, then ``ln_post`` and ``proj``; for a ModifiedResNet, the attention pool's value
  and output projections per location. Every location is L2-normalised.
- ``'maskclip'``: MaskCLIP (Zhou, Loy and Dai 2022): the value path alone (ViT: no residual, no
  MLP), not normalised.

Boxes are pooled from these maps by :func:`mmclim.models.utils.box_pool`.
"""
import math
from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import Tensor

from mmclim.models.utils.box_pool import box_pool

DENSE_MODES = ('clim', 'maskclip')
# ModifiedResNet halves the resolution in the stem conv, in the stem average pool and in each of
# layer2, layer3 and layer4: 2 ** 5.
RESNET_STRIDE = 32
# The ViT class token precedes the patch tokens; the attention pool's mean token likewise.
NUM_PREFIX_TOKENS = 1
# As the official CLIM code resizes positional embeddings to another input size
# (rescale_positional_embedding: F.interpolate bicubic, corners not aligned, no antialiasing);
# open_clip's checkpoint loader antialiases, whose bicubic kernel differs (a = -0.5, not -0.75).
POS_EMBED_INTERPOLATION = 'bicubic'
POS_EMBED_ANTIALIAS = False


def _check_mode(mode: str) -> None:
    if mode not in DENSE_MODES:
        raise ValueError(f'dense mode: expected one of {DENSE_MODES}, got {mode!r}')


def _check_divisible(images: Tensor, stride: int) -> Tuple[int, int]:
    """Feature-map size of ``images`` at ``stride``; raise if the image size is not a multiple."""
    height, width = images.shape[-2:]
    if height % stride or width % stride:
        raise ValueError(f'images: expected height and width divisible by the tower stride '
                         f'{stride}, got {height}x{width}')
    return height // stride, width // stride


def interpolate_pos_embed(pos_embed: Tensor, src_grid: Tuple[int, int],
                          dst_grid: Tuple[int, int]) -> Tensor:
    """Resize a positional embedding with one prefix token to another grid, bicubically.

    The interpolation is the official CLIM code's (``rescale_positional_embedding`` of its ViT
    and attention pool: bicubic, corners not aligned, no antialiasing), so the dense maps at
    1024 pixels are those it trained and evaluated.

    Args:
        pos_embed (Tensor): The embedding of the prefix token followed by the grid, row-major,
            of shape (1 + src_h * src_w, C).
        src_grid (Tuple[int, int]): (src_h, src_w), the grid ``pos_embed`` was trained on.
        dst_grid (Tuple[int, int]): (dst_h, dst_w), the grid to resize to.

    Returns:
        Tensor: Shape (1 + dst_h * dst_w, C); ``pos_embed`` itself when the grids are equal.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    prefix, grid = pos_embed[:NUM_PREFIX_TOKENS], pos_embed[NUM_PREFIX_TOKENS:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, *src_grid, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(dst_grid), mode=POS_EMBED_INTERPOLATION,
                         antialias=POS_EMBED_ANTIALIAS, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(-1, channels)
    return torch.cat([prefix, grid], dim=0)


def vit_embed_tokens(visual: VisionTransformer, images: Tensor) -> Tensor:
    """Tokens entering the first transformer block of a ViT, at any input size.

    Patch embedding, class token, positional embedding interpolated from the trained grid to the
    input's grid (:func:`interpolate_pos_embed`, as the official CLIM code resizes it) and
    ``ln_pre``. Patch dropout is not applied: dense features need every patch. open_clip's
    ``VisionTransformer.forward_intermediates`` adds the trained positional embedding as it is,
    so it only runs at the native size; its transformer's ``forward_intermediates`` takes these
    tokens at any size.

    Args:
        visual (VisionTransformer): An open_clip ViT image tower.
        images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of the patch
            size p.

    Returns:
        Tensor: Class token then patch tokens (row-major), shape (B, 1 + H/p * W/p, width).
    """
    grid = _check_divisible(images, visual.patch_size[0])
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    class_token = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([class_token, x], dim=1)
    pos_embed = interpolate_pos_embed(visual.positional_embedding, visual.grid_size, grid)
    return visual.ln_pre(x + pos_embed.to(x.dtype))


def vit_tokens_before_last_block(visual: VisionTransformer, images: Tensor) -> Tensor:
    """Tokens entering the last transformer block of a ViT, at any input size.

    Patch embedding, class token, positional embedding (interpolated from the trained grid to the
    input's grid), ``ln_pre`` and every block but the last. Patch dropout is not applied: dense
    features need every patch. Gradient checkpointing set with
    ``visual.set_grad_checkpointing()`` is honoured.

    Args:
        visual (VisionTransformer): An open_clip ViT image tower.
        images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of the patch
            size p.

    Returns:
        Tensor: Class token then patch tokens (row-major), shape (B, 1 + H/p * W/p, width).
    """
    x = vit_embed_tokens(visual, images)
    num_blocks = len(visual.transformer.resblocks)
    if num_blocks > 1:
        x, _ = visual.transformer.forward_intermediates(x, indices=[num_blocks - 2],
                                                        stop_early=True)
    return x


def vit_value_path(block: ResidualAttentionBlock, tokens: Tensor) -> Tensor:
    """The attention branch of a block with attention reduced to its value path (MaskCLIP).

    ``ls_1(out_proj(v(ln_1(x))))`` per token: no query or key. ``v`` is the value slice of
    ``attn.in_proj_weight`` and ``attn.in_proj_bias``.

    Args:
        block (ResidualAttentionBlock): An open_clip block built on ``nn.MultiheadAttention``.
        tokens (Tensor): Shape (B, N, width).

    Returns:
        Tensor: Shape (B, N, width).
    """
    attn = block.attn
    value_weight = attn.in_proj_weight.chunk(3, dim=0)[-1]
    value_bias = None if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3, dim=0)[-1]
    values = F.linear(block.ln_1(tokens), value_weight, value_bias)
    return block.ls_1(attn.out_proj(values))


def vit_last_block_dense(block: ResidualAttentionBlock, tokens: Tensor, mode: str) -> Tensor:
    """The last ViT block applied to every token independently, as the dense map needs it.

    - ``'clim'``: CLIM's official dense map (its "v2" region features): the block with its
      attention reduced to the value path but keeping the residual and the MLP,
      ``x = t + ls_1(attn_v(ln_1(t)))``, ``x = x + ls_2(mlp(ln_2(x)))``.
    - ``'maskclip'``: MaskCLIP (Zhou, Loy and Dai 2022): the value path alone, no residual and
      no MLP, ``ls_1(attn_v(ln_1(t)))``.

    Args:
        block (ResidualAttentionBlock): The last block of an open_clip ViT.
        tokens (Tensor): Tokens entering the block, shape (B, N, width).
        mode (str): One of :data:`DENSE_MODES`.

    Returns:
        Tensor: Shape (B, N, width), to go through ``ln_post`` and ``proj``.
    """
    _check_mode(mode)
    values = vit_value_path(block, tokens)
    if mode == 'maskclip':
        return values
    x = tokens + values
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def vit_tokens_to_map(visual: VisionTransformer, tokens: Tensor, grid: Tuple[int, int],
                      normalize: bool) -> Tensor:
    """Patch tokens of the last block into the text-embedding space, as a map.

    Args:
        visual (VisionTransformer): An open_clip ViT with ``ln_post`` and ``proj``.
        tokens (Tensor): Patch tokens (no class token), row-major, shape (B, h * w, width).
        grid (Tuple[int, int]): (h, w).
        normalize (bool): L2-normalise every location.

    Returns:
        Tensor: Shape (B, D, h, w).
    """
    features = visual.ln_post(tokens) @ visual.proj
    if normalize:
        features = F.normalize(features, dim=-1)
    return features.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous()


def vit_dense_features(visual: VisionTransformer, images: Tensor, mode: str = 'clim') -> Tensor:
    """Dense features of a ViT in the embedding space shared with the text tower.

    The tokens entering the last block go through :func:`vit_last_block_dense`, ``ln_post`` and
    ``proj``; in ``'clim'`` mode every location is then L2-normalised, as the official CLIM code
    does before pooling boxes (``_extract_roi_features_v2``).

    Args:
        visual (VisionTransformer): An open_clip ViT image tower whose last block is a
            ``ResidualAttentionBlock`` and which has ``ln_post`` and ``proj``.
        images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of the patch
            size p.
        mode (str): One of :data:`DENSE_MODES`. Defaults to ``'clim'``.

    Returns:
        Tensor: Shape (B, D, H/p, W/p), D the output embedding size.
    """
    grid = _check_divisible(images, visual.patch_size[0])
    tokens = vit_tokens_before_last_block(visual, images)
    patches = vit_last_block_dense(visual.transformer.resblocks[-1], tokens[:, NUM_PREFIX_TOKENS:],
                                   mode)
    return vit_tokens_to_map(visual, patches, grid, normalize=mode == 'clim')


def boxes_to_patch_mask(boxes: Tensor, grid: Tuple[int, int], patch_size: int) -> Tensor:
    """Which patches of a grid each box covers.

    A patch is inside a box when its cell overlaps the box, the cells spanning
    ``floor(x1 / p)`` to ``ceil(x2 / p)`` (and likewise in y). At least one cell is admitted per
    axis, so a box smaller than a patch or outside the image still selects the nearest cell.

    Args:
        boxes (Tensor): Boxes (x1, y1, x2, y2) in input-image pixels, shape (K, 4).
        grid (Tuple[int, int]): The patch grid (h, w).
        patch_size (int): The patch size p in pixels.

    Returns:
        Tensor: Boolean mask of shape (K, h * w), row-major like the patch tokens.
    """
    def axis_mask(low: Tensor, high: Tensor, size: int) -> Tensor:
        first = torch.floor(low / patch_size).clamp(0, size - 1)
        stop = torch.maximum(torch.ceil(high / patch_size).clamp(max=size), first + 1)
        cells = torch.arange(size, device=boxes.device, dtype=boxes.dtype)
        return (cells >= first[:, None]) & (cells < stop[:, None])

    rows = axis_mask(boxes[:, 1], boxes[:, 3], grid[0])
    cols = axis_mask(boxes[:, 0], boxes[:, 2], grid[1])
    return (rows[:, :, None] & cols[:, None, :]).flatten(1)


def vit_box_attention_pool(visual: VisionTransformer, tokens: Tensor, boxes: List[Tensor],
                           grid: Tuple[int, int]) -> Tensor:
    """Pool each box with the last block's class-token query restricted to the box's patches.

    For box k of image b, the class token of image b is the query of the last block's attention;
    the keys and values are the class token itself and the patch tokens inside the box
    (:func:`boxes_to_patch_mask`); every other patch is masked out. The rest of the block
    (residual, MLP), ``ln_post`` and ``proj`` follow as for the global embedding, so a box that
    admits every patch reproduces the ViT's global (class-token) embedding.

    Args:
        visual (VisionTransformer): An open_clip ViT image tower with class-token pooling.
        tokens (Tensor): Output of :func:`vit_tokens_before_last_block`, shape
            (B, 1 + h * w, width).
        boxes (List[Tensor]): Per image, boxes (x1, y1, x2, y2) in input-image pixels of shape
            (K_i, 4).
        grid (Tuple[int, int]): The patch grid (h, w) of ``tokens``.

    Returns:
        Tensor: Region embeddings in image then box order, shape (sum K_i, D).
    """
    block = visual.transformer.resblocks[-1]
    num_boxes = torch.tensor([len(b) for b in boxes], device=tokens.device)
    max_boxes = int(num_boxes.max()) if len(boxes) else 0
    if max_boxes == 0:
        return tokens.new_zeros(0, visual.proj.shape[1])
    batch_size, num_tokens, _ = tokens.shape
    is_box = torch.arange(max_boxes, device=tokens.device) < num_boxes[:, None]
    # Padding rows admit every token (no fully masked softmax row) and are dropped below.
    admitted = tokens.new_ones(batch_size, max_boxes, num_tokens, dtype=torch.bool)
    for image_id, image_boxes in enumerate(boxes):
        patch_mask = boxes_to_patch_mask(image_boxes.to(tokens), grid,
                                         visual.patch_size[0])
        admitted[image_id, :len(image_boxes), NUM_PREFIX_TOKENS:] = patch_mask
    attn_bias = tokens.new_zeros(admitted.shape).masked_fill(~admitted, float('-inf'))
    attn_bias = attn_bias.repeat_interleave(block.attn.num_heads, dim=0)

    class_token = tokens[:, :NUM_PREFIX_TOKENS]
    keys = block.ln_1(tokens)
    queries = block.ln_1(class_token).expand(-1, max_boxes, -1)
    x = class_token + block.ls_1(block.attention(q_x=queries, k_x=keys, v_x=keys,
                                                 attn_mask=attn_bias))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return visual.ln_post(x[is_box]) @ visual.proj


def resnet_c5(visual: ModifiedResNet, images: Tensor) -> Tensor:
    """The last stage's output of a ModifiedResNet (stem and ``layer1`` to ``layer4``).

    Args:
        visual (ModifiedResNet): An open_clip ModifiedResNet image tower.
        images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of 32.

    Returns:
        Tensor: Shape (B, 32 * width, H/32, W/32).
    """
    _check_divisible(images, RESNET_STRIDE)
    x = visual.stem(images)
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = stage(x)
    return x


def resnet_dense_features(visual: ModifiedResNet, images: Tensor, mode: str = 'clim') -> Tensor:
    """Dense features of a ModifiedResNet (the RN50x64 family): :func:`resnet_dense_from_c5`
    of :func:`resnet_c5`.

    Args:
        visual (ModifiedResNet): An open_clip ModifiedResNet image tower.
        images (Tensor): Normalised images of shape (B, 3, H, W), H and W multiples of 32.
        mode (str): One of :data:`DENSE_MODES`. Defaults to ``'clim'``.

    Returns:
        Tensor: Shape (B, D, H/32, W/32), D the output embedding size.
    """
    return resnet_dense_from_c5(visual, resnet_c5(visual, images), mode)


def resnet_dense_from_c5(visual: ModifiedResNet, c5: Tensor, mode: str = 'clim') -> Tensor:
    """Dense map of a ModifiedResNet from its last stage's output.

    The attention pool reduced to its value path per location, ``c_proj(v_proj(x + pos))``, the
    pool's positional embedding interpolated to the map size; L2-normalised per location in
    ``'clim'`` mode (the official CLIM code's ``encode_dense``).

    Args:
        visual (ModifiedResNet): An open_clip ModifiedResNet image tower.
        c5 (Tensor): Output of ``visual.layer4``, shape (B, 32 * width, h, w).
        mode (str): One of :data:`DENSE_MODES`. Defaults to ``'clim'``.

    Returns:
        Tensor: Shape (B, D, h, w), D the output embedding size.
    """
    _check_mode(mode)
    batch_size, _, height, width = c5.shape
    pool = visual.attnpool
    pos_embed = interpolate_pos_embed(pool.positional_embedding, resnet_pool_grid(visual),
                                      (height, width))[NUM_PREFIX_TOKENS:]
    tokens = c5.flatten(2).transpose(1, 2) + pos_embed.to(c5.dtype)
    features = pool.c_proj(pool.v_proj(tokens))
    if mode == 'clim':
        features = F.normalize(features, dim=-1)
    return features.transpose(1, 2).reshape(batch_size, -1, height, width).contiguous()


def resnet_pool_grid(visual: ModifiedResNet) -> Tuple[int, int]:
    """The grid the attention pool's positional embedding was trained on (14 x 14 for RN50x64
    at 448 pixels)."""
    side = math.isqrt(visual.attnpool.positional_embedding.shape[0] - NUM_PREFIX_TOKENS)
    return side, side


def resnet_attnpool_regions(visual: ModifiedResNet, c5: Tensor,
                            boxes: Union[List[Tensor], Tensor]) -> Tensor:
    """Region embeddings of a ModifiedResNet: each box RoIAligned from C5 to the attention
    pool's trained grid, then CLIP's own attention pool.

    This is the official CLIM code's region feature of a ResNet (``_extract_roi_features_v2``:
    a 14 x 14 RoIAlign on C5 for RN50x64, then ``attnpool``) and F-VLM's VLM region score.

    Args:
        visual (ModifiedResNet): An open_clip ModifiedResNet image tower.
        c5 (Tensor): Output of ``visual.layer4``, shape (B, 32 * width, h, w).
        boxes (list[Tensor] | Tensor): B tensors of boxes (x1, y1, x2, y2) in input pixels of
            shape (K_i, 4), or RoIs of shape (K, 5).

    Returns:
        Tensor: Shape (K, D), images then boxes in order.
    """
    side = resnet_pool_grid(visual)[0]
    pooled = box_pool(c5, boxes, RESNET_STRIDE, output_size=side)
    if pooled.shape[0] == 0:
        return c5.new_zeros(0, visual.output_dim)
    return visual.attnpool(pooled)


def mask_cell_weights(masks: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Fraction of each dense-map cell that each mask covers.

    Each cell of the grid spans an (H/h) x (W/w) block of mask pixels; its weight is the mean of
    the mask over the block (average pooling with that kernel and stride), so a binary mask gives
    the covered area fraction and a soft mask its area-weighted mean.

    Args:
        masks (Tensor): Masks in input-image pixels, bool or with values in [0, 1], shape
            (K, H, W), H and W multiples of h and w.
        grid (Tuple[int, int]): The dense-map size (h, w).

    Returns:
        Tensor: Float weights in [0, 1] of shape (K, h, w).
    """
    height, width = masks.shape[-2:]
    if height % grid[0] or width % grid[1]:
        raise ValueError(f'masks: expected height and width multiples of the dense map size '
                         f'{tuple(grid)}, got {height}x{width}')
    masks = masks.float()
    if masks.numel() and (masks.min() < 0 or masks.max() > 1):
        raise ValueError(f'masks: expected bool or values in [0, 1], got values in '
                         f'[{masks.min().item():g}, {masks.max().item():g}]')
    kernel = (height // grid[0], width // grid[1])
    return F.avg_pool2d(masks[:, None], kernel_size=kernel, stride=kernel)[:, 0]


def mask_pool(dense: Tensor, masks: List[Tensor]) -> Tensor:
    """Average a dense map over each mask, weighting every cell by the mask's area in it.

    The feature of mask k is ``sum_c w_k(c) * dense(c) / sum_c w_k(c)`` with the cell weights
    of :func:`mask_cell_weights`. A cell-aligned box mask thus gives the mean of the box's cells,
    and the full-image mask the spatial mean of the map. An empty mask (all weights zero) falls
    back to the spatial mean of the map: the whole image is the only context left to classify,
    whereas a zero vector would have no direction.

    Args:
        dense (Tensor): Dense features of shape (B, D, h, w).
        masks (List[Tensor]): B tensors of masks in input-image pixels, bool or with values in
            [0, 1], of shape (K_i, H, W), H and W multiples of h and w.

    Returns:
        Tensor: Shape (sum K_i, D), image then mask order, in the dtype of ``dense``.
    """
    grid = tuple(dense.shape[-2:])
    features = [dense.new_zeros(0, dense.shape[1])]
    for image_dense, image_masks in zip(dense, masks):
        weights = mask_cell_weights(image_masks.to(dense.device), grid).flatten(1)
        empty = weights.sum(dim=1) == 0
        weights = torch.where(empty[:, None], torch.ones_like(weights), weights)
        weights = weights / weights.sum(dim=1, keepdim=True)
        features.append(weights.to(dense.dtype) @ image_dense.flatten(1).T)
    return torch.cat(features)
