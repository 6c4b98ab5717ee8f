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
from .open_clip_region import DEFAULT_TEXT_BATCH_SIZE  # also registers the bundled configs


@MODELS.register_module()
class CLIPTextEncoder(BaseModule):
    """A frozen open_clip text tower that embeds captions for caption-supervised detectors.

    The whole open_clip ``CLIP`` model is built and its local checkpoint loaded strictly (an
    OpenAI or open_clip file, :func:`~.clip_checkpoint.load_clip_checkpoint`), then the image
    tower is dropped: Detic's caption and tag losses only need text embeddings. The tower never
    trains: its parameters do not require grad, it stays in eval mode, and texts are embedded
    without a graph (as the official ``ovdet`` ``CLIPTextEncoder`` with ``freeze=True``).

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

    @property
    def embed_dim(self) -> int:
        """Size D of the text embeddings."""
        return int(self.clip.text_projection.shape[-1])

    def init_weights(self) -> None:
        """Nothing: the weights are the checkpoint's (mmengine would re-initialise them)."""

    def train(self, mode: bool = True) -> 'CLIPTextEncoder':
        """Stay in eval mode whatever ``mode`` says (the tower is frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts: List[str]) -> Tensor:
        """L2-normalised text embeddings.

        Args:
            texts (List[str]): T texts; each is tokenised and truncated to the model's context.

        Returns:
            Tensor: Shape (T, D), float32, no graph.
        """
        if not is_list_of(texts, str):
            raise ValueError(f'texts: expected a list of str, got {texts!r}')
        device = self.clip.token_embedding.weight.device
        embeddings = [self.clip.token_embedding.weight.new_zeros(0, self.embed_dim)]
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start:start + self.batch_size]).to(device)
            embeddings.append(self.clip.encode_text(tokens, normalize=True).float())
        return torch.cat(embeddings)
