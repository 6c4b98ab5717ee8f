# Copyright (c) mmclim contributors. All rights reserved.
"""The text transformer of an open_clip ``CLIP`` on given token embeddings.

One pass shared by every text embedding of mmclim: captions and class prompts (tokens looked up
in ``token_embedding``) and BARON's pseudo words (region features projected into the
word-embedding space, Wu et al., CVPR 2023), so that both land in the same space.
"""
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import Tensor, nn

# 'projection': CLIP's text embedding, the EOT token after ``ln_final`` and ``text_projection``
# (size D = embed_dim). 'last_block': the EOT token's output of the last transformer block,
# without ``ln_final`` nor the projection (size W = transformer width); the official BARON
# OV-COCO classifier (``coco_clip_hand_craft_attn12.npy``, ovdet ``encode_text_endk`` with
# ``stepk`` = the number of blocks) and its pseudo-word embeddings use it.
TEXT_OUTPUTS = ('projection', 'last_block')


def check_text_output(output: str, field: str = 'output') -> None:
    """Raise a ValueError naming ``field`` unless ``output`` is one of :data:`TEXT_OUTPUTS`."""
    if output not in TEXT_OUTPUTS:
        raise ValueError(f'{field}: expected one of {TEXT_OUTPUTS}, got {output!r}')


def text_tower_output_dim(clip: nn.Module, output: str) -> int:
    """Size of a text output of an open_clip ``CLIP``.

    Args:
        clip (nn.Module): An open_clip ``CLIP``.
        output (str): One of :data:`TEXT_OUTPUTS`.

    Returns:
        int: D (``'projection'``) or the transformer width W (``'last_block'``).
    """
    check_text_output(output)
    width = int(clip.token_embedding.weight.shape[1])
    projection = clip.text_projection
    if output == 'last_block' or projection is None:
        return width
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    return int(projection.shape[-1])


def text_pool_index(clip: nn.Module, tokens: Tensor) -> Tensor:
    """The token whose output embeds each text, by open_clip's rule for the tower.

    Applies open_clip's ``text_global_pool`` with the tower's ``text_pool_type`` (``'argmax'``
    for OpenAI-style towers: the EOT token, the highest id) to the positions.

    Args:
        clip (nn.Module): An open_clip ``CLIP``.
        tokens (Tensor): Token ids of shape (N, L).

    Returns:
        Tensor: Long positions of shape (N,).
    """
    positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    pooled = text_global_pool(positions[..., None], tokens, clip.text_pool_type,
                              eos_token_id=getattr(clip, 'text_eos_id', None))
    return pooled[:, 0]


def encode_text_tower(clip: nn.Module,
                      embeddings: Tensor,
                      eot_index: Tensor,
                      output: str = 'projection',
                      normalize: bool = True) -> Tensor:
    """The text transformer of ``clip`` on token embeddings, read at one token per sequence.

    As open_clip ``CLIP.encode_text`` after its ``token_embedding`` lookup: add
    ``positional_embedding[:L]``, run ``clip.transformer`` with the causal mask cut to L tokens
    (in the tower's cast dtype; the transformer handles ``batch_first``), then take row
    ``eot_index``, after ``ln_final`` and ``text_projection`` for ``'projection'``. A graph is
    built with respect to ``embeddings`` when grad is enabled, whether or not the tower's
    parameters require grad. Shapes are checked by the callers.

    Args:
        clip (nn.Module): An open_clip ``CLIP`` (its ``visual`` may be dropped).
        embeddings (Tensor): Token embeddings of shape (N, L, W), L <= the context length.
        eot_index (Tensor): Long positions of shape (N,) to read, in [0, L).
        output (str): One of :data:`TEXT_OUTPUTS`. Defaults to ``'projection'``.
        normalize (bool): L2-normalise the result. Defaults to True.

    Returns:
        Tensor: Shape (N, D) for ``'projection'``, (N, W) for ``'last_block'``, in the tower's
        cast dtype.
    """
    if not isinstance(clip, open_clip.CLIP):
        raise ValueError(f'clip: expected an open_clip.CLIP, got {type(clip).__name__}')
    check_text_output(output)
    length = embeddings.shape[1]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = embeddings.to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
    x = clip.transformer(x, attn_mask=attn_mask)  # (N, L, W)
    rows = torch.arange(x.shape[0], device=x.device)
    if output == 'last_block':
        x = x[rows, eot_index]
    else:
        # ln_final on every token, then pooled, as CLIP.encode_text (so the same numbers).
        x = clip.ln_final(x)[rows, eot_index]
        projection = clip.text_projection
        if isinstance(projection, nn.Linear):
            x = projection(x)
        elif projection is not None:
            x = x @ projection
    return F.normalize(x, dim=-1) if normalize else x
