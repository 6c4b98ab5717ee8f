# Copyright (c) mmclim contributors. All rights reserved.
"""A toy linear regression for runner tests: model, dataset and the config of a run.

The model can be told to return a NaN loss term at chosen iterations (on chosen ranks), carries
an optional ``ballast`` buffer that makes its checkpoints large, so that saving one is most of a
training iteration (for the kill tests), and with ``noise`` draws from every random generator a
training step may use (Python's, numpy's and torch's, in the model and in the data pipeline) and
keeps a per-rank queue of past outputs that its loss reads (as the caption losses do).
"""
import builtins
import math
import os
import random
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmclim.models.utils import FeatureQueue

IN_FEATURES = 4
NUM_SAMPLES = 16
NAN_TERM = 'loss_aux'  # the loss term that turns NaN at ToyRegressor.nan_iters
QUEUE_SIZE = 8  # outputs queued by ToyRegressor(noise=True): two batches
DIE_EXIT_CODE = 9  # the exit status of a process killed by die_writing


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
        noise (bool): In training, add noise drawn from Python's, numpy's and torch's generators
            to the outputs, and a loss term ``loss_queue`` reading a ``FeatureQueue`` of the last
            ``QUEUE_SIZE`` outputs. Defaults to False.
    """

    def __init__(self, ballast: int = 0, nan_iters: Sequence[int] = (),
                 nan_ranks: Optional[Sequence[int]] = None, noise: bool = False) -> None:
        super().__init__()
        self.noise = noise
        self.queue = FeatureQueue(QUEUE_SIZE, name='outputs') if noise else None
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
        if self.noise:
            outputs = outputs + 0.1 * torch.randn_like(outputs) + float(
                np.random.normal(0, 0.1)) + random.gauss(0, 0.1)
        losses = dict(loss_fit=((outputs - targets)**2).mean())
        if self.queue is not None:
            ids = torch.arange(len(outputs))
            queued, _ = self.queue.extend(outputs[:, None], ids)
            losses.update(loss_queue=0.01 * queued.var())
            self.queue.push(outputs[:, None], ids)
        loss_aux = 0.01 * outputs.abs().mean()
        iteration = MessageHub.get_current_instance().get_info('iter', 0) + 1
        if iteration in self.nan_iters and (self.nan_ranks is None
                                            or get_rank() in self.nan_ranks):
            loss_aux = loss_aux * math.nan
        return dict(losses, **{NAN_TERM: loss_aux})


@DATASETS.register_module(force=True)
class ToyRegressionData(Dataset):
    """``NUM_SAMPLES`` fixed samples of a random linear function.

    Args:
        noise (bool): Add noise drawn from Python's, numpy's and torch's generators to each
            sample's inputs. Defaults to False.
    """

    metainfo: Dict[str, Any] = dict()

    def __init__(self, noise: bool = False) -> None:
        self.noise = noise
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(NUM_SAMPLES, IN_FEATURES, generator=generator)
        self.targets = self.inputs @ torch.arange(1.0, IN_FEATURES + 1) + 0.5

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        inputs = self.inputs[index]
        if self.noise:
            inputs = inputs + 0.1 * torch.randn(IN_FEATURES) + float(
                np.random.uniform(-0.1, 0.1)) + random.uniform(-0.1, 0.1)
        return dict(inputs=inputs, data_samples=self.targets[index])


@METRICS.register_module(force=True)
class ToyMSE(BaseMetric):
    """Mean squared error of the predictions."""

    def process(self, data_batch: Any, data_samples: Sequence[Tensor]) -> None:
        predictions, targets = (torch.stack(list(values)) for values in (
            data_samples, data_batch['data_samples']))
        self.results.append(((predictions - targets)**2).mean().item())

    def compute_metrics(self, results: List[float]) -> Dict[str, float]:
        return dict(mse=sum(results) / len(results))


class _DyingFile:
    """A file whose first write writes half of the data, then kills the process."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: Any) -> int:
        data = data if isinstance(data, str) else memoryview(data).cast('B')
        self.file.write(data[:len(data) // 2])
        self.file.flush()
        os.fsync(self.file.fileno())
        os._exit(DIE_EXIT_CODE)

    def __enter__(self) -> '_DyingFile':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def die_writing(name: str, occurrence: int) -> None:
    """Make this process exit (``DIE_EXIT_CODE``, no clean-up) half-way through the
    ``occurrence``-th write of a file whose name contains ``name`` (checksum files aside): a kill
    inside a save. For a forked process only: it replaces ``builtins.open`` for good."""
    real_open = builtins.open
    opened_for_writing = []

    def dying_open(file: Any, mode: str = 'r', *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, mode, *args, **kwargs)
        base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ''
        if set(mode) & set('wxa') and name in base and not base.endswith('.sha256'):
            opened_for_writing.append(base)
            if len(opened_for_writing) == occurrence:
                return _DyingFile(opened)
        return opened

    builtins.open = dying_open


def toy_config(work_dir: str, experiment_name: str, max_iters: int = 4, interval: int = 1,
               max_keep_ckpts: int = -1, lr: float = 0.01, noise: bool = False,
               val_interval: Optional[int] = None, **model: Any) -> Config:
    """The config of an iteration-based toy run saving a checkpoint every ``interval``.

    Args:
        work_dir (str): The work dir.
        experiment_name (str): Unique per run in one process (names the logger, message hub).
        max_iters (int): Iterations. Defaults to 4.
        interval (int): Checkpoint interval. Defaults to 1.
        max_keep_ckpts (int): As ``CheckpointHook``'s. Defaults to -1.
        lr (float): SGD learning rate (momentum 0.9). Defaults to 0.01.
        noise (bool): The model and the training data draw noise (``ToyRegressor``'s and
            ``ToyRegressionData``'s ``noise``). Defaults to False.
        val_interval (int, optional): Validate every so many iterations. Defaults to None (no
            validation).
        **model: ``ToyRegressor`` arguments.

    Returns:
        Config: For ``Runner.from_cfg``.
    """
    loader = dict(dataset=dict(type='ToyRegressionData'), batch_size=4, num_workers=0,
                  sampler=dict(type='InfiniteSampler', shuffle=True))
    test_loader = dict(loader, sampler=dict(type='DefaultSampler', shuffle=False))
    train_cfg = dict(by_epoch=False, max_iters=max_iters)
    validation = {} if val_interval is None else dict(
        val_dataloader=test_loader, val_evaluator=dict(type='ToyMSE'), val_cfg=dict())
    if val_interval is not None:
        train_cfg.update(val_interval=val_interval)
    return Config(dict(
        work_dir=work_dir,
        experiment_name=experiment_name,
        model=dict(type='ToyRegressor', noise=noise, **model),
        train_dataloader=dict(loader, dataset=dict(type='ToyRegressionData', noise=noise)),
        test_dataloader=test_loader,
        test_evaluator=dict(type='ToyMSE'),
        test_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        train_cfg=train_cfg,
        log_processor=dict(by_epoch=False),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=interval,
                            max_keep_ckpts=max_keep_ckpts)),
        randomness=dict(seed=0),
        log_level='INFO',
        **validation))
