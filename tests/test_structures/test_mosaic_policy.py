# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch

from mmclim.structures import MosaicPolicy


def test_fixed_composition_is_the_official_split() -> None:
    """32 images per GPU, grids 2/3/4: one 2x2, one 3x3 and one 4x4 (29 pseudo regions), 3
    singles, as CLIM.split_a_batch (num_groups = 32 // 29 = 1, num_single = 32 % 29 = 3)."""
    policy = MosaicPolicy([2, 3, 4], 'fixed', batch_size=32)
    draw = policy.draw(32)
    assert draw.grids == ((2, 2), (3, 3), (4, 4))
    assert (draw.num_mosaic_images, draw.num_single_images) == (29, 3)
    # 64 images: 2 groups (58 images), 6 singles.
    draw = MosaicPolicy([2, 3, 4], 'fixed').draw(64)
    assert draw.grids == ((2, 2), (3, 3), (4, 4)) * 2 and draw.num_single_images == 6


@pytest.mark.parametrize('batch_size', [16, 28])
def test_fixed_composition_that_cannot_fit_is_a_build_error(batch_size: int) -> None:
    with pytest.raises(ValueError, match=r"model.mosaic: the 'fixed' composition needs .* \(29 "
                       rf'images\) per GPU, but the batch has {batch_size} images'):
        MosaicPolicy([2, 3, 4], 'fixed', batch_size=batch_size, field='model.mosaic')


def test_random_grid_that_can_never_be_drawn_is_a_build_error() -> None:
    """16 per GPU with half mosaicked: a budget of 8 images never holds a 3x3 or a 4x4."""
    with pytest.raises(ValueError, match=r"the grids \['3x3', '4x4'\] .* can never be drawn.*"
                       r'at most 8 images'):
        MosaicPolicy([2, 3, 4], 'random', batch_size=16, mosaic_fraction=0.5)
    MosaicPolicy([2, 3, 4], 'random', batch_size=32, mosaic_fraction=0.5)  # 16 >= 16: fits


def test_random_draws_fill_the_budget_and_reach_every_grid() -> None:
    policy = MosaicPolicy([2, 3, 4], 'random', batch_size=64, mosaic_fraction=0.5)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        draw = policy.draw(64, generator=generator)
        # Drawing stops when no grid fits the 32-image budget any more: fewer than 4 left.
        assert 32 - 4 < draw.num_mosaic_images <= 32
        assert draw.num_mosaic_images + draw.num_single_images == 64
        seen.update(draw.grids)
    assert seen == {(2, 2), (3, 3), (4, 4)}


def test_a_batch_of_another_size_is_refused_with_the_fields_named() -> None:
    policy = MosaicPolicy([2, 3, 4], 'fixed', batch_size=32, field='model.mosaic')
    with pytest.raises(ValueError, match='batch of 2 images.*model.mosaic.batch_size=32.*'
                       'drop_last=True'):
        policy.draw(2)


@pytest.mark.parametrize('kwargs, message', [
    (dict(grid_choices='abc'), 'grid_choices'),
    (dict(grid_choices=[]), 'grid_choices must be a non-empty list'),
    (dict(composition='mixed'), "composition: expected one of \\('fixed', 'random'\\)"),
    (dict(composition='fixed', mosaic_fraction=0.5), 'mosaic_fraction: the \'fixed\''),
    (dict(composition='random', mosaic_fraction=0.0), r'mosaic_fraction: expected a number in'),
    (dict(batch_size=0), 'batch_size: expected a positive int'),
])
def test_bad_fields_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MosaicPolicy(**kwargs)


def test_pipeline_grids_are_uniform_over_the_choices() -> None:
    policy = MosaicPolicy([2, 3, 4])
    import numpy as np
    rng = np.random.default_rng(0)
    counts = {grid: 0 for grid in policy.grid_choices}
    for _ in range(3000):
        counts[policy.sample_grid(rng)] += 1
    assert all(900 < count < 1100 for count in counts.values()), counts


@pytest.mark.parametrize('kwargs, message', [
    # A bool is an int to Python: True would be a 1x1 grid, a fraction of 1 or a batch of 1.
    (dict(grid_choices=[True, 2]), r'grid_choices must be a positive int n .*got True'),
    (dict(grid_choices=[(2, False)]), r'grid_choices must be a positive int n .*got \(2, False\)'),
    # A set has no order and a dict is not a list of grids.
    (dict(grid_choices={2, 3}), r'grid_choices must be a non-empty list of grids, got \{2, 3\}'),
    (dict(composition='random', mosaic_fraction=True), r'mosaic_fraction: expected a number in'),
    (dict(batch_size=True), 'batch_size: expected a positive int'),
])
def test_bools_and_unordered_grids_are_refused_naming_the_field(kwargs: dict,
                                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MosaicPolicy(**kwargs, field='model.mosaic')
