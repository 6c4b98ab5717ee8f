# Copyright (c) mmclim contributors. All rights reserved.
"""A toy linear regression for runner tests: model, dataset and the config of a run.

The model can be told to return a NaN loss term at chosen iterations (on chosen ranks), and
carries an optional ``ballast`` buffer that makes its checkpoints large, so that saving one is
most of a training iteration (for the kill tests).
"""
import contextlib
import logging
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS, DefaultScope
from mmengine.visualization import Visualizer
from torch import Tensor, nn
from torch.utils.data import Dataset

IN_FEATURES = 4
NUM_SAMPLES = 16
NAN_TERM = 'loss_aux'  # the loss term that turns NaN at ToyRegressor.nan_iters


@MODELS.register_module(force=True)
class ToyRegressor(BaseModel):
    """``y = w.x + b`` fitted with two loss terms, ``loss_fit`` and ``loss_aux``.

    Args:
        ballast (int): Size of a float32 buffer that only enlarges the checkpoints.
            Defaults to 0.
        nan_iters (Sequence[int]): 1-based training iterations at which ``loss_aux`` is NaN.
            Defaults to ().
        nan_ranks (Sequence[int], optional): Ranks on which it is; None for all. Defaults to
            None.
    """

    def __init__(self, ballast: int = 0, nan_iters: Sequence[int] = (),
                 nan_ranks: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.linear = nn.Linear(IN_FEATURES, 1)
        self.register_buffer('ballast', torch.zeros(ballast))
        self.nan_iters = set(nan_iters)
        self.nan_ranks = None if nan_ranks is None else set(nan_ranks)

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = 'tensor') -> Any:
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        outputs = self.linear(inputs).squeeze(-1)
        if mode != 'loss':
            return outputs
        targets = torch.stack(data_samples) if isinstance(data_samples, list) else data_samples
        loss_aux = 0.01 * outputs.abs().mean()
        iteration = MessageHub.get_current_instance().get_info('iter', 0) + 1
        if iteration in self.nan_iters and (self.nan_ranks is None
                                            or get_rank() in self.nan_ranks):
            loss_aux = loss_aux * math.nan
        return dict(loss_fit=((outputs - targets)**2).mean(), **{NAN_TERM: loss_aux})


@DATASETS.register_module(force=True)
class ToyRegressionData(Dataset):
    """``NUM_SAMPLES`` fixed samples of a random linear function."""

    metainfo: Dict[str, Any] = dict()

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(NUM_SAMPLES, IN_FEATURES, generator=generator)
        self.targets = self.inputs @ torch.arange(1.0, IN_FEATURES + 1) + 0.5

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        return dict(inputs=self.inputs[index], data_samples=self.targets[index])


@METRICS.register_module(force=True)
class ToyMSE(BaseMetric):
    """Mean squared error of the predictions."""

    def process(self, data_batch: Any, data_samples: Sequence[Tensor]) -> None:
        predictions, targets = (torch.stack(list(values)) for values in (
            data_samples, data_batch['data_samples']))
        self.results.append(((predictions - targets)**2).mean().item())

    def compute_metrics(self, results: List[float]) -> Dict[str, float]:
        return dict(mse=sum(results) / len(results))


def single_threaded_after_fork() -> None:
    """Call first in a forked child: torch's CPU ops in one thread.

    The pip wheels use GNU OpenMP, whose thread pool does not survive ``fork``: once the parent
    has run a parallel region (any earlier test in the same pytest worker), a forked child's
    next parallel region waits forever for threads that were not copied. One thread never
    enters the pool.
    """
    torch.set_num_threads(1)


@contextlib.contextmanager
def isolated_runner_globals() -> Iterator[None]:
    """Forget the mmengine global instances that runners built inside create.

    A runner makes its default scope, message hub, logger and visualizer the current ones; left
    in place, the ``'mmengine'`` default scope of a toy run would make later tests build mmdet
    models from the wrong registry.
    """
    classes = (DefaultScope, MessageHub, MMLogger, Visualizer)
    before = {cls: set(cls._instance_dict) for cls in classes}
    try:
        yield
    finally:
        for cls in classes:
            for name in set(cls._instance_dict) - before[cls]:
                instance = cls._instance_dict.pop(name)
                if isinstance(instance, logging.Logger):
                    for handler in list(instance.handlers):
                        handler.close()
                        instance.removeHandler(handler)


def toy_config(work_dir: str, experiment_name: str, max_iters: int = 4, interval: int = 1,
               max_keep_ckpts: int = -1, lr: float = 0.01, **model: Any) -> Config:
    """The config of an iteration-based toy run saving a checkpoint every ``interval``.

    Args:
        work_dir (str): The work dir.
        experiment_name (str): Unique per run in one process (names the logger, message hub).
        max_iters (int): Iterations. Defaults to 4.
        interval (int): Checkpoint interval. Defaults to 1.
        max_keep_ckpts (int): As ``CheckpointHook``'s. Defaults to -1.
        lr (float): SGD learning rate (momentum 0.9). Defaults to 0.01.
        **model: ``ToyRegressor`` arguments.

    Returns:
        Config: For ``Runner.from_cfg``.
    """
    loader = dict(dataset=dict(type='ToyRegressionData'), batch_size=4, num_workers=0,
                  sampler=dict(type='InfiniteSampler', shuffle=True))
    return Config(dict(
        work_dir=work_dir,
        experiment_name=experiment_name,
        model=dict(type='ToyRegressor', **model),
        train_dataloader=loader,
        test_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        test_evaluator=dict(type='ToyMSE'),
        test_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        log_processor=dict(by_epoch=False),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=interval,
                            max_keep_ckpts=max_keep_ckpts)),
        randomness=dict(seed=0),
        log_level='INFO'))
