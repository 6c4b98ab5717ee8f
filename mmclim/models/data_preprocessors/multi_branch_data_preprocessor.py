# Copyright (c) mmclim contributors. All rights reserved.
from mmdet.models.data_preprocessors import MultiBranchDataPreprocessor
from mmdet.registry import MODELS


@MODELS.register_module()
class MultiBranchDetDataPreprocessor(MultiBranchDataPreprocessor):
    """mmdet's ``MultiBranchDataPreprocessor`` that tolerates a branch with no sample.

    In training, each sample of a ``MultiBranch``-packed batch fills only the branches of its
    source (the others are None); mmdet's preprocessor drops the Nones and preprocesses (pads)
    each branch on its own, but a branch left with no sample would reach the wrapped
    ``DetDataPreprocessor`` empty and fail. Here such a branch is left out of the output, and
    the detector (:class:`mmclim.models.detectors.DeticDetector`) gives its losses as zeros. In
    testing the wrapped preprocessor runs as usual.

    Args:
        data_preprocessor (dict): Config of the per-branch ``DetDataPreprocessor``.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        """Preprocess each non-empty branch.

        Args:
            data (dict): ``inputs`` and ``data_samples``, each ``{branch: [per-sample value or
                None]}`` in training.
            training (bool): Training mode. Defaults to False.

        Returns:
            dict: ``inputs`` ``{branch: Tensor (B_b, 3, H_b, W_b)}`` and ``data_samples``
            ``{branch: [B_b samples]}`` for the branches with samples.
        """
        if not training:
            return super().forward(data, training)
        filled = {
            branch for branch, values in data['inputs'].items()
            if any(value is not None for value in values)
        }
        data = {key: {branch: values for branch, values in per_branch.items() if branch in filled}
                for key, per_branch in data.items()}
        if not filled:
            return dict(inputs={}, data_samples={})
        return super().forward(data, training)
