# Copyright (c) mmclim contributors. All rights reserved.
"""Fine-tune CLIP with CLIM (paper section "Enhancing CLIP Model's Region Representation")."""
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.structures import BaseDataElement
from torch import Tensor

from mmclim.models.losses import caption_ids_from_texts
from mmclim.models.utils import batch_mosaic
from mmclim.structures import Grid, MosaicPolicy, grid_cells, grid_size
from .clip_pretrainer import CLIPPretrainer

TRAIN_MODES = ('clim', 'image')
# The keys a pipeline mosaic (MosaicPseudoRegion) carries in its metainfo: one caption per pseudo
# box, indexed by the box's label, and the grid it was drawn with.
REGION_CAPTIONS_KEY = 'region_captions'
MOSAIC_GRID_KEY = 'mosaic_grid'
MOSAIC_INTERPOLATIONS = ('bilinear', 'bicubic')
# Dense-map cells a mosaic cell must span per side. With one, a pseudo region's RoIAlign reads a
# single feature (blurred into its neighbours), not a region; the paper's smallest cell, 4x4 on
# a 1024 canvas with ViT-B/16, spans 16.
MIN_CELL_FEATURES = 2


@MODELS.register_module()
class CLIMCLIP(CLIPPretrainer):
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

    Evaluation (``predict``, zero-shot classification of ground-truth regions) and weight
    ensembling are :class:`CLIPPretrainer`'s.

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
        class_embeddings, use_masks, weight_ensemble, data_preprocessor, init_cfg: See
            :class:`CLIPPretrainer`.
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
        super().__init__(clip, class_embeddings=class_embeddings, use_masks=use_masks,
                         weight_ensemble=weight_ensemble, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
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
        self.loss_module = MODELS.build(loss or dict(type='CLIMCaptionLoss'))
        self.mode = mode
        self.mosaic = MosaicPolicy(**(mosaic or {}), field='model.mosaic')
        self.canvas_size = canvas_size
        self.mosaic_interpolation = mosaic_interpolation
        if canvas_size is not None:
            self._check_canvas(canvas_size)

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
