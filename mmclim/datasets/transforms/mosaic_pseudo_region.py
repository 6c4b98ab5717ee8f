# Copyright (c) mmclim contributors. All rights reserved.
import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes

from mmclim.structures import DEFAULT_GRID_CHOICES, Grid, MosaicPolicy, grid_cells
from ..bad_image import TOO_SMALL_FOR_CELL, UNSUPPORTED_CHANNELS, BadImageError

# A source image whose shorter side would have to be enlarged more than this to fill a cell is
# rejected: it carries too little content to be a meaningful pseudo region.
DEFAULT_MAX_UPSCALE = 8.0
# The canvas side when neither canvas_size nor cell_size is given: the paper's CLIP fine-tuning
# resolution (Table 3, 1024x1024 mosaics).
DEFAULT_CANVAS_SIZE = 1024
# What a pseudo box covers: the whole cell, or only the pasted image (the official Detic + CLIM
# mosaic, ``MultiChoicesMosaic``, where keep-ratio images leave padding in their cells).
PSEUDO_BOXES = ('cell', 'image')
# Channels a mosaic source may have: grey (a 2-D array or one channel, copied into every channel
# of a colour canvas) or colour. Others (an RGBA image loaded with color_type='unchanged') are
# refused: LoadImageFromFile(color_type='color') converts every image to 3 channels.
SOURCE_CHANNELS = (1, 3)


def source_name(results: dict) -> str:
    """How error messages name an image: its ``img_path``, else its ``img_id``."""
    return str(results.get('img_path') or results.get('img_id', '<unnamed image>'))


def as_hwc(img: np.ndarray) -> np.ndarray:
    """A grey image of shape (H, W) as (H, W, 1); others as they are."""
    return img[..., None] if img.ndim == 2 else img


def check_caption_source(results: dict, owner: str) -> None:
    """Check that ``results`` holds a decoded image and a list of non-empty captions.

    Args:
        results (dict): Result dict with ``img`` (np.ndarray, (H, W, C) with C in
            :data:`SOURCE_CHANNELS`, or (H, W)) and ``captions`` (list[str]).
        owner (str): Name of the transform, for the error messages.

    Raises:
        BadImageError: For an image whose channels are not in :data:`SOURCE_CHANNELS`, naming
            it.
        ValueError: Naming the image (:func:`source_name`) and what else is wrong.
    """
    name = source_name(results)
    img = results.get('img')
    if img is None:
        raise ValueError(f'{owner}: no decoded image for {name}')
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f'{owner}: image {name} has shape {img.shape}; '
                         f'expected (H, W, C) or (H, W) with H, W > 0')
    if as_hwc(img).shape[2] not in SOURCE_CHANNELS:
        raise BadImageError(
            name, UNSUPPORTED_CHANNELS,
            f'{owner}: image {name} has {img.shape[2]} channels; a mosaic takes '
            f'{SOURCE_CHANNELS} (grey or colour): load it with '
            "LoadImageFromFile(color_type='color')")
    captions = results.get('captions')
    if (not captions or isinstance(captions, str)
            or not all(isinstance(c, str) and c.strip() for c in captions)):
        raise ValueError(f'{owner}: image {name} needs a non-empty list of '
                         f'non-empty caption strings in results["captions"], got {captions!r}')


@TRANSFORMS.register_module()
class MosaicPseudoRegion(BaseTransform):
    """Mosaic image-caption pairs into one canvas whose cells are pseudo regions (CLIM).

    The canvas is divided into a ``rows x cols`` grid (one of ``grid_choices``, drawn at random per
    mosaic by :meth:`mmclim.structures.MosaicPolicy.sample_grid`, the owner of the mosaic
    composition). Each of the ``rows * cols`` source images is randomly cropped (area fraction in
    ``crop_scale``, with the cell's aspect ratio) and resized to fill its cell, so a cell's box and
    caption come for free. With ``keep_ratio=True`` the crop keeps the image's aspect ratio
    instead and is centred in its cell on ``pad_val``; the pseudo box is then the whole cell
    (``pseudo_box='cell'``) or the pasted image's extent (``pseudo_box='image'``).

    The canvas is either fixed (``canvas_size``) or grows with the grid (``cell_size``: a
    ``rows x cols`` grid gives a ``(rows * cell_size, cols * cell_size)`` canvas). The official
    Detic + CLIM mosaic (``MultiChoicesMosaic`` of the CLIM repository, OV-COCO) is::

        dict(type='CachedMosaicPseudoRegion', grid_choices=[2, 3, 4], cell_size=400,
             keep_ratio=True, crop_scale=(1.0, 1.0), pseudo_box='image', pad_val=114),
        dict(type='Resize', scale=(800, 800), keep_ratio=True),  # every canvas to 800x800

    Known difference: the official mosaic packs the images toward the grid lines (the outer rows
    and columns against the inner borders, a middle row or column at random); this transform
    centres each image in its cell. The image sizes, the padding and the pseudo boxes' sizes are
    the same; only their positions inside the cells differ.

    It follows mmdet's mix-transform convention: inside ``MultiImageMixDataset``,
    :meth:`get_indexes` draws the grid and the other ``rows * cols - 1`` images, which arrive in
    ``results['mix_results']``; the grid is recovered from their number, so the cell counts of
    ``grid_choices`` must be distinct. Cell ``i`` (row-major) holds image ``i``: the current image
    first, then ``mix_results`` in order.

    Required Keys:

    - img (np.uint8, (H, W, 3); a grey (H, W) or (H, W, 1) image fills every channel of its
      cell, and the canvas is grey only when every image is)
    - captions (list[str]): one is drawn at random when there are several
    - img_id (optional): recorded in ``image_ids``
    - img_path (optional): named in error messages
    - tags (list[int], optional): the image's tags (``with_tags`` of
      :class:`mmclim.datasets.CaptionDataset`); all images of a mosaic have them or none
    - mix_results (list[dict]): the other images, with the same keys

    Modified Keys:

    - img: the canvas, ``canvas_size`` or ``(rows * cell_size, cols * cell_size)``
    - img_shape

    Added Keys:

    - gt_bboxes (HorizontalBoxes, (rows * cols, 4)): the cells, or the pasted images' extents
      with ``pseudo_box='image'``, row-major
    - gt_bboxes_labels (np.int64, (rows * cols,)): the cell index, which indexes
      ``region_captions`` (so captions follow their boxes through flips, crops and filters)
    - gt_ignore_flags (bool, (rows * cols,)): all False
    - region_captions (list[str]): one caption per cell, drawn from its image's captions
    - image_ids (list): ``img_id`` of each cell's source image (None when absent)
    - region_tags (list[list[int]], only when the images have ``tags``): each cell's image's tags
    - region_caption_lists (list[list[str]], only with ``all_captions``): every caption of each
      cell's image (BARON aligns a region with all of them)
    - mosaic_grid (tuple[int, int]): ``(rows, cols)``, the drawn grid

    Removed Keys:

    - captions, tags (the current image's own: the canvas has one caption and one tag list per
      region)

    Pack ``region_captions`` and ``mosaic_grid`` (and ``image_ids``, ``region_tags`` for Detic)
    with ``PackDetInputs(meta_keys=(..., 'region_captions', 'mosaic_grid'))``;
    :class:`mmclim.models.pretrainers.CLIMCLIP` trains each box against its own caption.

    Args:
        grid_choices (Sequence[int | Sequence[int]]): Grids to draw from, ``n`` for ``n x n`` or
            ``(rows, cols)``. Defaults to ``((2, 2), (3, 3), (4, 4))``, the paper's best setting
            (Table 2b).
        canvas_size (int | Sequence[int], optional): Canvas ``(height, width)``, or one int for
            a square, the same for every grid. Not with ``cell_size``. Defaults to None: 1024
            (the paper's CLIP fine-tuning resolution, Table 3) unless ``cell_size`` is given.
        crop_scale (Sequence[float]): Range of the crop's area as a fraction of the largest crop
            of the cell's aspect ratio that fits the image. ``(1.0, 1.0)`` disables cropping.
            Defaults to ``(0.5, 1.0)``.
        keep_ratio (bool): Keep the source aspect ratio and pad the cell. Defaults to False.
        pad_val (int): Canvas value outside the resized images (``keep_ratio=True`` only).
            Defaults to 114, as mmdet's Mosaic.
        max_upscale (float): Largest allowed enlargement of a source image's shorter side to the
            cell's longer side; a smaller image raises
            :class:`~mmclim.datasets.bad_image.BadImageError` (a ``ValueError``) naming it, which
            a caption dataset running this transform counts and skips with
            ``on_bad_entry='skip'``. Defaults to 8.0.
        interpolation (int): cv2 interpolation flag. Defaults to ``cv2.INTER_LINEAR``.
        pseudo_box (str): ``'cell'`` (each box is its whole cell) or ``'image'`` (the pasted
            image's extent, the official Detic + CLIM mosaic; the same as ``'cell'`` unless
            ``keep_ratio``). Defaults to ``'cell'``.
        cell_size (int, optional): Side of every cell in pixels; the canvas of a ``rows x cols``
            grid is then ``(rows * cell_size, cols * cell_size)`` (the official mosaic: 400).
            Not with ``canvas_size``. Defaults to None (a fixed canvas).
        all_captions (bool): Also write ``region_caption_lists``, every caption of each cell's
            image (the official BARON caption loss takes all of an image's captions as its
            positives). Defaults to False.
    """

    def __init__(self,
                 grid_choices: Sequence[Union[int, Sequence[int]]] = DEFAULT_GRID_CHOICES,
                 canvas_size: Union[int, Sequence[int], None] = None,
                 crop_scale: Sequence[float] = (0.5, 1.0),
                 keep_ratio: bool = False,
                 pad_val: int = 114,
                 max_upscale: float = DEFAULT_MAX_UPSCALE,
                 interpolation: int = cv2.INTER_LINEAR,
                 pseudo_box: str = 'cell',
                 cell_size: Optional[int] = None,
                 all_captions: bool = False) -> None:
        name = type(self).__name__
        self.all_captions = bool(all_captions)
        self.policy = MosaicPolicy(grid_choices, field=name)
        self.grid_choices = self.policy.grid_choices
        self.cell_size = cell_size
        self.canvas_size: Optional[Tuple[int, int]] = None
        if cell_size is not None:
            if canvas_size is not None:
                raise ValueError(f'{name}: give canvas_size (a fixed canvas) or cell_size (a '
                                 f'canvas of rows * cell_size x cols * cell_size), not both; got '
                                 f'canvas_size={canvas_size!r}, cell_size={cell_size!r}')
            if not (isinstance(cell_size, (int, np.integer)) and cell_size >= 1):
                raise ValueError(f'{name}: cell_size must be a positive int, got {cell_size!r}')
        else:
            canvas_size = DEFAULT_CANVAS_SIZE if canvas_size is None else canvas_size
            self.canvas_size = ((canvas_size, canvas_size) if isinstance(
                canvas_size, int) else tuple(canvas_size))
            if len(self.canvas_size) != 2 or min(self.canvas_size) < max(
                    max(grid) for grid in self.grid_choices):
                raise ValueError(f'canvas_size must be an int or (height, width) at least as '
                                 f'large as every grid in grid_choices, got {canvas_size!r}')
        if pseudo_box not in PSEUDO_BOXES:
            raise ValueError(f'{name}: pseudo_box must be one of {PSEUDO_BOXES}, got '
                             f'{pseudo_box!r}')
        self.pseudo_box = pseudo_box
        if not (len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f'crop_scale must be (min, max) with 0 < min <= max <= 1, got '
                             f'{crop_scale!r}')
        if max_upscale < 1:
            raise ValueError(f'max_upscale must be >= 1, got {max_upscale}')
        self.crop_scale = tuple(crop_scale)
        self.keep_ratio = keep_ratio
        self.pad_val = pad_val
        self.max_upscale = max_upscale
        self.interpolation = interpolation
        self._grid_by_count = {rows * cols: (rows, cols) for rows, cols in self.grid_choices}
        self.cells = {grid: grid_cells(grid, self.canvas_of(grid)) for grid in self.grid_choices}

    def canvas_of(self, grid: Grid) -> Tuple[int, int]:
        """The canvas ``(height, width)`` of a grid ``(rows, cols)``."""
        if self.cell_size is None:
            return self.canvas_size
        return grid[0] * self.cell_size, grid[1] * self.cell_size

    @property
    def min_images(self) -> int:
        """Images needed by the smallest grid."""
        return min(self._grid_by_count)

    @cache_randomness
    def get_indexes(self, dataset) -> List[int]:
        """Draw a grid and the indexes of the other images that fill it.

        Args:
            dataset (Sized): The dataset wrapped by ``MultiImageMixDataset``.

        Returns:
            list[int]: ``rows * cols - 1`` distinct indexes. ``MultiImageMixDataset`` does not
            tell which image is the current one, so it may be drawn again, with probability
            about ``rows * cols / len(dataset)``; its caption then repeats, which
            ``CLIMCaptionLoss`` handles with ``caption_ids``.
        """
        rows, cols = self.policy.sample_grid()
        if len(dataset) < rows * cols:
            raise ValueError(
                f'{type(self).__name__}: the dataset has {len(dataset)} images but a {rows}x{cols} '
                f'grid needs {rows * cols}; remove that grid from grid_choices or add images')
        return np.random.choice(len(dataset), rows * cols - 1, replace=False).tolist()

    @cache_randomness
    def _sample_draws(self, num_cells: int) -> np.ndarray:
        """Uniform draws in [0, 1) for each cell: crop area, crop x, crop y, caption choice.

        Returns:
            np.ndarray: Shape (num_cells, 4).
        """
        return np.random.random_sample((num_cells, 4))

    def _crop_box(self, img_hw: Tuple[int, int], cell_hw: Tuple[int, int],
                  draws: np.ndarray) -> Tuple[int, int, int, int]:
        """The crop ``(x1, y1, x2, y2)`` of an ``img_hw`` image for a ``cell_hw`` cell.

        Args:
            img_hw (tuple[int, int]): Source image ``(height, width)``.
            cell_hw (tuple[int, int]): Cell ``(height, width)``.
            draws (np.ndarray): Shape (>=3,): area, x and y draws in [0, 1).
        """
        img_h, img_w = img_hw
        aspect = img_w / img_h if self.keep_ratio else cell_hw[1] / cell_hw[0]
        # The largest crop of this aspect ratio inside the image, then shrunk by the scale.
        full_w = min(img_w, img_h * aspect)
        low, high = self.crop_scale
        side = math.sqrt(low + draws[0] * (high - low))
        crop_w = min(img_w, max(1, int(round(full_w * side))))
        crop_h = min(img_h, max(1, int(round(full_w / aspect * side))))
        x1 = int(draws[1] * (img_w - crop_w + 1))
        y1 = int(draws[2] * (img_h - crop_h + 1))
        return x1, y1, x1 + crop_w, y1 + crop_h

    def _check_source(self, results: dict, cell_hw: Tuple[int, int]) -> None:
        check_caption_source(results, type(self).__name__)
        name, img = source_name(results), results['img']
        if min(img.shape[:2]) * self.max_upscale < max(cell_hw):
            raise BadImageError(
                name, TOO_SMALL_FOR_CELL,
                f'{type(self).__name__}: image {name} ({img.shape[0]}x{img.shape[1]}) is too small '
                f'for a {cell_hw[0]}x{cell_hw[1]} cell (max_upscale={self.max_upscale})')

    def _fill_cell(self, canvas: np.ndarray, img: np.ndarray, cell: np.ndarray,
                   draws: np.ndarray) -> Tuple[int, int, int, int]:
        """Crop ``img`` and resize it into ``cell`` (x1, y1, x2, y2) of ``canvas``.

        Args:
            canvas (np.ndarray): Shape (H, W, C), written in place.
            img (np.ndarray): Shape (h, w, C) or (h, w, 1), the source image; one channel fills
                every channel of the canvas.
            cell (np.ndarray): Shape (4,), the cell's pixel box.
            draws (np.ndarray): Shape (4,), this cell's row of :meth:`_sample_draws`.

        Returns:
            tuple[int, int, int, int]: The pasted pixels ``(x1, y1, x2, y2)``, exclusive
            ``x2, y2``: the whole cell unless ``keep_ratio``.
        """
        x1, y1, x2, y2 = (int(v) for v in cell)
        cell_h, cell_w = y2 - y1, x2 - x1
        cx1, cy1, cx2, cy2 = self._crop_box(img.shape[:2], (cell_h, cell_w), draws)
        crop = img[cy1:cy2, cx1:cx2]
        if self.keep_ratio:
            scale = min(cell_h / crop.shape[0], cell_w / crop.shape[1])
            out_h = max(1, min(cell_h, int(round(crop.shape[0] * scale))))
            out_w = max(1, min(cell_w, int(round(crop.shape[1] * scale))))
            y1 += (cell_h - out_h) // 2
            x1 += (cell_w - out_w) // 2
            cell_h, cell_w = out_h, out_w
        target = canvas[y1:y1 + cell_h, x1:x1 + cell_w]
        if crop.shape[2] == 1:
            # A grey image (cv2 drops its channel axis) into every channel of the canvas.
            resized = cv2.resize(crop, (cell_w, cell_h), interpolation=self.interpolation)
            target[...] = resized.reshape(cell_h, cell_w, -1)
        else:  # resized straight into the canvas, no intermediate copy
            cv2.resize(crop, (cell_w, cell_h), dst=target, interpolation=self.interpolation)
        return x1, y1, x1 + cell_w, y1 + cell_h

    def _region_tags(self, sources: Sequence[dict]) -> Optional[List[List[int]]]:
        """Each source's ``tags``, or None when no source has them.

        Raises:
            ValueError: When some sources have ``tags`` and others not, naming one without.
        """
        missing = [source for source in sources if 'tags' not in source]
        if len(missing) == len(sources):
            return None
        if missing:
            raise ValueError(
                f'{type(self).__name__}: image {source_name(missing[0])} has no "tags" but other '
                f'images of the mosaic have; give every caption dataset of the mosaic the same '
                f'with_tags')
        return [list(source['tags']) for source in sources]

    def _mosaic(self, sources: Sequence[dict], grid: Optional[Grid] = None) -> dict:
        """Tile ``sources`` (dicts with ``img`` and ``captions``) into one canvas.

        Args:
            sources (Sequence[dict]): ``rows * cols`` results.
            grid (tuple[int, int], optional): ``(rows, cols)``; by default the grid of
                ``grid_choices`` with ``len(sources)`` cells.

        Returns:
            dict: The keys this transform writes (see the class docstring).
        """
        if grid is None:
            grid = self._grid_by_count.get(len(sources))
            if grid is None:
                raise ValueError(
                    f'{type(self).__name__} got {len(sources)} images; the grids '
                    f'{self.grid_choices} need one of {sorted(self._grid_by_count)} (inside '
                    f'MultiImageMixDataset, get_indexes provides them)')
        canvas_hw = self.canvas_of(grid)
        cells = self.cells[grid] if grid in self.cells else grid_cells(grid, canvas_hw)
        for source, cell in zip(sources, cells):
            self._check_source(source, (int(cell[3] - cell[1]), int(cell[2] - cell[0])))
        images = [as_hwc(source['img']) for source in sources]
        first = images[0]
        # Colour when any image is: grey ones are copied into every channel.
        shape = (*canvas_hw, max(img.shape[2] for img in images))
        # Without keep_ratio the cells tile the canvas and every pixel is written.
        canvas = (np.full(shape, self.pad_val, dtype=first.dtype)
                  if self.keep_ratio else np.empty(shape, dtype=first.dtype))
        region_captions, image_ids, pasted = [], [], []
        region_tags = self._region_tags(sources)
        for source, img, cell, draws in zip(sources, images, cells,
                                            self._sample_draws(len(cells))):
            pasted.append(self._fill_cell(canvas, img, cell, draws))
            region_captions.append(source['captions'][int(draws[3] * len(source['captions']))])
            image_ids.append(source.get('img_id'))
        num_cells = len(cells)
        boxes = np.array(pasted) if self.pseudo_box == 'image' else cells
        out = dict(
            img=canvas,
            img_shape=canvas_hw,
            gt_bboxes=HorizontalBoxes(boxes.astype(np.float32)),
            gt_bboxes_labels=np.arange(num_cells, dtype=np.int64),
            gt_ignore_flags=np.zeros(num_cells, dtype=bool),
            region_captions=region_captions,
            image_ids=image_ids,
            mosaic_grid=grid)
        if region_tags is not None:
            out['region_tags'] = region_tags
        if self.all_captions:
            out['region_caption_lists'] = [list(source['captions']) for source in sources]
        return out

    def transform(self, results: dict) -> dict:
        """Mosaic ``results`` and ``results['mix_results']``.

        Args:
            results (dict): Result dict with the keys of the class docstring.

        Returns:
            dict: ``results`` with the mosaic written in and ``mix_results`` removed.
        """
        mix_results: Optional[List[dict]] = results.pop('mix_results', None)
        if mix_results is None:
            raise KeyError(f'{type(self).__name__} needs results["mix_results"]; wrap the dataset '
                           f'in MultiImageMixDataset, or use CachedMosaicPseudoRegion')
        results.update(self._mosaic([results, *mix_results]))
        results.pop('captions')
        results.pop('tags', None)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(grid_choices={self.grid_choices}, '
                f'canvas_size={self.canvas_size}, crop_scale={self.crop_scale}, '
                f'keep_ratio={self.keep_ratio}, pad_val={self.pad_val}, '
                f'max_upscale={self.max_upscale}, interpolation={self.interpolation}, '
                f'pseudo_box={self.pseudo_box!r}, cell_size={self.cell_size}, '
                f'all_captions={self.all_captions})')
