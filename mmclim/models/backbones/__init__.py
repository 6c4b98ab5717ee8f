# Copyright (c) mmclim contributors. All rights reserved.
from .clip_checkpoint import load_clip_checkpoint, read_clip_state_dict, save_clip_checkpoint
from .clip_dense import (boxes_to_patch_mask, interpolate_pos_embed, mask_cell_weights, mask_pool,
                         resnet_dense_features, resnet_dense_from_c5, vit_box_attention_pool,
                         vit_dense_features, vit_embed_tokens, vit_tokens_before_last_block,
                         vit_value_path)
from .clip_text_encoder import CLIPTextEncoder
from .clip_vit_pyramid import CLIPPyramidOutput, CLIPViTPyramidBackbone
from .open_clip_region import MODEL_CONFIG_DIR, OpenCLIPRegion

__all__ = [
    'CLIPPyramidOutput', 'CLIPTextEncoder', 'CLIPViTPyramidBackbone', 'OpenCLIPRegion',
    'MODEL_CONFIG_DIR', 'load_clip_checkpoint', 'read_clip_state_dict', 'save_clip_checkpoint',
    'boxes_to_patch_mask', 'interpolate_pos_embed', 'mask_cell_weights', 'mask_pool',
    'resnet_dense_features', 'resnet_dense_from_c5', 'vit_box_attention_pool', 'vit_dense_features',
    'vit_embed_tokens', 'vit_tokens_before_last_block', 'vit_value_path'
]
