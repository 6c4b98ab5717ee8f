# Copyright (c) mmclim contributors. All rights reserved.
from .weight_ensemble_hook import WeightEnsembleHook

__all__ = ['WeightEnsembleHook']
