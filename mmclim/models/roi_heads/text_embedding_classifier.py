# Copyright (c) mmclim contributors. All rights reserved.
from typing import Optional

import torch
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule, xavier_init
from torch import Tensor, nn

from mmclim.structures import load_vocabulary
from .fvlm_scores import cosine_logits

# The official FVLMConvFCBBoxHead (ovdet/ovdet/models/roi_heads/fvlm_bbox_heads/
# convfc_bbox_head.py): the logit scale "cls_temp" starts at 50 and is learned
# (learn_cls_temp=True in every F-VLM config), a multiplicative parameter (no exp).
FVLM_LOGIT_SCALE = 50.0
# Its learned background embedding is nn.Linear(1, D) applied to a one, initialised by mmengine's
# XavierInit with distribution='uniform' (gain 1, bias 0).
BACKGROUND_INIT = dict(distribution='uniform')


@MODELS.register_module()
class TextEmbeddingClassifier(BaseModule):
    """F-VLM's detector classifier: cosine similarity to class-name text embeddings.

    A region feature is projected to the embedding size D and compared by cosine similarity with
    the fixed text embedding of each class and with a learned background embedding; the
    similarities times a learned logit scale (50 at first) are the logits of a softmax over the
    classes and background (:func:`~.fvlm_scores.cosine_logits`), as the official
    ``FVLMConvFCBBoxHead`` computes them.

    In training mode the logits of the novel classes are -inf, so the softmax runs over the base
    classes and background only (the official loss sets them to -inf through its zero class
    weights); the ground truth must hold base classes only. In eval mode every class is scored.

    The class embeddings and the novel-class mask are non-persistent buffers: they come from the
    config's files, not from checkpoints. The embeddings are read by
    :func:`mmclim.structures.load_class_embeddings`, which checks their sidecar against the
    backbone's open_clip model and embedding size.

    It is the ``fc_cls`` of :class:`~.FVLMBBoxHead`, which builds it.

    Args:
        in_features (int): Size of the region features.
        out_features (int): Number of logits: the C classes and background, C + 1.
        class_embeddings (str): ``.npy`` of shape (C, D) with its sidecar, one row per class in
            label order (``tools/generate_text_embeddings.py`` without ``--background``: the
            background embedding is learned).
        split_file (str): The data set's open-vocabulary split (naming the novel classes,
            :func:`mmclim.structures.read_split_file`); it must cover the C classes.
        clip_model_name (str, optional): The open_clip model of the backbone; the embeddings'
            sidecar must name it. None skips the check. Defaults to None.
        embed_dim (int, optional): The backbone's embedding size D; checked against the file.
            Defaults to None.
        logit_scale (float): Initial multiplier of the cosine similarities. Defaults to 50.
        learn_logit_scale (bool): Learn the logit scale. Defaults to True.
        init_cfg (dict or List[dict], optional): mmengine initialisation config. Defaults to
            None.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 class_embeddings: str,
                 split_file: str,
                 clip_model_name: Optional[str] = None,
                 embed_dim: Optional[int] = None,
                 logit_scale: float = FVLM_LOGIT_SCALE,
                 learn_logit_scale: bool = True,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        if logit_scale <= 0:
            raise ValueError(f'{name}.logit_scale: expected a positive number, got {logit_scale}')
        embeddings, novel_mask = load_vocabulary(
            class_embeddings, split_file, name, model_name=clip_model_name, embed_dim=embed_dim,
            num_rows=out_features - 1)
        embed_dim = embeddings.shape[1]
        self.register_buffer('class_embeddings', embeddings, persistent=False)
        self.register_buffer('novel_mask', novel_mask, persistent=False)
        self.projection = nn.Linear(in_features, embed_dim)
        self.background = nn.Linear(1, embed_dim)
        scale = torch.tensor(float(logit_scale))
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer('logit_scale', scale)

    @property
    def num_classes(self) -> int:
        """Number C of classes (background excluded)."""
        return self.class_embeddings.shape[0]

    def init_weights(self) -> None:
        """mmengine's initialisation, then the background embedding's Xavier-uniform one."""
        super().init_weights()
        xavier_init(self.background, **BACKGROUND_INIT)

    def class_and_background_embeddings(self) -> Tensor:
        """The unit class embeddings and, last, the learned background embedding.

        Returns:
            Tensor: Shape (C + 1, D).
        """
        one = self.class_embeddings.new_ones(1, 1)
        background = nn.functional.normalize(self.background(one), dim=-1)
        return torch.cat([self.class_embeddings, background])

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the classes then background.

        Args:
            x (Tensor): Region features of shape (N, in_features).

        Returns:
            Tensor: Shape (N, C + 1), background last; novel classes -inf in training mode.
        """
        logits = cosine_logits(self.projection(x), self.class_and_background_embeddings(),
                               self.logit_scale)
        if self.training:
            untrained = torch.cat([self.novel_mask, self.novel_mask.new_zeros(1)])
            logits = logits.masked_fill(untrained, float('-inf'))
        return logits
