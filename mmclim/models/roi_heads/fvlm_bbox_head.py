# Copyright (c) mmclim contributors. All rights reserved.
from typing import Optional

from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType

from .text_embedding_classifier import FVLM_LOGIT_SCALE, TextEmbeddingClassifier

DEFAULT_LOSS_CLS = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
# Cross-entropy weight of every (base) class; novel classes never occur as targets (their
# logits are -inf in training and F-VLM trains on base annotations only).
CLASS_WEIGHT = 1.0


@MODELS.register_module()
class FVLMBBoxHead(ConvFCBBoxHead):
    """F-VLM's box head: mmdet's ``ConvFCBBoxHead`` with the text-embedding classifier.

    The classifier ``fc_cls`` is a :class:`~.TextEmbeddingClassifier` (projection to the
    text-embedding space, cosine similarity with the class embeddings and a learned background
    embedding, learned logit scale), built from the arguments below. The regression is
    class-agnostic (novel classes have no trained regressor). The cross-entropy weights are
    derived here: 1 for every class and ``background_weight`` for background, as the official
    ``CustomCrossEntropyLoss``'s ``bg_weight`` (0.9 on OV-LVIS) and the last entry of its
    ``class_weight`` (0.6 on OV-COCO) set them.

    Args:
        num_classes (int): The number C of classes, base and novel.
        class_embeddings (str): See :class:`~.TextEmbeddingClassifier`.
        split_file (str): See :class:`~.TextEmbeddingClassifier`.
        clip_model_name (str, optional): The backbone's open_clip model, filled in by ``FVLM``.
            Defaults to None.
        embed_dim (int, optional): The backbone's embedding size, filled in by ``FVLM``.
            Defaults to None.
        logit_scale (float): Initial logit scale of the classifier. Defaults to 50.
        learn_logit_scale (bool): Learn it. Defaults to True.
        background_weight (float): Cross-entropy weight of the background samples. Defaults to
            1.0.
        loss_cls (dict): A softmax ``CrossEntropyLoss`` config without ``class_weight``.
            Defaults to mmdet's.
        **kwargs: ``ConvFCBBoxHead`` arguments; ``reg_class_agnostic`` must be True and
            ``cls_predictor_cfg`` absent.
    """

    def __init__(self,
                 num_classes: int,
                 class_embeddings: str,
                 split_file: str,
                 clip_model_name: Optional[str] = None,
                 embed_dim: Optional[int] = None,
                 logit_scale: float = FVLM_LOGIT_SCALE,
                 learn_logit_scale: bool = True,
                 background_weight: float = 1.0,
                 loss_cls: ConfigType = DEFAULT_LOSS_CLS,
                 **kwargs) -> None:
        name = type(self).__name__
        if 'cls_predictor_cfg' in kwargs:
            raise ValueError(f'{name}.cls_predictor_cfg: expected none (the classifier is a '
                             'TextEmbeddingClassifier built from class_embeddings and '
                             f'split_file), got {kwargs["cls_predictor_cfg"]}')
        if kwargs.get('reg_class_agnostic') is not True:
            raise ValueError(f'{name}.reg_class_agnostic: expected True (novel classes have no '
                             f'trained regressor), got {kwargs.get("reg_class_agnostic")}')
        if loss_cls.get('use_sigmoid', False) or 'class_weight' in loss_cls:
            raise ValueError(f'{name}.loss_cls: expected a softmax cross-entropy without '
                             'class_weight (derived from num_classes and background_weight), '
                             f'got {loss_cls}')
        if background_weight < 0:
            raise ValueError(f'{name}.background_weight: expected a non-negative weight, got '
                             f'{background_weight}')
        loss_cls = dict(loss_cls, class_weight=[CLASS_WEIGHT] * num_classes + [background_weight])
        super().__init__(num_classes=num_classes, loss_cls=loss_cls, **kwargs)
        if not self.with_cls:
            raise ValueError(f'{name}.with_cls: expected True, got False')
        # Replaces the linear classifier ConvFCBBoxHead built (the init_cfg of ``fc_cls``, a
        # Normal(std=0.01) override, applies to the projection as it did to that layer).
        self.fc_cls = TextEmbeddingClassifier(
            self.cls_last_dim, num_classes + 1, class_embeddings, split_file,
            clip_model_name=clip_model_name, embed_dim=embed_dim, logit_scale=logit_scale,
            learn_logit_scale=learn_logit_scale)
        self.background_weight = background_weight

    @property
    def classifier(self) -> TextEmbeddingClassifier:
        """The text-embedding classifier (``fc_cls``)."""
        return self.fc_cls
