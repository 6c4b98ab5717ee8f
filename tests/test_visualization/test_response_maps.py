# Copyright (c) mmclim contributors. All rights reserved.
"""Text response maps: the geometry of the map on the image, the pointing game, the mosaic."""
import numpy as np
import pytest
import torch
from torch import Tensor

from mmclim.visualization import compose_mosaic, normalize_images, pointing_game, text_response_maps

STRIDE = 8


class _KnownMap:
    """Stands in for OpenCLIPRegion: a 2-D dense map that is (1, 0) on the object's cells and
    (0, 1) elsewhere, so the response to the text (1, 0) is 1 on the object and 0 off it."""

    def __init__(self, object_cells: Tensor) -> None:
        self.object_cells = object_cells  # (h, w) bool

    def dense_features(self, images: Tensor) -> Tensor:
        on = self.object_cells.float()
        return torch.stack([on, 1 - on])[None].expand(images.shape[0], -1, -1, -1)


def test_the_response_lies_on_the_cells_of_the_object() -> None:
    cells = torch.zeros(4, 4, dtype=torch.bool)
    cells[1:3, 2:4] = True  # pixels x 16..32, y 8..24 of a 32 x 32 image
    images = torch.zeros(1, 3, 4 * STRIDE, 4 * STRIDE)
    texts = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # the object's text, the background's
    maps = text_response_maps(_KnownMap(cells), images, texts)
    assert maps.shape == (1, 2, 32, 32)
    # Cell centres carry the cells' cosines; bilinear in between.
    assert maps[0, 0, 12, 20] == 1 and maps[0, 0, 4, 4] == 0 and maps[0, 1, 4, 4] == 1
    hit, margin = pointing_game(maps[0, 0], (16, 8, 32, 24))
    assert hit and margin == pytest.approx(1 - maps[0, 0][:, :16].max().item())
    assert not pointing_game(maps[0, 1], (16, 8, 32, 24))[0]


def test_pointing_game_by_hand() -> None:
    response = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.9, 0.4], [0.0, 0.5, 0.2]])
    assert pointing_game(response, (1, 1, 2, 2)) == (True, pytest.approx(0.9 - 0.5))
    assert pointing_game(response, (0, 0, 1, 3)) == (False, pytest.approx(0.3 - 0.9))
    assert pointing_game(response, (0, 0, 3, 3)) == (True, pytest.approx(0.0))
    with pytest.raises(ValueError, match='lies outside the 3x3 image'):
        pointing_game(response, (5, 5, 9, 9))


def test_a_mosaic_puts_each_image_in_its_cell() -> None:
    images = [np.full((10, 20, 3), value, np.uint8) for value in (10, 20, 30, 40)]
    mosaic = compose_mosaic(images, (2, 2), 8)
    assert mosaic.shape == (16, 16, 3)
    assert [int(mosaic[y, x, 0]) for y, x in ((0, 0), (0, 8), (8, 0), (15, 15))] == \
        [10, 20, 30, 40]
    with pytest.raises(ValueError, match='--mosaic: a 2x2 grid takes 4 images, got 3'):
        compose_mosaic(images[:3], (2, 2), 8)


def test_images_are_normalised_with_the_clip_statistics() -> None:
    white = normalize_images(np.full((1, 2, 2, 3), 255, np.uint8))
    expected = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711])
    assert torch.allclose(white[0, :, 0, 0], expected)
