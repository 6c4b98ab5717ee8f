# Copyright (c) mmclim contributors. All rights reserved.
from typing import Optional

import torch
from torch import Tensor, nn

from mmclim.structures import load_vocabulary
from ..utils.bag_of_regions import drop_words

# Official BaronBBoxHead (wusize/ovdet ovdet/models/roi_heads/baron_bbox_heads/bbox_head.py):
# 4 pseudo words per region, half of them dropped in training (words_drop_ratio).
DEFAULT_NUM_WORDS = 4
DEFAULT_WORD_DROP_RATIO = 0.5


class PseudoWordClassifier(nn.Module):
    """BARON's region classifier: region features become pseudo words that the frozen CLIP
    text tower reads as a sentence (Wu et al., CVPR 2023, "Aligning Bag of Regions for
    Open-Vocabulary Object Detection", Sec. 3.2).

    A region feature is projected to ``num_words`` vectors in the text tower's word-embedding
    space (size W); in training each word is dropped with probability ``word_drop_ratio``
    (at least one kept per region); the kept words, between the start and end tokens, go through
    the text transformer; the end token's output (``text_output``: CLIP's projected embedding,
    or the last block's output before the final LayerNorm, the official OV-COCO "attn12"
    classifier) is L2-normalised and compared with the class embeddings and a zero background
    embedding: ``logit_scale`` times the cosine, plus a learned ``bias`` in training only (the
    official ``BaronBBoxHead.pred_cls_logits``). The logits are read by a sigmoid loss.

    The text tower is the detector's, attached with :meth:`attach_text_encoder` (not a
    submodule here: its weights belong to the detector once). The class embeddings must come
    from the same tower and output (``tools/generate_text_embeddings.py --text-output``), which
    their sidecar states and :func:`mmclim.structures.load_class_embeddings` checks.

    Args:
        in_features (int): Size of the region features.
        class_embeddings (str): ``.npy`` of shape (C, D') with its sidecar, rows in label order.
        split_file (str): The open-vocabulary split of the C classes.
        clip_model_name (str, optional): The text tower's open_clip model, filled in by the
            detector and checked against the sidecar. Defaults to None.
        embed_dim (int, optional): The tower's projected embedding size D. Defaults to None.
        word_dim (int, optional): The tower's word-embedding size W, filled in by the detector;
            required. Defaults to None.
        num_words (int): Pseudo words per region. Defaults to 4 (official).
        word_drop_ratio (float): Probability of dropping a word in training. Defaults to 0.5
            (official).
        text_output (str): ``'projection'`` (D' = D) or ``'last_block'`` (D' = W, official on
            OV-COCO). Defaults to ``'projection'``.
        logit_scale (float): Multiplier of the cosine similarities. Defaults to 25 (official
            ``cls_temp`` on OV-COCO).
        bias (float, optional): Initial learned bias of the training logits. Defaults to None.
    """

    def __init__(self,
                 in_features: int,
                 class_embeddings: str,
                 split_file: str,
                 clip_model_name: Optional[str] = None,
                 embed_dim: Optional[int] = None,
                 word_dim: Optional[int] = None,
                 num_words: int = DEFAULT_NUM_WORDS,
                 word_drop_ratio: float = DEFAULT_WORD_DROP_RATIO,
                 text_output: str = 'projection',
                 logit_scale: float = 25.0,
                 bias: Optional[float] = None) -> None:
        super().__init__()
        field = 'bbox_head'
        if word_dim is None:
            raise ValueError(f'{field}.word_dim: not set; the detector fills it in from its text '
                             'tower (build the head through BaronDetector)')
        if not (isinstance(num_words, int) and num_words >= 1):
            raise ValueError(f'{field}.num_words: expected an int >= 1, got {num_words!r}')
        if not 0 <= word_drop_ratio < 1:
            raise ValueError(f'{field}.word_drop_ratio: expected a number in [0, 1), got '
                             f'{word_drop_ratio!r}')
        if text_output not in ('projection', 'last_block'):
            raise ValueError(f"{field}.text_output: expected 'projection' or 'last_block', got "
                             f'{text_output!r}')
        if logit_scale <= 0:
            raise ValueError(f'{field}.logit_scale: expected a positive number, got '
                             f'{logit_scale}')
        out_dim = word_dim if text_output == 'last_block' else embed_dim
        embeddings, novel_mask = load_vocabulary(
            class_embeddings, split_file, field, model_name=clip_model_name, embed_dim=out_dim,
            text_output=text_output)
        self.register_buffer('class_embeddings', embeddings, persistent=False)
        self.register_buffer('novel_mask', novel_mask, persistent=False)
        self.num_words = num_words
        self.word_dim = int(word_dim)
        self.word_drop_ratio = float(word_drop_ratio)
        self.text_output = text_output
        self.projection = nn.Linear(in_features, num_words * self.word_dim)
        self.logit_scale = float(logit_scale)
        self.bias = None if bias is None else nn.Parameter(torch.tensor(float(bias)))
        self._text_encoder = []  # a list: the tower is the detector's submodule, not ours

    @property
    def num_classes(self) -> int:
        """Number C of classes (background excluded)."""
        return self.class_embeddings.shape[0]

    def attach_text_encoder(self, text_encoder: nn.Module) -> None:
        """Use ``text_encoder`` (a :class:`~mmclim.models.backbones.CLIPTextEncoder` whose
        word size is ``word_dim``) to read the pseudo words."""
        if text_encoder.word_dim != self.word_dim:
            raise ValueError(f'bbox_head.word_dim: {self.word_dim}, but the text tower embeds '
                             f'words in {text_encoder.word_dim} dimensions')
        self._text_encoder[:] = [text_encoder]

    @property
    def text_encoder(self) -> nn.Module:
        """The attached text tower."""
        if not self._text_encoder:
            raise RuntimeError('PseudoWordClassifier: no text tower attached; build the head '
                               'through BaronDetector, which attaches its text_encoder')
        return self._text_encoder[0]

    def embed(self, x: Tensor) -> Tensor:
        """Region features as pseudo words.

        Args:
            x (Tensor): Shape (N, in_features).

        Returns:
            Tensor: Shape (N, num_words, W).
        """
        return self.projection(x).view(x.shape[0], self.num_words, self.word_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the C classes then background (always 0 before the bias).

        Args:
            x (Tensor): Region features of shape (N, in_features).

        Returns:
            Tensor: Shape (N, C + 1).
        """
        words = self.embed(x)
        if words.shape[0] == 0:
            return words.new_zeros(0, self.num_classes + 1)
        keep = drop_words(words.shape[0], self.num_words, self.word_drop_ratio, self.training,
                          device=words.device)
        feats = self.text_encoder.encode_pseudo_words(words, keep, output=self.text_output,
                                                      normalize=True).to(words.dtype)
        logits = self.logit_scale * feats @ self.class_embeddings.to(feats.dtype).t()
        logits = torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)
        if self.training and self.bias is not None:
            logits = logits + self.bias
        return logits

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return (f'num_words={self.num_words}, word_dim={self.word_dim}, word_drop_ratio='
                f'{self.word_drop_ratio}, text_output={self.text_output!r}, logit_scale='
                f'{self.logit_scale}, classes={self.num_classes}')
