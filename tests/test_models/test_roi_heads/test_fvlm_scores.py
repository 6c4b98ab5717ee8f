# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch

from mmclim.models.roi_heads import cosine_logits, fvlm_fuse_scores


def test_fusion_of_two_classes_by_hand() -> None:
    """Class 0 base (VLM weight alpha = 0.5), class 1 novel (beta = 0.75):
    0.25^0.5 * 0.64^0.5 = 0.4 and 0.5^0.25 * 0.125^0.75 = 2^-0.25 * 2^-2.25 = 2^-2.5."""
    det = torch.tensor([[0.25, 0.5], [1.0, 1.0]])
    vlm = torch.tensor([[0.64, 0.125], [0.0, 1.0]])
    fused = fvlm_fuse_scores(det, vlm, torch.tensor([False, True]), base_alpha=0.5,
                             novel_beta=0.75)
    torch.testing.assert_close(fused, torch.tensor([[0.4, 2 ** -2.5], [0.0, 1.0]]))


def test_zero_and_one_weights_select_one_score() -> None:
    det, vlm = torch.rand(5, 3), torch.rand(5, 3)
    novel = torch.tensor([False, True, False])
    torch.testing.assert_close(fvlm_fuse_scores(det, vlm, novel, 0.0, 0.0), det)
    torch.testing.assert_close(fvlm_fuse_scores(det, vlm, novel, 1.0, 1.0), vlm)


def test_cosine_logits_by_hand() -> None:
    """(3, 4) against (1, 0) and (0, 2): cosines 0.6 and 0.8, times the scale."""
    logits = cosine_logits(torch.tensor([[3., 4.]]), torch.tensor([[1., 0.], [0., 2.]]), 75.0)
    torch.testing.assert_close(logits, torch.tensor([[45., 60.]]))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match='one shape'):
        fvlm_fuse_scores(torch.rand(2, 3), torch.rand(2, 4), torch.zeros(3, dtype=torch.bool),
                         0.3, 0.6)
