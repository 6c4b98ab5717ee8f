# Copyright (c) mmclim contributors. All rights reserved.
from .exact_resume_hook import ExactResumeHook
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook
from .weight_ensemble_hook import WeightEnsembleHook

__all__ = ['ExactResumeHook', 'NonFiniteLossError', 'NonFiniteLossHook', 'WeightEnsembleHook']
