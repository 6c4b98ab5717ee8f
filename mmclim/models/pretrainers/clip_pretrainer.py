# Copyright (c) mmclim contributors. All rights reserved.
"""What the CLIP fine-tuning models of mmclim share: the tower, evaluation, ensembling, logs."""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import Tensor

from mmclim.structures import load_class_embeddings

# CLIP clamps its learned temperature so that the logit scale stays at most 100 (the official
# code clamps the parameter to [0, ln 100] after each step).
MAX_LOGIT_SCALE = 100.0
# The key of a single image's alternative captions (caption datasets), one drawn per step.
CAPTIONS_KEY = 'captions'


class CLIPPretrainer(BaseModel):
    """Base of the models that fine-tune a CLIP tower on image-caption data (CLIM, RegionCLIP).

    It owns the trained tower ``clip`` (an :class:`OpenCLIPRegion`) and what does not depend on
    the training objective, which subclasses implement in :meth:`loss`:

    - **Evaluation** (``predict``): zero-shot classification of the ground-truth regions of each
      image: region features of ``gt_instances.bboxes``, or of ``gt_instances.masks`` (mask
      pooling) when every sample has masks and ``use_masks``, against ``class_embeddings``,
      written to ``pred_region_scores`` (N, C) for :class:`RegionClassificationMetric`.
    - **Weight ensembling.** With ``weight_ensemble=alpha`` the model keeps the original values
      of its trainable parameters (from ``clip.pretrained``); :meth:`ensembled_weights` swaps in
      ``alpha * trained + (1 - alpha) * original`` for evaluation, as the official CLIM code
      evaluates and exports its models (alpha 0.7). :class:`mmclim.engine.WeightEnsembleHook`
      does it around every validation and test epoch;
      ``tools/model_converters/clim_to_openclip.py`` exports the same weights.
    - **Captions**: one drawn per image per step from its ``metainfo['captions']``.
    - **Logging**: the logged losses averaged over ranks (:meth:`parse_losses`).

    Args:
        clip (dict): Config of an :class:`OpenCLIPRegion` (model name, local checkpoint,
            trainable blocks).
        class_embeddings (str, optional): ``.npy`` of (C, D) class-name text embeddings from
            ``tools/generate_text_embeddings.py``, needed by ``predict`` only. Defaults to None.
        use_masks (bool): In ``predict``, pool ground-truth masks instead of boxes when the
            samples have them. Defaults to True.
        weight_ensemble (float, optional): The weight alpha of the trained parameters in the
            evaluated and exported model, in (0, 1]; None or 1 evaluates the trained weights.
            Defaults to None.
        data_preprocessor (dict, optional): Normalises and batches the images. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 clip: dict,
                 class_embeddings: Optional[str] = None,
                 use_masks: bool = True,
                 weight_ensemble: Optional[float] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.clip = MODELS.build(clip)
        self.class_embeddings_file = class_embeddings
        self.use_masks = use_masks
        embeddings = (torch.zeros(0, self.clip.embed_dim) if class_embeddings is None else
                      load_class_embeddings(class_embeddings, model_name=self.clip.model_name,
                                            embed_dim=self.clip.embed_dim,
                                            field='model.class_embeddings'))
        self.register_buffer('class_embeddings', embeddings, persistent=False)
        self.weight_ensemble = self._check_weight_ensemble(weight_ensemble)
        # The original values of the trained parameters, on the CPU and out of the state dict
        # (they are the checkpoint clip.pretrained): what weight ensembling mixes back in.
        self._original: Dict[str, Tensor] = {}
        if self.weight_ensemble is not None:
            self._original = {key: value.detach().cpu().clone()
                              for key, value in self.clip.named_parameters()
                              if value.requires_grad}
        self._ensembled = False
        self._warned_unensembled = False

    def _check_weight_ensemble(self, alpha: Optional[float]) -> Optional[float]:
        name = type(self).__name__
        if alpha is None or alpha == 1:
            return None
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f'{name}.weight_ensemble: expected None or a weight in (0, 1], got '
                             f'{alpha!r}')
        if self.clip.pretrained is None:
            raise ValueError(f'{name}.weight_ensemble={alpha} mixes the trained weights with the '
                             'original ones, but model.clip.pretrained is None; set it to the '
                             'original checkpoint or set weight_ensemble=None')
        return float(alpha)

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor') -> Union[Dict[str, Tensor], list, Tensor]:
        """Dispatch to :meth:`loss`, :meth:`predict` or the dense features (``'tensor'``)."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.clip.dense_features(inputs)
        raise ValueError(f'{type(self).__name__}.forward: unknown mode {mode!r}')

    @property
    def logit_scale(self) -> Tensor:
        """CLIP's learned logit scale (already exponentiated), clamped as CLIP does."""
        return self.clip.logit_scale.clamp(max=MAX_LOGIT_SCALE)

    @contextmanager
    def ensembled_weights(self) -> Iterator[None]:
        """Within the block, the trained parameters hold ``alpha * trained + (1 - alpha) *
        original`` (``alpha`` = ``weight_ensemble``); the trained values are restored after.
        Without ``weight_ensemble`` it changes nothing."""
        if not self._original or self._ensembled:
            yield
            return
        params = dict(self.clip.named_parameters())
        trained = {key: params[key].detach().clone() for key in self._original}
        alpha = self.weight_ensemble
        with torch.no_grad():
            for key, original in self._original.items():
                param = params[key]
                param.mul_(alpha).add_(original.to(param), alpha=1 - alpha)
        self._ensembled = True
        try:
            yield
        finally:
            with torch.no_grad():
                for key, value in trained.items():
                    params[key].copy_(value)
            self._ensembled = False

    def _draw_captions(self, data_samples: List[BaseDataElement]) -> List[str]:
        """One caption per sample, drawn uniformly from its ``metainfo['captions']``."""
        captions = []
        for index, sample in enumerate(data_samples):
            options = sample.metainfo.get(CAPTIONS_KEY)
            if not options or isinstance(options, str):
                raise ValueError(f'{type(self).__name__}: data sample {index} '
                                 f'({sample.metainfo.get("img_path", "?")}) has no list of '
                                 f"captions; add 'captions' to PackDetInputs' meta_keys")
            captions.append(options[int(torch.randint(len(options), (1, )))])
        return captions

    def loss(self, inputs: Tensor, data_samples: List[BaseDataElement]) -> Dict[str, Tensor]:
        """The training losses of one batch; each subclass defines its objective."""
        raise NotImplementedError

    def parse_losses(self, losses: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """As ``BaseModel.parse_losses``, with the logged values averaged over ranks.

        Each rank's loss is its share of the loss of the whole global batch (a mean over its
        rows, or for a gathered contrastive loss see :func:`contrastive_caption_loss`); with
        equal shares their mean is that loss, so rank 0 logs the value a single process with the
        global batch would. Only the logged copies are averaged; the loss that is backpropagated
        stays the rank's own.
        """
        loss, log_vars = super().parse_losses(losses)
        if get_world_size() > 1:
            values = torch.stack([value.detach().float() for value in log_vars.values()])
            all_reduce(values, op='mean')
            log_vars = OrderedDict(zip(log_vars, values))
        return loss, log_vars

    @staticmethod
    def _mask_tensor(masks, inputs: Tensor) -> Tensor:
        """Bitmap masks (K, h, w) as a bool tensor padded to the batch's (K, H, W)."""
        tensor = masks.to_tensor(dtype=torch.bool, device=inputs.device) if hasattr(
            masks, 'to_tensor') else masks.to(device=inputs.device, dtype=torch.bool)
        height, width = inputs.shape[-2:]
        return torch.nn.functional.pad(tensor, (0, width - tensor.shape[-1],
                                                0, height - tensor.shape[-2]))

    def predict(self, inputs: Tensor,
                data_samples: List[BaseDataElement]) -> List[BaseDataElement]:
        """Zero-shot classification of every sample's ground-truth regions.

        Args:
            inputs (Tensor): Normalised images, (B, 3, H, W).
            data_samples (list): B samples with ``gt_instances.bboxes`` (or ``masks``) in input
                pixels.

        Returns:
            list: The samples, each with ``pred_region_scores`` (N_i, C): cosine similarities
            of its N_i regions with the C class embeddings.
        """
        if self.class_embeddings.numel() == 0:
            raise ValueError(f'{type(self).__name__}.predict needs class_embeddings (a .npy from '
                             f'tools/generate_text_embeddings.py) in the model config')
        if self._original and not self._ensembled and not self._warned_unensembled:
            print_log(f'{type(self).__name__}: weight_ensemble={self.weight_ensemble} but '
                      'predict runs on the trained weights; add WeightEnsembleHook to '
                      'custom_hooks to evaluate the ensembled model', logger='current',
                      level=30)
            self._warned_unensembled = True
        instances = [sample.gt_instances for sample in data_samples]
        if self.use_masks and all('masks' in gt for gt in instances):
            masks = [self._mask_tensor(gt.masks, inputs) for gt in instances]
            feats = self.clip.mask_features(inputs, masks, normalize=True)
            counts = [len(m) for m in masks]
        else:
            boxes = [getattr(gt.bboxes, 'tensor', gt.bboxes).to(inputs) for gt in instances]
            feats = self.clip.region_features(inputs, boxes, normalize=True)
            counts = [len(b) for b in boxes]
        scores = (feats @ self.class_embeddings.t().to(feats)).split(counts)
        for sample, sample_scores in zip(data_samples, scores):
            sample.pred_region_scores = sample_scores
        return data_samples
