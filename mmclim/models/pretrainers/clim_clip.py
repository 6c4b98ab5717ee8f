# Copyright (c) mmclim contributors. All rights reserved.
"""Fine-tune CLIP with CLIM (paper section "Enhancing CLIP Model's Region Representation")."""
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import Tensor

from mmclim.models.losses import caption_ids_from_texts
from mmclim.models.utils import batch_mosaic
from mmclim.structures import Grid, MosaicPolicy, grid_cells, grid_size, load_class_embeddings

TRAIN_MODES = ('clim', 'image')
# CLIP clamps its learned temperature so that the logit scale stays at most 100 (the official
# code clamps the parameter to [0, ln 100] after each step).
MAX_LOGIT_SCALE = 100.0
# The keys a pipeline mosaic (MosaicPseudoRegion) carries in its metainfo: one caption per pseudo
# box, indexed by the box's label, and the grid it was drawn with.
REGION_CAPTIONS_KEY = 'region_captions'
MOSAIC_GRID_KEY = 'mosaic_grid'
# The key of a single image's alternative captions (caption datasets), one drawn per step.
CAPTIONS_KEY = 'captions'
MOSAIC_INTERPOLATIONS = ('bilinear', 'bicubic')
# Dense-map cells a mosaic cell must span per side. With one, a pseudo region's RoIAlign reads a
# single feature (blurred into its neighbours), not a region; the paper's smallest cell, 4x4 on
# a 1024 canvas with ViT-B/16, spans 16.
MIN_CELL_FEATURES = 2


@MODELS.register_module()
class CLIMCLIP(BaseModel):
    """CLIP trained on image-caption pairs, with CLIM mosaics or image-level (the baseline).

    In ``mode='clim'`` the mosaics of each batch come from the :class:`MosaicPolicy` ``mosaic``
    (the one owner of the composition: grids, how many, the budget, checked against the per-GPU
    batch when built): consecutive images of the shuffled batch are tiled by
    :func:`mmclim.models.utils.batch_mosaic` into canvases, every cell is a pseudo region whose
    feature (:meth:`OpenCLIPRegion.region_features`) is aligned with its image's caption, and the
    images left over stay single, aligned by their image-level embedding
    (:meth:`OpenCLIPRegion.encode_image`), all in one :class:`CLIMCaptionLoss` (negatives from
    every rank). ``mode='image'`` aligns every image by its embedding: CLIP's own objective, the
    baseline CLIM is compared with. One caption is drawn per image per step from its
    ``metainfo['captions']``; identical captions are not negatives of each other.

    Batches of pipeline mosaics (:class:`mmclim.datasets.transforms.MosaicPseudoRegion`, with
    ``'region_captions'`` and ``'mosaic_grid'`` in ``PackDetInputs``' ``meta_keys``) are used as
    they come: box ``j`` of a canvas (``gt_instances.bboxes[j]``) meets
    ``metainfo['region_captions'][gt_instances.labels[j]]``.

    At test time (``predict``) it classifies the ground-truth regions of each image zero-shot:
    region features of ``gt_instances.bboxes``, or of ``gt_instances.masks`` (mask pooling) when
    every sample has masks and ``use_masks``, against ``class_embeddings``, written to
    ``pred_region_scores`` (N, C) for :class:`RegionClassificationMetric`.

    **Weight ensembling.** With ``weight_ensemble=alpha`` the model keeps the original values of
    its trainable parameters (from ``clip.pretrained``); :meth:`ensembled_weights` swaps in
    ``alpha * trained + (1 - alpha) * original`` for evaluation, as the official code evaluates
    and exports its models (alpha 0.7). :class:`mmclim.engine.WeightEnsembleHook` does it around
    every validation and test epoch; ``tools/model_converters/clim_to_openclip.py`` exports the
    same weights.

    Args:
        clip (dict): Config of an :class:`OpenCLIPRegion` (model name, local checkpoint,
            trainable blocks).
        loss (dict): Config of the contrastive loss. Defaults to ``dict(type='CLIMCaptionLoss')``.
        mode (str): ``'clim'`` or ``'image'``. Defaults to ``'clim'``.
        mosaic (dict, optional): :class:`MosaicPolicy` arguments (``grid_choices``,
            ``composition``, ``batch_size``, ``mosaic_fraction``); ``mode='clim'`` only.
            Defaults to ``dict()``: one 2x2, 3x3 and 4x4 mosaic per 29 images.
        canvas_size (int, optional): Side of every mosaic canvas (the official code resizes
            every canvas to 1024). None makes each cell the size of the input images (canvas =
            grid x image size). Checked when built: every cell of every grid must span at least
            :data:`MIN_CELL_FEATURES` cells of the tower's dense map per side (``canvas_size >=
            max(rows, cols) * 2 * clip.stride``). Defaults to None.
        mosaic_interpolation (str): How images are resized into their cells, ``'bicubic'`` (the
            official code) or ``'bilinear'``. Defaults to ``'bicubic'``.
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
                 loss: Optional[dict] = None,
                 mode: str = 'clim',
                 mosaic: Optional[dict] = None,
                 canvas_size: Optional[int] = None,
                 mosaic_interpolation: str = 'bicubic',
                 class_embeddings: Optional[str] = None,
                 use_masks: bool = True,
                 weight_ensemble: Optional[float] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        name = type(self).__name__
        if mode not in TRAIN_MODES:
            raise ValueError(f'{name}.mode: expected one of {TRAIN_MODES}, got {mode!r}')
        if mosaic_interpolation not in MOSAIC_INTERPOLATIONS:
            raise ValueError(f'{name}.mosaic_interpolation: expected one of '
                             f'{MOSAIC_INTERPOLATIONS}, got {mosaic_interpolation!r}')
        if canvas_size is not None and (isinstance(canvas_size, bool) or not (
                isinstance(canvas_size, int) and canvas_size > 0)):
            raise ValueError(f'{name}.canvas_size: expected None or a positive int, got '
                             f'{canvas_size!r}')
        self.clip = MODELS.build(clip)
        self.loss_module = MODELS.build(loss or dict(type='CLIMCaptionLoss'))
        self.mode = mode
        self.mosaic = MosaicPolicy(**(mosaic or {}), field='model.mosaic')
        self.canvas_size = canvas_size
        self.mosaic_interpolation = mosaic_interpolation
        if canvas_size is not None:
            self._check_canvas(canvas_size)
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

    def _check_canvas(self, canvas_size: int) -> None:
        """Raise unless every cell of every grid on the canvas spans at least
        :data:`MIN_CELL_FEATURES` dense-map cells per side, naming the fields."""
        stride = self.clip.stride
        too_small = []  # (shorter cell side, grid, cell height, cell width)
        for rows, cols in self.mosaic.grid_choices:
            cells = grid_cells((rows, cols), (canvas_size, canvas_size))
            cell_h = int((cells[:, 3] - cells[:, 1]).min())
            cell_w = int((cells[:, 2] - cells[:, 0]).min())
            if min(cell_h, cell_w) < MIN_CELL_FEATURES * stride:
                too_small.append((min(cell_h, cell_w), (rows, cols), cell_h, cell_w))
        if not too_small:
            return
        # Named: the finest grid that does not fit (the one that sets the canvas needed).
        _, (rows, cols), cell_h, cell_w = max(too_small, key=lambda item: (max(item[1]), -item[0]))
        # Cells of a canvas of n * k pixels divided n ways are all k wide (mosaic_grid).
        needed = max(max(grid) for grid in self.mosaic.grid_choices) * MIN_CELL_FEATURES * stride
        raise ValueError(
            f'model.canvas_size: {canvas_size} pixels give the {rows}x{cols} grid of '
            f'model.mosaic.grid_choices {list(self.mosaic.grid_choices)} cells of '
            f'{cell_h}x{cell_w} pixels, {cell_h / stride:.2g}x{cell_w / stride:.2g} cells of the '
            f'dense map of model.clip ({self.clip.model_name}, stride {stride}); a pseudo region '
            f'needs at least {MIN_CELL_FEATURES}x{MIN_CELL_FEATURES}: set model.canvas_size to '
            f'at least {needed}, or remove '
            f'{[f"{grid[0]}x{grid[1]}" for _, grid, _, _ in too_small]} from '
            'model.mosaic.grid_choices')

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
        captions = []
        for index, sample in enumerate(data_samples):
            options = sample.metainfo.get(CAPTIONS_KEY)
            if not options or isinstance(options, str):
                raise ValueError(f'{type(self).__name__}: data sample {index} '
                                 f'({sample.metainfo.get("img_path", "?")}) has no list of '
                                 f"captions; add 'captions' to PackDetInputs' meta_keys")
            captions.append(options[int(torch.randint(len(options), (1, )))])
        return captions

    def _mosaic_region_features(self, inputs: Tensor, grids: Tuple[Grid, ...],
                                order: Tensor) -> Tuple[Tensor, Tensor]:
        """Region features of the mosaicked images.

        With ``canvas_size`` every canvas has that size and all go through the tower in one
        forward; without, each grid's canvases (grid x image size) go in one forward per grid.

        Args:
            inputs (Tensor): The batch, (B, 3, H, W).
            grids (tuple[tuple[int, int], ...]): Grids filled in order by ``order``.
            order (Tensor): (sum of grid sizes,) indexes of the images that fill the grids.

        Returns:
            tuple[Tensor, Tensor]: Region features (K, D) and the input index of each (K,).
        """
        chunks: Dict[Grid, List[Tensor]] = defaultdict(list)
        start = 0
        for grid in grids:
            chunks[grid if self.canvas_size is None else None].append(
                order[start:start + grid_size(grid)])
            start += grid_size(grid)
        feats, sources = [], []
        for key, parts in chunks.items():
            if key is None:
                chunk_grids, canvas = grids, self.canvas_size
            else:
                chunk_grids = [key] * len(parts)
                canvas = (key[0] * inputs.shape[-2], key[1] * inputs.shape[-1])
            mosaic = batch_mosaic(inputs, chunk_grids, canvas, order=torch.cat(parts),
                                  mode=self.mosaic_interpolation)
            boxes = list(mosaic.boxes.split([grid_size(grid) for grid in chunk_grids]))
            feats.append(self.clip.region_features(mosaic.canvases, boxes))
            sources.append(mosaic.source_index)
        return torch.cat(feats), torch.cat(sources)

    def _is_pipeline_mosaic(self, data_samples: List[BaseDataElement]) -> bool:
        """Whether the batch holds pipeline mosaics (all samples) or single images (none)."""
        flags = [REGION_CAPTIONS_KEY in sample.metainfo for sample in data_samples]
        if any(flags) and not all(flags):
            raise ValueError(f'{type(self).__name__}: a batch mixes pipeline mosaics (samples '
                             f"with '{REGION_CAPTIONS_KEY}') and single images; feed each kind "
                             'in batches of its own')
        return all(flags) and bool(flags)

    def _pipeline_mosaic_pairs(self, data_samples: List[BaseDataElement]
                               ) -> Tuple[List[Tensor], List[str]]:
        """Pseudo boxes and their captions of pipeline mosaics (box j meets
        ``region_captions[labels[j]]``)."""
        boxes, captions = [], []
        for index, sample in enumerate(data_samples):
            options = sample.metainfo[REGION_CAPTIONS_KEY]
            gt = sample.gt_instances
            labels = gt.labels.tolist()
            if any(not 0 <= label < len(options) for label in labels):
                raise ValueError(
                    f'{type(self).__name__}: data sample {index} '
                    f'({sample.metainfo.get("img_path", "?")}) has box labels {labels} but '
                    f"{len(options)} '{REGION_CAPTIONS_KEY}'; each pseudo box's label indexes its "
                    'caption')
            boxes.append(getattr(gt.bboxes, 'tensor', gt.bboxes))
            captions.extend(options[label] for label in labels)
        return boxes, captions

    def loss(self, inputs: Tensor, data_samples: List[BaseDataElement]) -> Dict[str, Tensor]:
        """The contrastive loss of one batch.

        Args:
            inputs (Tensor): Normalised images, (B, 3, H, W).
            data_samples (list): B samples: single images whose ``metainfo['captions']`` lists
                their captions, or pipeline mosaics (see the class doc).

        Returns:
            dict: ``loss_caption`` and, for logging, ``logit_scale`` and ``num_regions``.
        """
        if self._is_pipeline_mosaic(data_samples):
            boxes, captions = self._pipeline_mosaic_pairs(data_samples)
            feats = self.clip.region_features(inputs, [b.to(inputs) for b in boxes])
            texts = self.clip.encode_text(captions, normalize=True)
            ids = caption_ids_from_texts(captions, device=inputs.device)
            loss = self.loss_module(feats, texts, self.logit_scale, caption_ids=ids)
            return dict(loss_caption=loss, logit_scale=self.logit_scale.detach(),
                        num_regions=torch.tensor(float(len(captions)), device=inputs.device))
        captions = self._draw_captions(data_samples)
        texts = self.clip.encode_text(captions, normalize=True)
        ids = caption_ids_from_texts(captions, device=inputs.device)
        num_images = inputs.shape[0]
        order = torch.randperm(num_images, device=inputs.device)
        feats, sources = [], []
        num_regions = 0
        if self.mode == 'clim':
            draw = self.mosaic.draw(num_images)
            if draw.grids:
                region_feats, region_sources = self._mosaic_region_features(
                    inputs, draw.grids, order[:draw.num_mosaic_images])
                feats.append(region_feats)
                sources.append(region_sources)
            num_regions = draw.num_mosaic_images
            order = order[draw.num_mosaic_images:]
        if len(order):
            feats.append(self.clip.encode_image(inputs[order]))
            sources.append(order)
        feats, sources = torch.cat(feats), torch.cat(sources)
        loss = self.loss_module(feats, texts[sources], self.logit_scale, caption_ids=ids[sources])
        return dict(loss_caption=loss, logit_scale=self.logit_scale.detach(),
                    num_regions=torch.tensor(float(num_regions), device=inputs.device))

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
