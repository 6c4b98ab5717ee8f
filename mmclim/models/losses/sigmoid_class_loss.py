# Copyright (c) mmclim contributors. All rights reserved.
import json
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import Tensor, nn

# Detic's federated loss (Zhou et al., 2022, Sec. 4.1; official OV-LVIS config, roi_head
# OriginalDeticBBoxHead defaults ``fed_loss_num_cat=50``, ``fed_loss_freq_weight=0.5``):
# 50 classes per batch, sampled with probability proportional to image_count ** 0.5.
FED_NUM_CLASSES = 50
FED_POWER = 0.5
FEDERATED_KEYS = ('class_frequencies', 'num_classes', 'power')
# Keys of an LVIS class record read for the frequencies (the LVIS v1 annotation json, and
# Detic's ``lvis_v1_train_cat_info.json``, a list of those records).
LVIS_CATEGORIES = 'categories'
LVIS_ID = 'id'
LVIS_IMAGE_COUNT = 'image_count'


def sigmoid_class_loss(cls_score: Tensor, labels: Tensor,
                       class_weight: Optional[Tensor] = None) -> Tensor:
    """Per-RoI sigmoid cross-entropy of Detic's box heads, summed over the classes.

    Every class column is a binary classifier with target 1 for the RoI's class and 0 for the
    others; a background RoI (label C) has all-zero targets. The background column (last) gets
    no loss.

    Args:
        cls_score (Tensor): Logits of the C classes then the background, shape (N, C + 1).
        labels (Tensor): Labels in [0, C], C for background, shape (N,).
        class_weight (Tensor, optional): Weight of each class column, shape (C,) or (N, C).
            Defaults to None (all 1).

    Returns:
        Tensor: Shape (N,).
    """
    num_classes = cls_score.shape[1] - 1
    targets = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(cls_score.dtype)
    loss = F.binary_cross_entropy_with_logits(cls_score[:, :num_classes], targets,
                                              reduction='none')
    if class_weight is not None:
        loss = loss * class_weight
    return loss.sum(dim=1)


def federated_class_mask(labels: Tensor, class_probs: Tensor, num_sampled: int) -> Tensor:
    """The classes in Detic's federated loss for one batch.

    As Detic's ``get_fed_loss_inds``: the classes of the labels (background included when a
    background RoI is present) are kept, then classes are drawn without replacement with
    probability proportional to ``class_probs``, until ``num_sampled`` labels are selected. The
    background counts towards ``num_sampled`` and is never drawn; neither is a class of
    probability 0. Draws use torch's global RNG (seeded by the runner).

    Args:
        labels (Tensor): Labels in [0, C], C for background, shape (N,).
        class_probs (Tensor): Unnormalised sampling weight of each class, shape (C,).
        num_sampled (int): Size of the selected set of labels.

    Returns:
        Tensor: Bool mask of the selected classes, shape (C,).
    """
    num_classes = class_probs.shape[0]
    present = torch.unique(labels)
    probs = torch.zeros(num_classes + 1, dtype=torch.float32, device=class_probs.device)
    probs[:num_classes] = class_probs.float()
    probs[present] = 0
    num_draws = min(num_sampled - len(present), int((probs > 0).sum()))
    selected = present
    if num_draws > 0:
        selected = torch.cat([present, torch.multinomial(probs, num_draws, replacement=False)])
    mask = torch.zeros(num_classes + 1, dtype=torch.bool, device=class_probs.device)
    mask[selected] = True
    return mask[:num_classes]


def read_class_frequencies(path: str) -> List[float]:
    """Per-class image counts, in class-id order, from an LVIS json.

    Args:
        path (str): An LVIS annotation json (``categories`` records), or a list of category
            records (Detic's ``lvis_v1_train_cat_info.json``); each record has ``id`` and
            ``image_count``.

    Returns:
        List[float]: The image counts sorted by class id.
    """
    with open(path) as file:
        data = json.load(file)
    categories = data.get(LVIS_CATEGORIES) if isinstance(data, dict) else data
    if not isinstance(categories, list) or not all(
            isinstance(cat, dict) and LVIS_ID in cat and LVIS_IMAGE_COUNT in cat
            for cat in categories):
        raise ValueError(f'{path}: expected a list of category records with "{LVIS_ID}" and '
                         f'"{LVIS_IMAGE_COUNT}", or a dict whose "{LVIS_CATEGORIES}" is one')
    return [float(cat[LVIS_IMAGE_COUNT]) for cat in sorted(categories, key=lambda c: c[LVIS_ID])]


@MODELS.register_module()
class DeticSigmoidClassLoss(nn.Module):
    """Classification loss of Detic's sigmoid box heads, as ``loss_cls`` of an mmdet
    ``BBoxHead``.

    The head predicts C class logits then a background logit (mmdet's layout); the loss is
    :func:`sigmoid_class_loss` (binary cross-entropy of each class column, the background
    column unused) times the class weights, summed over classes and averaged over RoIs
    (``avg_factor``: mmdet's ``BBoxHead.loss`` passes the number of RoIs). It equals the official
    ``CustomCrossEntropyLoss(use_sigmoid=True, class_weight=...)`` (OV-COCO) and
    ``OriginalDeticBBoxHead.sigmoid_cross_entropy_loss`` (OV-LVIS, with ``federated``).

    Through ``custom_cls_channels`` / ``custom_activation`` / ``custom_accuracy``, mmdet's
    ``BBoxHead`` asks it for C + 1 output channels, scores RoIs with sigmoids
    (:meth:`get_activation`; ``multiclass_nms`` drops the background column) and logs
    :meth:`get_accuracy`.

    Args:
        class_weight (Sequence[float], optional): Weight of each of the C classes, e.g. 0 for
            the novel classes of OV-COCO. Defaults to None (all 1).
        federated (dict, optional): Detic's federated loss: per batch, only the classes of the
            labels and classes drawn by frequency (:func:`federated_class_mask`) get loss.
            Keys: ``class_frequencies`` (C per-class image counts, or the path of an LVIS json,
            :func:`read_class_frequencies`), ``num_classes`` (labels in the loss, default 50)
            and ``power`` (the draw weight is frequency ** power, default 0.5). Defaults to None.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'`` over RoIs. Defaults to 'mean'.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 class_weight: Optional[Sequence[float]] = None,
                 federated: Optional[dict] = None,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        name = type(self).__name__
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"{name}.reduction: expected 'none', 'mean' or 'sum', got "
                             f'{reduction!r}')
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True
        self.register_buffer(
            'class_weight',
            None if class_weight is None else torch.tensor(list(class_weight),
                                                           dtype=torch.float32),
            persistent=False)
        self.fed_num_classes: Optional[int] = None
        self.register_buffer('fed_class_probs', None, persistent=False)
        if federated is not None:
            self._init_federated(dict(federated))

    def _init_federated(self, federated: dict) -> None:
        """Reads the federated-loss config into ``fed_class_probs`` and ``fed_num_classes``."""
        name = f'{type(self).__name__}.federated'
        unknown = sorted(set(federated) - set(FEDERATED_KEYS))
        if unknown:
            raise ValueError(f'{name}: unknown keys {unknown}; expected {list(FEDERATED_KEYS)}')
        if 'class_frequencies' not in federated:
            raise ValueError(f'{name}.class_frequencies: required (per-class image counts, or '
                             'the path of an LVIS json)')
        frequencies = federated['class_frequencies']
        if isinstance(frequencies, str):
            frequencies = read_class_frequencies(frequencies)
        frequencies = torch.tensor(list(frequencies), dtype=torch.float32)
        if frequencies.ndim != 1 or (frequencies < 0).any():
            raise ValueError(f'{name}.class_frequencies: expected one non-negative count per '
                             'class')
        num_classes = int(federated.get('num_classes', FED_NUM_CLASSES))
        if num_classes < 1:
            raise ValueError(f'{name}.num_classes: expected a positive number, got {num_classes}')
        self.fed_num_classes = num_classes
        self.fed_class_probs = frequencies.pow(float(federated.get('power', FED_POWER)))

    def _check_num_classes(self, num_classes: int) -> None:
        """Raises if the class weights or frequencies are not one per class."""
        name = type(self).__name__
        for field, values in (('class_weight', self.class_weight),
                              ('federated.class_frequencies', self.fed_class_probs)):
            if values is not None and values.numel() != num_classes:
                raise ValueError(f'{name}.{field}: expected {num_classes} entries (one per '
                                 f'class; the background carries no loss), got {values.numel()}')

    def get_cls_channels(self, num_classes: int) -> int:
        """The head's output channels: the C classes then the background.

        Args:
            num_classes (int): C.

        Returns:
            int: C + 1.
        """
        self._check_num_classes(num_classes)
        return num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Sigmoid scores.

        Args:
            cls_score (Tensor): Logits, shape (N, C + 1).

        Returns:
            Tensor: Shape (N, C + 1); the last (background) column is the sigmoid of an unused
            logit, dropped by ``multiclass_nms``.
        """
        return cls_score.sigmoid()

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """Top-1 accuracy over the C classes on foreground RoIs.

        Args:
            cls_score (Tensor): Logits, shape (N, C + 1).
            labels (Tensor): Labels in [0, C], shape (N,).

        Returns:
            dict: ``acc_classes`` (percent), as mmdet's custom classification losses.
        """
        num_classes = cls_score.shape[1] - 1
        foreground = labels < num_classes
        return dict(acc_classes=accuracy(cls_score[foreground, :num_classes],
                                         labels[foreground]))

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """The loss.

        Args:
            cls_score (Tensor): Logits of the C classes then the background, shape (N, C + 1).
            labels (Tensor): Labels in [0, C], C for background, shape (N,).
            label_weights (Tensor, optional): Weight of each RoI, shape (N,). Defaults to None.
            avg_factor (float, optional): Divisor of the sum over RoIs for ``'mean'``. Defaults
                to None (N).
            reduction_override (str, optional): Overrides ``reduction``. Defaults to None.

        Returns:
            Tensor: Scalar, or shape (N,) for ``'none'``.
        """
        reduction = reduction_override or self.reduction
        num_classes = cls_score.shape[1] - 1
        self._check_num_classes(num_classes)
        weight: Union[Tensor, None] = self.class_weight
        if self.fed_class_probs is not None:
            fed_mask = federated_class_mask(labels, self.fed_class_probs,
                                            self.fed_num_classes).to(cls_score.dtype)
            weight = fed_mask if weight is None else weight * fed_mask
        loss = sigmoid_class_loss(cls_score, labels, weight)
        if label_weights is not None:
            label_weights = label_weights.float()
        loss = weight_reduce_loss(loss, label_weights, reduction, avg_factor)
        return self.loss_weight * loss
