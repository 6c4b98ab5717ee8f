# Copyright (c) mmclim contributors. All rights reserved.
"""Fine-tune CLIP with CLIM (paper section "Enhancing CLIP Model's Region Representation")."""
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.dist import all_reduce, get_world_size
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import Tensor

from mmclim.models.losses import caption_ids_from_texts
from mmclim.models.utils import batch_mosaic, sample_mosaic_grids
from mmclim.structures import DEFAULT_GRID_CHOICES, Grid, to_grid_choices

TRAIN_MODES = ('clim', 'image')
# CLIP clamps its learned temperature so that the logit scale stays at most 100.
MAX_LOGIT_SCALE = 100.0


@MODELS.register_module()
class CLIMCLIP(BaseModel):
    """CLIP trained on image-caption pairs, with CLIM mosaics or image-level (the baseline).

    In ``mode='clim'`` each training batch is split: about ``mosaic_fraction`` of its images are
    tiled by :func:`mmclim.models.utils.batch_mosaic` into canvases of grids drawn from
    ``grid_choices``; every cell is a pseudo region whose feature (RoIAlign on the dense CLIP map,
    :meth:`OpenCLIPRegion.region_features`) is aligned with its image's caption. The other images
    stay single and their image-level embedding (:meth:`OpenCLIPRegion.encode_image`) is aligned
    with their captions too, in the same :class:`CLIMCaptionLoss` (negatives gathered across
    ranks). ``mode='image'`` aligns every image's embedding with its caption: CLIP's own
    objective, the baseline CLIM is compared with. One caption is drawn per image per step when
    an image has several; identical captions are not negatives of each other.

    At test time (``predict``) it classifies the ground-truth regions of each image zero-shot:
    region features of ``gt_instances.bboxes`` (RoIAlign), or of ``gt_instances.masks`` (mask
    pooling) when every sample has masks and ``use_masks``, against ``class_embeddings``, written
    to ``pred_region_scores`` (N, C) for :class:`RegionClassificationMetric`.

    Args:
        clip (dict): Config of an :class:`OpenCLIPRegion` (model name, local checkpoint, frozen
            blocks; its text tower should stay frozen).
        loss (dict): Config of the contrastive loss. Defaults to ``dict(type='CLIMCaptionLoss')``.
        mode (str): ``'clim'`` or ``'image'``. Defaults to ``'clim'``.
        grid_choices (Sequence): Grids of the mosaics. Defaults to 2x2, 3x3 and 4x4 (Table 2b).
        mosaic_fraction (float): Share of each batch that goes into mosaics; the paper splits
            Detic's caption batch half and half. Defaults to 0.5.
        canvas_size (int, optional): Side of every mosaic canvas (the paper trains at 1024).
            None makes each cell the size of the input images (canvas = grid x image size).
            Defaults to None.
        class_embeddings (str, optional): ``.npy`` of (C, D) class-name text embeddings from
            ``tools/generate_text_embeddings.py``, needed by ``predict`` only. Defaults to None.
        use_masks (bool): In ``predict``, pool ground-truth masks instead of boxes when the
            samples have them. Defaults to True.
        data_preprocessor (dict, optional): Normalises and batches the images. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 clip: dict,
                 loss: Optional[dict] = None,
                 mode: str = 'clim',
                 grid_choices: Sequence[Union[int, Sequence[int]]] = DEFAULT_GRID_CHOICES,
                 mosaic_fraction: float = 0.5,
                 canvas_size: Optional[int] = None,
                 class_embeddings: Optional[str] = None,
                 use_masks: bool = True,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if mode not in TRAIN_MODES:
            raise ValueError(f'{type(self).__name__}.mode: expected one of {TRAIN_MODES}, '
                             f'got {mode!r}')
        if not 0 <= mosaic_fraction <= 1:
            raise ValueError(f'{type(self).__name__}.mosaic_fraction: expected a value in '
                             f'[0, 1], got {mosaic_fraction}')
        self.clip = MODELS.build(clip)
        self.loss_module = MODELS.build(loss or dict(type='CLIMCaptionLoss'))
        self.mode = mode
        self.grid_choices = to_grid_choices(grid_choices)
        self.mosaic_fraction = mosaic_fraction
        self.canvas_size = canvas_size
        self.class_embeddings_file = class_embeddings
        self.use_masks = use_masks
        self.register_buffer('class_embeddings', self._load_class_embeddings(class_embeddings),
                             persistent=False)

    def _load_class_embeddings(self, path: Optional[str]) -> Tensor:
        """Read (C, D) embeddings and L2-normalise them; an empty (0, D) tensor without a path."""
        if path is None:
            return torch.zeros(0, self.clip.embed_dim)
        try:
            array = np.load(path)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f'{type(self).__name__}.class_embeddings: {path} does not exist; make it with '
                f'tools/generate_text_embeddings.py') from error
        if array.ndim != 2 or array.shape[1] != self.clip.embed_dim:
            raise ValueError(f'{type(self).__name__}.class_embeddings: {path} has shape '
                             f'{array.shape}, expected (num_classes, {self.clip.embed_dim})')
        return torch.nn.functional.normalize(torch.from_numpy(array).float(), dim=1)

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

    def _draw_captions(self, data_samples: List[BaseDataElement]) -> List[str]:
        captions = []
        for index, sample in enumerate(data_samples):
            options = sample.metainfo.get('captions')
            if not options:
                raise ValueError(f'{type(self).__name__}: data sample {index} '
                                 f'({sample.metainfo.get("img_path", "?")}) has no captions; add '
                                 f"'captions' to PackDetInputs' meta_keys")
            captions.append(options[int(torch.randint(len(options), (1, )))])
        return captions

    def _mosaic_region_features(self, inputs: Tensor, grids: List[Grid],
                                order: Tensor) -> Tuple[Tensor, Tensor]:
        """Region features of the mosaicked images, grouped by grid so each canvas size is one
        forward.

        Args:
            inputs (Tensor): The batch, (B, 3, H, W).
            grids (list[tuple[int, int]]): Grids filled in order by ``order``.
            order (Tensor): (B,) permutation of the batch.

        Returns:
            tuple[Tensor, Tensor]: Region features (K, D) and the input index of each (K,).
        """
        chunks: Dict[Grid, List[Tensor]] = defaultdict(list)
        start = 0
        for grid in grids:
            chunks[grid].append(order[start:start + grid[0] * grid[1]])
            start += grid[0] * grid[1]
        feats, sources = [], []
        for (rows, cols), parts in chunks.items():
            canvas = self.canvas_size or (rows * inputs.shape[-2], cols * inputs.shape[-1])
            mosaic = batch_mosaic(inputs, [(rows, cols)] * len(parts), canvas,
                                  order=torch.cat(parts))
            boxes = list(mosaic.boxes.split(rows * cols))
            feats.append(self.clip.region_features(mosaic.canvases, boxes))
            sources.append(mosaic.source_index)
        return torch.cat(feats), torch.cat(sources)

    def loss(self, inputs: Tensor, data_samples: List[BaseDataElement]) -> Dict[str, Tensor]:
        """The contrastive loss of one batch.

        Args:
            inputs (Tensor): Normalised images, (B, 3, H, W).
            data_samples (list): B samples whose ``metainfo['captions']`` lists their captions.

        Returns:
            dict: ``loss_caption`` and, for logging, ``logit_scale`` and ``num_regions``.
        """
        captions = self._draw_captions(data_samples)
        texts = self.clip.encode_text(captions, normalize=True)
        ids = caption_ids_from_texts(captions, device=inputs.device)
        num_images = inputs.shape[0]
        order = torch.randperm(num_images, device=inputs.device)
        feats, sources = [], []
        if self.mode == 'clim':
            grids = sample_mosaic_grids(num_images, self.grid_choices,
                                        max_mosaic_images=round(num_images *
                                                                self.mosaic_fraction))
            region_feats, region_sources = self._mosaic_region_features(inputs, grids, order)
            feats.append(region_feats)
            sources.append(region_sources)
            order = order[len(region_sources):]
        if len(order):
            feats.append(self.clip.encode_image(inputs[order]))
            sources.append(order)
        feats, sources = torch.cat(feats), torch.cat(sources)
        loss = self.loss_module(feats, texts[sources], self.logit_scale, caption_ids=ids[sources])
        return dict(loss_caption=loss, logit_scale=self.logit_scale.detach(),
                    num_regions=torch.tensor(float(num_images - len(order)),
                                             device=inputs.device))

    def parse_losses(self, losses: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """As ``BaseModel.parse_losses``, with the logged values averaged over ranks.

        Each rank's ``loss_caption`` is its share of the loss of the whole global batch (see
        :func:`contrastive_caption_loss`); their mean is that loss, so rank 0 logs the value a
        single process with the global batch would. Only the logged copies are averaged; the
        loss that is backpropagated stays the rank's own.
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
        instances = [sample.gt_instances for sample in data_samples]
        if self.use_masks and all('masks' in gt for gt in instances):
            masks = [self._mask_tensor(gt.masks, inputs) for gt in instances]
            feats = self.clip.mask_features(inputs, masks, normalize=True)
            counts = [len(m) for m in masks]
        else:
            boxes = [getattr(gt.bboxes, 'tensor', gt.bboxes).to(inputs) for gt in instances]
            feats = self.clip.region_features(inputs, boxes, normalize=True)
            counts = [len(b) for b in boxes]
        scores = (feats @ self.class_embeddings.t()).split(counts)
        for sample, sample_scores in zip(data_samples, scores):
            sample.pred_region_scores = sample_scores
        return data_samples
