# Copyright (c) mmclim contributors. All rights reserved.
from .multi_source_sampler import ExactMultiSourceSampler

__all__ = ['ExactMultiSourceSampler']
