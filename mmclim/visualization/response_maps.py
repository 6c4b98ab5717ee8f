# Copyright (c) mmclim contributors. All rights reserved.
"""Where a CLIP's dense features respond to a text: the paper's Figures 3-5.

The response of a text at a dense-map cell is the cosine similarity between the cell's feature
(:meth:`~mmclim.models.backbones.OpenCLIPRegion.dense_features`) and the text's embedding.
:func:`text_response_maps` computes it, :func:`pointing_game` scores whether a map's peak lies on
the named object, and :func:`draw_response_panels` draws one row of panels per model.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from mmclim.models.backbones import OpenCLIPRegion
from mmclim.structures.mosaic_grid import Grid, grid_cells

# Share of the image drawn under the response overlay, and the colour map of the responses.
OVERLAY_ALPHA = 0.55
COLOR_MAP = 'jet'
PANEL_INCHES = 2.4


def normalize_images(images: np.ndarray) -> Tensor:
    """RGB uint8 images as CLIP's input: float, scaled and normalised with OpenAI's mean and std.

    Args:
        images (np.ndarray): Shape (B, H, W, 3), uint8, RGB.

    Returns:
        Tensor: Shape (B, 3, H, W), float32.
    """
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def compose_mosaic(images: Sequence[np.ndarray], grid: Grid, cell_size: int) -> np.ndarray:
    """Tile images into a ``rows x cols`` mosaic, each resized to its cell (Figure 3's inputs).

    Args:
        images (Sequence[np.ndarray]): rows * cols RGB uint8 images, each (H_i, W_i, 3).
        grid (tuple[int, int]): ``(rows, cols)``.
        cell_size (int): Side of a cell in pixels.

    Returns:
        np.ndarray: Shape (rows * cell_size, cols * cell_size, 3), uint8.
    """
    rows, cols = grid
    if len(images) != rows * cols:
        raise ValueError(f'--mosaic: a {rows}x{cols} grid takes {rows * cols} images, got '
                         f'{len(images)}')
    import cv2
    canvas = np.zeros((rows * cell_size, cols * cell_size, 3), np.uint8)
    for image, (x1, y1, x2, y2) in zip(images, grid_cells(grid, canvas.shape[:2])):
        canvas[y1:y2, x1:x2] = cv2.resize(image, (int(x2 - x1), int(y2 - y1)),
                                          interpolation=cv2.INTER_AREA)
    return canvas


@torch.no_grad()
def text_response_maps(clip: OpenCLIPRegion, images: Tensor, text_embeddings: Tensor) -> Tensor:
    """Cosine similarity of every dense-map cell with every text, upsampled to the images.

    Args:
        clip (OpenCLIPRegion): The model; its :meth:`dense_features` give the map.
        images (Tensor): Normalised images (see :func:`normalize_images`), shape (B, 3, H, W),
            H and W multiples of the model's stride s.
        text_embeddings (Tensor): Shape (T, D), D the model's embedding size.

    Returns:
        Tensor: Shape (B, T, H, W): the (B, T, H/s, W/s) cosine similarities, bilinearly
        upsampled (cell centres at the centres of their s x s pixel blocks).
    """
    dense = F.normalize(clip.dense_features(images).float(), dim=1)
    texts = F.normalize(text_embeddings.float().to(dense.device), dim=-1)
    if texts.shape[-1] != dense.shape[1]:
        raise ValueError(f'text_embeddings: size {texts.shape[-1]} is not the dense map\'s '
                         f'{dense.shape[1]}')
    maps = torch.einsum('bdhw,td->bthw', dense, texts)
    return F.interpolate(maps, size=images.shape[-2:], mode='bilinear', align_corners=False)


def pointing_game(response: Tensor, box: Sequence[float]) -> Tuple[bool, float]:
    """Whether a response map peaks on an object, and by how much.

    Args:
        response (Tensor): One text's response over the image, shape (H, W).
        box (Sequence[float]): The object's box ``(x1, y1, x2, y2)`` in pixels.

    Returns:
        tuple[bool, float]: ``hit``, the map's maximum lies inside the box; ``margin``, the
        maximum inside the box minus the maximum outside it (positive on a hit; the whole
        image's maximum counts as "outside" when the box covers it entirely).
    """
    height, width = response.shape
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    inside = torch.zeros(height, width, dtype=torch.bool)
    inside[max(y1, 0):min(y2, height), max(x1, 0):min(x2, width)] = True
    if not inside.any():
        raise ValueError(f'box {tuple(box)} lies outside the {height}x{width} image')
    peak = int(response.flatten().argmax())
    best_in = response[inside].max()
    best_out = response[~inside].max() if (~inside).any() else response.max()
    return bool(inside.flatten()[peak]), float(best_in - best_out)


def draw_response_panels(image: np.ndarray, responses: Dict[str, Tensor], texts: List[str],
                         path: str) -> None:
    """Write a PNG: one row per model, the image then one overlaid panel per text, and a colour
    bar of the row's scale (shared by its panels).

    Args:
        image (np.ndarray): The input, shape (H, W, 3), uint8 RGB.
        responses (dict[str, Tensor]): Row label -> responses of shape (T, H, W).
        texts (list[str]): The T texts (panel titles).
        path (str): The PNG to write.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, cols = len(responses), len(texts) + 1
    figure, axes = plt.subplots(rows, cols, squeeze=False,
                                figsize=(PANEL_INCHES * cols + 0.6, PANEL_INCHES * rows))
    for axes_row, (label, maps) in zip(axes, responses.items()):
        low, high = float(maps.min()), float(maps.max())
        axes_row[0].imshow(image)
        axes_row[0].set_title(label, fontsize=9)
        for axis, text, response in zip(axes_row[1:], texts, maps):
            axis.imshow(image)
            shown = axis.imshow(response.cpu().numpy(), cmap=COLOR_MAP, vmin=low, vmax=high,
                                alpha=OVERLAY_ALPHA)
            axis.set_title(text, fontsize=9)
        for axis in axes_row:
            axis.set_axis_off()
        figure.colorbar(shown, ax=list(axes_row), fraction=0.02, pad=0.01, label='cosine')
    figure.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(figure)
