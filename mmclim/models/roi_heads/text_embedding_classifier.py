# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmclim.structures import read_split_file

# F-VLM's temperature of the detector's cosine-similarity classifier (Kuo et al., ICLR 2023: the
# logits are cosine similarities divided by T = 0.01).
FVLM_TEMPERATURE = 0.01


def load_text_embeddings(path: str) -> Tensor:
    """Class-name text embeddings from a ``.npy`` file, L2-normalised.

    Args:
        path (str): A float array of shape (C, D), one row per class in label order, e.g. from
            ``tools/generate_text_embeddings.py``.

    Returns:
        Tensor: Float32 unit rows of shape (C, D).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'text_embeddings: {path!r} does not exist (make it with '
                                'tools/generate_text_embeddings.py)')
    array = np.load(path)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f'text_embeddings: {path}: expected a float array of shape (C, D), got '
                         f'{array.dtype} of shape {array.shape}')
    return F.normalize(torch.from_numpy(array).float(), dim=-1)


@MODELS.register_module()
class TextEmbeddingClassifier(BaseModule):
    """Open-vocabulary region classifier: cosine similarity to class-name text embeddings.

    F-VLM's detector classifier: a region feature is projected to the text-embedding size D,
    L2-normalised and compared by cosine similarity with the fixed, normalised text embedding of
    each class and with a learned background embedding; the similarities divided by
    ``temperature`` are the logits of a softmax over the classes and background.

    In training mode the logits of the novel classes are -inf, so the softmax runs over the base
    classes and background only: F-VLM trains with the base classes' embeddings alone (the
    ground truth must hold base classes only). In eval mode every class is scored.

    The text embeddings and the novel-class mask are non-persistent buffers: they come from the
    config's files, not from checkpoints, so a trained head can be evaluated with other prompts.

    Use it as the ``cls_predictor_cfg`` of an mmdet bbox head, which fills in ``in_features``
    and ``out_features``::

        bbox_head=dict(type='Shared2FCBBoxHead', num_classes=1203, reg_class_agnostic=True,
                       cls_predictor_cfg=dict(type='TextEmbeddingClassifier',
                                              text_embeddings='lvis_v1_ViT-B-16.npy',
                                              split_file='lvis_v1_train_ov_split.json'))

    Args:
        in_features (int): Size of the region features.
        out_features (int): Number of logits: the C classes and background, C + 1.
        text_embeddings (str): ``.npy`` of shape (C, D), one row per class in label order
            (``tools/generate_text_embeddings.py`` without ``--background``: the background
            embedding is learned).
        split_file (str): The data set's open-vocabulary split, naming the novel classes
            (:func:`mmclim.structures.read_split_file`); it must cover the C classes.
        temperature (float): Divisor of the cosine similarities. Defaults to 0.01 (F-VLM).
        init_cfg (dict or List[dict], optional): mmengine initialisation config. Defaults to
            None.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 text_embeddings: str,
                 split_file: str,
                 temperature: float = FVLM_TEMPERATURE,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        if temperature <= 0:
            raise ValueError(f'{name}.temperature: expected a positive number, got {temperature}')
        embeddings = load_text_embeddings(text_embeddings)
        num_classes, embed_dim = embeddings.shape
        if num_classes != out_features - 1:
            raise ValueError(f'{name}.text_embeddings: {text_embeddings} has {num_classes} rows, '
                             f'expected {out_features - 1} (the bbox head num_classes; make it '
                             'without --background, the background embedding is learned)')
        novel_mask = read_split_file(split_file).novel_mask()
        if len(novel_mask) != num_classes:
            raise ValueError(f'{name}.split_file: {split_file} lists {len(novel_mask)} base and '
                             f'novel classes, expected {num_classes} (the rows of '
                             f'{text_embeddings})')
        self.temperature = temperature
        self.register_buffer('text_embeddings', embeddings, persistent=False)
        self.register_buffer('novel_mask', novel_mask, persistent=False)
        self.projection = nn.Linear(in_features, embed_dim)
        # Unit-norm in expectation; only its direction matters.
        self.background_embedding = nn.Parameter(torch.randn(embed_dim) * embed_dim**-0.5)

    @property
    def num_classes(self) -> int:
        """Number C of classes (background excluded)."""
        return self.text_embeddings.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the classes then background.

        Args:
            x (Tensor): Region features of shape (N, in_features).

        Returns:
            Tensor: Shape (N, C + 1), background last; novel classes -inf in training mode.
        """
        regions = F.normalize(self.projection(x), dim=-1)
        background = F.normalize(self.background_embedding, dim=-1)[None]
        classes = torch.cat([self.text_embeddings.to(regions.dtype), background.to(regions.dtype)])
        logits = regions @ classes.T / self.temperature
        if self.training:
            untrained = torch.cat([self.novel_mask, self.novel_mask.new_zeros(1)])
            logits = logits.masked_fill(untrained, float('-inf'))
        return logits
