# Copyright (c) mmclim contributors. All rights reserved.
"""The one owner of CLIM's mosaic composition: which grids a step forms, how many, from what.

Both paths that form mosaics take their grids from a :class:`MosaicPolicy`:

- the training-step path (:class:`mmclim.models.pretrainers.CLIMCLIP` with
  :func:`mmclim.models.utils.batch_mosaic`) asks :meth:`MosaicPolicy.draw` for the grids of one
  per-GPU batch;
- the data-pipeline path (:class:`mmclim.datasets.transforms.MosaicPseudoRegion`) asks
  :meth:`MosaicPolicy.sample_grid` for the grid of one mosaic and writes it to the sample.

Two compositions:

``'fixed'`` (the official CLIM fine-tuning of CLIP, ``src/training/clim.py``,
``CLIM.split_a_batch``): every group holds one mosaic of each grid of ``grid_choices``; a batch
forms as many whole groups as fit (``batch_size // images per group``) and the rest of the batch
stays single images. With the official 32 images per GPU and grids 2x2, 3x3, 4x4 (29 images):
one group, 29 pseudo regions and 3 single images.

``'random'`` (the paper's Detic setting, Table 2b "random"): grids are drawn uniformly from the
choices that still fit into ``round(batch_size * mosaic_fraction)`` images, until none fits; the
rest of the batch stays single.

A policy built with ``batch_size`` checks, when it is built, that every grid of
``grid_choices`` can be drawn for that batch, and raises a ``ValueError`` naming the fields
otherwise; :meth:`draw` then refuses any other batch size (a short last batch: set the
dataloader's ``drop_last=True``).
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .mosaic_grid import DEFAULT_GRID_CHOICES, Grid, to_grid_choices

COMPOSITIONS = ('fixed', 'random')


def grid_size(grid: Grid) -> int:
    """Images (cells) of a grid ``(rows, cols)``."""
    return grid[0] * grid[1]


class MosaicDraw(NamedTuple):
    """The mosaics of one batch.

    Attributes:
        grids (tuple[tuple[int, int], ...]): The grids in order; images ``0 .. n_0 - 1`` of the
            (shuffled) batch fill the first, the next ``n_1`` the second, and so on.
        num_mosaic_images (int): ``sum(rows * cols)`` over ``grids``.
        num_single_images (int): Images of the batch left out of every mosaic.
    """
    grids: Tuple[Grid, ...]
    num_mosaic_images: int
    num_single_images: int


class MosaicPolicy:
    """Grid choices, composition and budget of CLIM's mosaics, checked against the batch size.

    Args:
        grid_choices (Sequence[int | Sequence[int]]): Grids, ``n`` for ``n x n`` or
            ``(rows, cols)``, with distinct cell counts. Defaults to 2x2, 3x3 and 4x4 (the paper,
            Table 2b).
        composition (str): ``'fixed'`` (one of each grid per group, as many groups as fit: the
            official CLIP fine-tuning) or ``'random'`` (random draws within the budget: the
            paper's Detic setting). Defaults to ``'fixed'``.
        batch_size (int, optional): Images per GPU the policy is used with. Given, the policy is
            checked now and :meth:`draw` accepts that size only. None checks each batch as it
            comes. Defaults to None.
        mosaic_fraction (float, optional): ``'random'`` only: share of the batch that may go into
            mosaics, the budget being ``round(batch_size * mosaic_fraction)``; must be None for
            ``'fixed'`` (which uses every whole group that fits). Defaults to None (0.5 for
            ``'random'``, half mosaicked and half single as the paper's Detic).
        field (str): How errors name this policy in the config. Defaults to ``'mosaic'``.
    """

    DEFAULT_RANDOM_FRACTION = 0.5

    def __init__(self,
                 grid_choices: Sequence[Union[int, Sequence[int]]] = DEFAULT_GRID_CHOICES,
                 composition: str = 'fixed',
                 batch_size: Optional[int] = None,
                 mosaic_fraction: Optional[float] = None,
                 field: str = 'mosaic') -> None:
        self.field = field
        self.grid_choices = to_grid_choices(grid_choices, f'{field}.grid_choices')
        if composition not in COMPOSITIONS:
            raise ValueError(f'{field}.composition: expected one of {COMPOSITIONS}, got '
                             f'{composition!r}')
        self.composition = composition
        if composition == 'fixed' and mosaic_fraction is not None:
            raise ValueError(f"{field}.mosaic_fraction: the 'fixed' composition mosaics every "
                             f'whole group that fits; expected None, got {mosaic_fraction}')
        if composition == 'random':
            mosaic_fraction = (self.DEFAULT_RANDOM_FRACTION
                               if mosaic_fraction is None else mosaic_fraction)
            # 0 would mosaic nothing (a CLIM run with no pseudo region); a bool is a mistake.
            if isinstance(mosaic_fraction, bool) or not (
                    isinstance(mosaic_fraction, (int, float)) and 0 < mosaic_fraction <= 1):
                raise ValueError(f'{field}.mosaic_fraction: expected a number in (0, 1], the '
                                 f'share of the batch mosaicked, got {mosaic_fraction!r}')
        self.mosaic_fraction = mosaic_fraction
        if batch_size is not None and (isinstance(batch_size, bool) or not (
                isinstance(batch_size, (int, np.integer)) and batch_size >= 1)):
            raise ValueError(f'{field}.batch_size: expected a positive int, got {batch_size!r}')
        self.batch_size = None if batch_size is None else int(batch_size)
        if self.batch_size is not None:
            self._check_batch(self.batch_size)

    @property
    def group_size(self) -> int:
        """Images of one group of the ``'fixed'`` composition: one mosaic of each grid."""
        return sum(grid_size(grid) for grid in self.grid_choices)

    def budget(self, num_images: int) -> int:
        """Most images of a batch of ``num_images`` that go into mosaics."""
        if self.composition == 'fixed':
            return num_images // self.group_size * self.group_size
        return round(num_images * self.mosaic_fraction)

    def _check_batch(self, num_images: int) -> None:
        """Raise unless every grid of ``grid_choices`` can be drawn for ``num_images`` images."""
        grids = [f'{rows}x{cols}' for rows, cols in self.grid_choices]
        if self.composition == 'fixed':
            if num_images < self.group_size:
                raise ValueError(
                    f"{self.field}: the 'fixed' composition needs one mosaic of each of "
                    f'grid_choices {grids} ({self.group_size} images) per GPU, but the batch has '
                    f'{num_images} images ({self.field}.batch_size / train_dataloader.batch_size)'
                    f'; raise the batch size to at least {self.group_size}, or remove grids')
            return
        budget = self.budget(num_images)
        never = [f'{rows}x{cols}' for rows, cols in self.grid_choices
                 if grid_size((rows, cols)) > budget]
        if never:
            raise ValueError(
                f'{self.field}: the grids {never} of grid_choices {grids} can never be drawn: a '
                f'batch of {num_images} images ({self.field}.batch_size / '
                f'train_dataloader.batch_size) with mosaic_fraction={self.mosaic_fraction} '
                f'mosaics at most {budget} images; raise the batch size or mosaic_fraction, or '
                'remove those grids')

    def draw(self, num_images: int, generator: Optional[torch.Generator] = None) -> MosaicDraw:
        """The mosaics of one batch.

        Args:
            num_images (int): Images in the batch.
            generator (torch.Generator, optional): Randomness of the ``'random'`` composition.
                Defaults to torch's global generator.

        Returns:
            MosaicDraw: The grids, in the order consecutive images fill them.
        """
        if self.batch_size is not None and num_images != self.batch_size:
            raise ValueError(
                f'{self.field}: got a batch of {num_images} images, but the policy was built and '
                f'checked for {self.field}.batch_size={self.batch_size}; make them agree, and set '
                'train_dataloader.drop_last=True so that no short last batch reaches the model')
        self._check_batch(num_images)
        if self.composition == 'fixed':
            grids = self.grid_choices * (num_images // self.group_size)
        else:
            grids = self._draw_random(self.budget(num_images), generator)
        used = sum(grid_size(grid) for grid in grids)
        return MosaicDraw(tuple(grids), used, num_images - used)

    def _draw_random(self, budget: int, generator: Optional[torch.Generator]) -> List[Grid]:
        drawn: List[Grid] = []
        while True:
            fitting = [grid for grid in self.grid_choices if grid_size(grid) <= budget]
            if not fitting:
                return drawn
            grid = fitting[int(torch.randint(len(fitting), (1, ), generator=generator))]
            drawn.append(grid)
            budget -= grid_size(grid)

    def sample_grid(self, rng: Optional[np.random.Generator] = None) -> Grid:
        """The grid of one pipeline mosaic, uniform over ``grid_choices``.

        Args:
            rng (np.random.Generator, optional): Randomness. Defaults to numpy's global state
                (which mmengine seeds per dataloader worker).

        Returns:
            tuple[int, int]: ``(rows, cols)``.
        """
        index = (np.random.randint(len(self.grid_choices)) if rng is None else
                 int(rng.integers(len(self.grid_choices))))
        return self.grid_choices[index]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(grid_choices={self.grid_choices}, '
                f'composition={self.composition!r}, batch_size={self.batch_size}, '
                f'mosaic_fraction={self.mosaic_fraction})')
