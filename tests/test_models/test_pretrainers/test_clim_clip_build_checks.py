# Copyright (c) mmclim contributors. All rights reserved.
"""Mosaic mistakes in the shipped toy CLIM config, written as a user would
(``--cfg-options``), are refused when the model is built, naming the fields."""
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmclim.models.backbones import OpenCLIPRegion

TOY_CONFIG = (Path(__file__).resolve().parents[3] / 'configs' / 'clim' /
              'clim_toy-vit_toy-shapes.py')
# mmclim-toy-vit: patch (stride) 8; the config's grids are 2x2, 3x3 and 4x4.


@pytest.fixture(scope='module')
def toy_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The toy config as shipped, its baseline checkpoint replaced by random weights."""
    cfg = Config.fromfile(str(TOY_CONFIG))
    checkpoint = tmp_path_factory.mktemp('clip') / 'toy.pt'
    torch.manual_seed(0)
    torch.save(OpenCLIPRegion(cfg.model.clip.model_name).clip.state_dict(), checkpoint)
    cfg.merge_from_dict({'model.clip.pretrained': str(checkpoint),
                         'model.class_embeddings': None})
    return cfg


def _build(cfg: Config, options: dict) -> torch.nn.Module:
    cfg = Config(cfg.to_dict())
    cfg.merge_from_dict(options)  # as tools/train.py --cfg-options
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('options, message', [
    ({'model.mosaic.grid_choices': 'abc'},
     r"model\.mosaic\.grid_choices must be a non-empty list of grids, got 'abc'"),
    ({'model.mosaic.grid_choices': [True, 2]},
     r'model\.mosaic\.grid_choices must be a positive int n or a pair .*got True'),
    ({'model.mosaic.composition': 'random', 'model.mosaic.mosaic_fraction': 0.0},
     r'model\.mosaic\.mosaic_fraction: expected a number in \(0, 1\]'),
    ({'model.mosaic.composition': 'random', 'model.mosaic.mosaic_fraction': True},
     r'model\.mosaic\.mosaic_fraction: expected a number in \(0, 1\]'),
    ({'model.canvas_size': True}, r'canvas_size: expected None or a positive int, got True'),
    ({'model.canvas_size': 8},
     r"model\.canvas_size: 8 pixels give the 4x4 grid .* cells of 2x2 pixels, 0\.25x0\.25 cells "
     r".* or remove \['2x2', '3x3', '4x4'\] from model\.mosaic\.grid_choices"),
])
def test_a_mosaic_mistake_is_refused_at_build_naming_the_field(toy_cfg: Config, options: dict,
                                                               message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _build(toy_cfg, options)


def test_a_canvas_of_one_feature_per_cell_is_refused_naming_both_fields(toy_cfg: Config) -> None:
    """canvas_size=32: a 4x4 cell is 8 x 8 pixels, a single feature of the stride-8 tower (and a
    3x3 cell 10 or 11 pixels, 1.2 features); 4 cells of 2 * 8 pixels need 64."""
    with pytest.raises(ValueError, match=(
            r'model\.canvas_size: 32 pixels give the 4x4 grid of model\.mosaic\.grid_choices '
            r'\[\(2, 2\), \(3, 3\), \(4, 4\)\] cells of 8x8 pixels, 1x1 cells of the dense map '
            r'of model\.clip \(mmclim-toy-vit, stride 8\); a pseudo region needs at least 2x2: '
            r"set model\.canvas_size to at least 64, or remove \['3x3', '4x4'\] from "
            r'model\.mosaic\.grid_choices')):
        _build(toy_cfg, {'model.canvas_size': 32})


def test_the_smallest_canvas_is_twice_the_stride_per_cell_of_the_finest_grid(
        toy_cfg: Config) -> None:
    """4x4 cells on 63 pixels have edges 0, 16, 32, 47, 63: one is 15 < 2 * 8 wide. On 64 every
    cell is 16 = 2 * 8."""
    with pytest.raises(ValueError, match=r'4x4 grid .* cells of 15x15 pixels'):
        _build(toy_cfg, {'model.canvas_size': 63})
    model = _build(toy_cfg, {'model.canvas_size': 64})
    assert model.canvas_size == 64
