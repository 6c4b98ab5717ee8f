# Copyright (c) mmclim contributors. All rights reserved.
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmclim.structures import load_vocabulary


class SigmoidTextClassifier(nn.Module):
    """Detic's zero-shot classifier: scaled cosine similarity to fixed class-name embeddings.

    A region feature is projected to the text-embedding size D, L2-normalised and compared with
    the unit text embedding of each class and with a zero background embedding; the logits are
    ``logit_scale`` times the cosine similarities, plus a learned ``bias`` in training mode only
    (the official ``DeticBBoxHead``: ``cls_temp``, zero background row, ``cls_bias`` added when
    training; ``ZeroShotClassifier`` of the LVIS head: ``norm_temperature``, no bias). The logits
    are read by a sigmoid (:class:`mmclim.models.losses.DeticSigmoidClassLoss`).

    The class embeddings and the novel-class mask are non-persistent buffers read from the
    config's files (:func:`mmclim.structures.load_class_embeddings`, which checks the sidecar
    against the text tower); :meth:`embed` is the projection Detic's caption and tag losses use
    (``vision_to_language``).

    Args:
        in_features (int): Size of the region features.
        class_embeddings (str): ``.npy`` of shape (C, D) with its sidecar, one row per class in
            label order, made with the detector's text tower.
        split_file (str): The open-vocabulary split of the C classes.
        clip_model_name (str, optional): The text tower's open_clip model, checked against the
            sidecar. Defaults to None.
        embed_dim (int, optional): The text tower's embedding size D. Defaults to None.
        logit_scale (float): Multiplier of the cosine similarities. Defaults to 25 (OV-COCO).
        bias (float, optional): Initial learned bias of the training logits; None for no bias.
            Defaults to None.
    """

    def __init__(self,
                 in_features: int,
                 class_embeddings: str,
                 split_file: str,
                 clip_model_name: Optional[str] = None,
                 embed_dim: Optional[int] = None,
                 logit_scale: float = 25.0,
                 bias: Optional[float] = None) -> None:
        super().__init__()
        if logit_scale <= 0:
            raise ValueError(f'logit_scale: expected a positive number, got {logit_scale}')
        embeddings, novel_mask = load_vocabulary(class_embeddings, split_file, 'bbox_head',
                                                 model_name=clip_model_name, embed_dim=embed_dim)
        self.register_buffer('class_embeddings', embeddings, persistent=False)
        self.register_buffer('novel_mask', novel_mask, persistent=False)
        self.projection = nn.Linear(in_features, embeddings.shape[1])
        self.logit_scale = float(logit_scale)
        self.bias = None if bias is None else nn.Parameter(torch.tensor(float(bias)))

    @property
    def num_classes(self) -> int:
        """Number C of classes (background excluded)."""
        return self.class_embeddings.shape[0]

    def embed(self, x: Tensor) -> Tensor:
        """Region features projected to the text space, not normalised.

        Args:
            x (Tensor): Shape (N, in_features).

        Returns:
            Tensor: Shape (N, D).
        """
        return self.projection(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the C classes then background (always 0 before the bias).

        Args:
            x (Tensor): Region features of shape (N, in_features).

        Returns:
            Tensor: Shape (N, C + 1).
        """
        embeddings = F.normalize(self.embed(x), dim=-1)
        logits = self.logit_scale * embeddings @ self.class_embeddings.to(embeddings.dtype).t()
        logits = torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)
        if self.training and self.bias is not None:
            logits = logits + self.bias
        return logits
