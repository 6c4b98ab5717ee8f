# Copyright (c) mmclim contributors. All rights reserved.
from typing import Dict, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class WeightEnsembleHook(Hook):
    """Evaluate the weight-ensembled model, as the official CLIM code does after each epoch.

    Around every validation and test epoch the model's trainable parameters hold
    ``alpha * trained + (1 - alpha) * original`` (the model's ``ensembled_weights`` context,
    e.g. :meth:`mmclim.models.pretrainers.CLIMCLIP.ensembled_weights`, with its
    ``weight_ensemble`` alpha); training and checkpoints keep the trained weights, so resuming
    is unaffected. Like mmengine's ``EMAHook`` it swaps weights in place: the same model object
    runs the evaluation.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._context = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _enter(self, runner) -> None:
        model = self._model(runner)
        if not hasattr(model, 'ensembled_weights'):
            raise TypeError(f'{type(self).__name__}: the model {type(model).__name__} has no '
                            'ensembled_weights(); use it with CLIMCLIP')
        self._context = model.ensembled_weights()
        self._context.__enter__()

    def _exit(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)

    def before_val_epoch(self, runner) -> None:
        """Swap the ensembled weights in."""
        self._enter(runner)

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Restore the trained weights."""
        self._exit()

    def before_test_epoch(self, runner) -> None:
        """Swap the ensembled weights in."""
        self._enter(runner)

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Restore the trained weights."""
        self._exit()
