# Copyright (c) mmclim contributors. All rights reserved.
from typing import List, Optional

import open_clip
import torch
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.utils import is_list_of
from torch import Tensor, nn

from .clip_checkpoint import load_clip_checkpoint
from .clip_text_paths import (TEXT_OUTPUTS, check_text_output, encode_text_tower, text_pool_index,
                              text_tower_output_dim)
from .open_clip_region import DEFAULT_TEXT_BATCH_SIZE  # also registers the bundled configs

# Token id of the padding after the EOT token: open_clip's SimpleTokenizer pads with 0, as
# ovdet's prepare_pseudo_text_tensor does for pseudo words.
PAD_TOKEN_ID = 0
# Pseudo-word sequences are the words between the SOT and EOT tokens.
NUM_SPECIAL_TOKENS = 2

__all__ = ['CLIPTextEncoder', 'TEXT_OUTPUTS', 'PAD_TOKEN_ID']


@MODELS.register_module()
class CLIPTextEncoder(BaseModule):
    """A frozen open_clip text tower that embeds captions for caption-supervised detectors.

    The whole open_clip ``CLIP`` model is built and its local checkpoint loaded strictly (an
    OpenAI or open_clip file, :func:`~.clip_checkpoint.load_clip_checkpoint`), then the image
    tower is dropped: Detic's caption and tag losses only need text embeddings. The tower never
    trains: its parameters do not require grad, it stays in eval mode, and texts are embedded
    without a graph (as the official ``ovdet`` ``CLIPTextEncoder`` with ``freeze=True``).

    BARON (Wu et al., CVPR 2023) runs "pseudo words", region features projected into the
    word-embedding space, through the same frozen tower: :meth:`encode_pseudo_words` and
    :meth:`encode_token_embeddings` build a graph with respect to the words (gradients reach the
    region features) while the tower's parameters get none. Every text path is one function,
    :func:`~.clip_text_paths.encode_text_tower`, with the outputs of :data:`TEXT_OUTPUTS`.

    Args:
        model_name (str): An open_clip model config, e.g. ``'ViT-B-32-quickgelu'`` (the text
            tower of the official Detic configs: ``configs/detic/README.md``) or the bundled
            ``'mmclim-toy-vit'``.
        pretrained (str, optional): Local CLIP checkpoint. None keeps the random initialisation
            (tests only; a warning says so). Defaults to None.
        batch_size (int): Texts per forward pass. Defaults to 256.
        init_cfg (dict, optional): Unused (the weights come from ``pretrained``). Defaults to
            None.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if batch_size < 1:
            raise ValueError(f'{type(self).__name__}.batch_size: expected a positive int, got '
                             f'{batch_size}')
        self.model_name = model_name
        self.batch_size = batch_size
        clip = open_clip.create_model(model_name, pretrained=None)
        if pretrained is None:
            print_log(f'{type(self).__name__}: no pretrained weights for {model_name!r}; the text '
                      'tower is random', logger='current', level=30)
        else:
            load_clip_checkpoint(clip, pretrained)
        clip.visual = nn.Identity()  # encode_text does not use the image tower
        clip.requires_grad_(False)
        self.clip = clip.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        # open_clip's SimpleTokenizer names its special tokens; other tokenizers may not.
        self.sot_token_id: Optional[int] = getattr(self.tokenizer, 'sot_token_id', None)
        self.eot_token_id: Optional[int] = getattr(self.tokenizer, 'eot_token_id', None)

    @property
    def embed_dim(self) -> int:
        """Size D of the text embeddings."""
        return int(self.clip.text_projection.shape[-1])

    @property
    def word_dim(self) -> int:
        """Size W of the token (word) embeddings, the transformer width."""
        return int(self.clip.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        """The most tokens a sequence may have (rows of the positional embedding)."""
        return int(self.clip.positional_embedding.shape[0])

    def output_dim(self, output: str) -> int:
        """Size of a text output.

        Args:
            output (str): One of :data:`TEXT_OUTPUTS`.

        Returns:
            int: :attr:`embed_dim` D for ``'projection'``, :attr:`word_dim` W for
            ``'last_block'``.
        """
        return text_tower_output_dim(self.clip, output)

    def init_weights(self) -> None:
        """Nothing: the weights are the checkpoint's (mmengine would re-initialise them)."""

    def train(self, mode: bool = True) -> 'CLIPTextEncoder':
        """Stay in eval mode whatever ``mode`` says (the tower is frozen)."""
        return super().train(False)

    def encode_token_embeddings(self,
                                embeddings: Tensor,
                                eot_index: Tensor,
                                output: str = 'projection',
                                normalize: bool = True) -> Tensor:
        """The frozen text transformer on given token embeddings, read at one token each.

        A graph is built with respect to ``embeddings`` when grad is enabled (the tower's own
        parameters stay without grad).

        Args:
            embeddings (Tensor): Token embeddings (e.g. ``clip.token_embedding(tokens)``) of
                shape (N, L, W), L <= :attr:`context_length`.
            eot_index (Tensor): Long positions in [0, L) of shape (N,): the token read in each
                sequence (the EOT token for CLIP's embedding).
            output (str): One of :data:`TEXT_OUTPUTS`. Defaults to ``'projection'``.
            normalize (bool): L2-normalise the result. Defaults to True.

        Returns:
            Tensor: Shape (N, D) for ``'projection'``, (N, W) for ``'last_block'``.
        """
        check_text_output(output)
        if embeddings.ndim != 3 or embeddings.shape[-1] != self.word_dim:
            raise ValueError(f'embeddings: expected shape (N, L, {self.word_dim}) (W = the '
                             f'word_dim of {self.model_name!r}), got {tuple(embeddings.shape)}')
        num, length = embeddings.shape[:2]
        if length > self.context_length:
            raise ValueError(f'embeddings: {length} tokens exceed the context length '
                             f'{self.context_length} of {self.model_name!r}')
        if (eot_index.shape != (num, ) or eot_index.dtype.is_floating_point
                or eot_index.dtype == torch.bool):
            raise ValueError(f'eot_index: expected an integer tensor of shape ({num},), got '
                             f'{eot_index.dtype} of shape {tuple(eot_index.shape)}')
        if num and (int(eot_index.min()) < 0 or int(eot_index.max()) >= length):
            raise ValueError(f'eot_index: expected positions in [0, {length}), got values in '
                             f'[{int(eot_index.min())}, {int(eot_index.max())}]')
        return encode_text_tower(self.clip, embeddings, eot_index.long(), output, normalize)

    def encode_pseudo_words(self,
                            words: Tensor,
                            keep: Optional[Tensor] = None,
                            output: str = 'projection',
                            normalize: bool = True) -> Tensor:
        """Embed sequences of pseudo words as CLIP embeds the words of a caption.

        Each row becomes the K + 2 token embeddings [SOT, its kept words in order, EOT, then
        the embedding of token :data:`PAD_TOKEN_ID`] (ovdet's ``prepare_pseudo_text_tensor``)
        and is read at its EOT token (:meth:`encode_token_embeddings`). With the causal mask,
        the words of a tokenised caption give that caption's embedding.

        Args:
            words (Tensor): Pseudo words of shape (N, K, W), W = :attr:`word_dim`;
                K + 2 <= :attr:`context_length`.
            keep (Tensor, optional): Bool of shape (N, K): the words of each row to use, at
                least one per row. None keeps them all. Defaults to None.
            output (str): One of :data:`TEXT_OUTPUTS`. Defaults to ``'projection'``.
            normalize (bool): L2-normalise the result. Defaults to True.

        Returns:
            Tensor: Shape (N, D) for ``'projection'``, (N, W) for ``'last_block'``.
        """
        check_text_output(output)
        if words.ndim != 3 or words.shape[-1] != self.word_dim:
            raise ValueError(f'words: expected shape (N, K, {self.word_dim}) (W = the word_dim '
                             f'of {self.model_name!r}), got {tuple(words.shape)}')
        num, num_words, width = words.shape
        if num_words < 1:
            raise ValueError('words: expected at least one word per row (K >= 1), got K = 0')
        if num_words + NUM_SPECIAL_TOKENS > self.context_length:
            raise ValueError(f'words: num_words K={num_words} plus SOT and EOT exceeds the '
                             f'context length {self.context_length} of {self.model_name!r} '
                             f'(at most {self.context_length - NUM_SPECIAL_TOKENS} words)')
        if keep is None:
            keep = words.new_ones(num, num_words, dtype=torch.bool)
        elif keep.dtype != torch.bool or keep.shape != (num, num_words):
            raise ValueError(f'keep: expected a bool tensor of shape ({num}, {num_words}) like '
                             f'words, got {keep.dtype} of shape {tuple(keep.shape)}')
        num_kept = keep.sum(dim=1)  # (N,)
        if num and not bool((num_kept > 0).all()):
            empty = torch.nonzero(num_kept == 0).flatten().tolist()
            raise ValueError(f'keep: every row must keep at least one word; rows {empty} keep '
                             'none')
        if self.sot_token_id is None or self.eot_token_id is None:
            raise ValueError(f'model_name: the tokenizer of {self.model_name!r} '
                             f'({type(self.tokenizer).__name__}) has no sot_token_id and '
                             'eot_token_id for pseudo-word sequences')
        special = self.clip.token_embedding(
            torch.tensor([self.sot_token_id, self.eot_token_id, PAD_TOKEN_ID],
                         device=words.device)).to(words.dtype)
        sot, eot, pad = (token.expand(num, 1, width) for token in special)
        # Kept words first, each group in its order (a stable sort of "dropped").
        order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
        packed = torch.cat([words.gather(1, order[..., None].expand(-1, -1, width)), pad], dim=1)
        slots = torch.arange(num_words + 1, device=words.device)  # (K + 1,)
        used = (slots < num_kept[:, None])[..., None]  # (N, K + 1, 1)
        is_eot = (slots == num_kept[:, None])[..., None]
        body = torch.where(used, packed, torch.where(is_eot, eot, pad))
        sequences = torch.cat([sot, body], dim=1)  # (N, K + 2, W)
        return encode_text_tower(self.clip, sequences, num_kept + 1, output, normalize)

    @torch.no_grad()
    def encode_text(self,
                    texts: List[str],
                    normalize: bool = True,
                    batch_size: Optional[int] = None,
                    output: str = 'projection') -> Tensor:
        """Text embeddings, as :meth:`~.OpenCLIPRegion.encode_text` of the same CLIP makes them
        (so :func:`mmclim.evaluation.metrics.compute_text_embeddings` embeds prompts with
        either tower), never with a graph.

        Args:
            texts (List[str]): T texts; each is tokenised and truncated to the model's context.
            normalize (bool): L2-normalise the embeddings. Defaults to True.
            batch_size (int, optional): Texts per forward pass; None is the tower's
                ``batch_size``. Defaults to None.
            output (str): One of :data:`TEXT_OUTPUTS`. Defaults to ``'projection'``.

        Returns:
            Tensor: Shape (T, D) for ``'projection'``, (T, W) for ``'last_block'``, float32.
        """
        if not is_list_of(texts, str):
            raise ValueError(f'texts: expected a list of str, got {texts!r}')
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f'batch_size: expected a positive int, got {batch_size}')
        check_text_output(output)
        device = self.clip.token_embedding.weight.device
        embeddings = [self.clip.token_embedding.weight.new_zeros(0, self.output_dim(output))]
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start:start + batch_size]).to(device)
            embeddings.append(
                encode_text_tower(self.clip, self.clip.token_embedding(tokens),
                                  text_pool_index(self.clip, tokens), output, normalize).float())
        return torch.cat(embeddings)

    def forward(self, texts: List[str], output: str = 'projection') -> Tensor:
        """L2-normalised text embeddings (:meth:`encode_text`).

        Args:
            texts (List[str]): T texts; each is tokenised and truncated to the model's context.
            output (str): One of :data:`TEXT_OUTPUTS`. Defaults to ``'projection'``.

        Returns:
            Tensor: Shape (T, D) for ``'projection'``, (T, W) for ``'last_block'``, float32,
            no graph.
        """
        return self.encode_text(texts, output=output)
