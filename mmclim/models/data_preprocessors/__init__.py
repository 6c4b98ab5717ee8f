# Copyright (c) mmclim contributors. All rights reserved.
from .multi_branch_data_preprocessor import MultiBranchDetDataPreprocessor

__all__ = ['MultiBranchDetDataPreprocessor']
