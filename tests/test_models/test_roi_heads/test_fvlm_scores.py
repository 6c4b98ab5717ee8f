# Copyright (c) mmclim contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F

from mmclim.models.backbones import OpenCLIPRegion
from mmclim.models.roi_heads import fvlm_fuse_scores, vlm_region_scores

DET = torch.tensor([[0.5, 0.2, 0.1], [0.04, 0.6, 0.3]])
VLM = torch.tensor([[0.1, 0.4, 0.5], [0.9, 0.05, 0.05]])
NOVEL = torch.tensor([False, True, False])


def test_fusion_uses_alpha_for_base_and_beta_for_novel_classes() -> None:
    fused = fvlm_fuse_scores(DET, VLM, NOVEL, base_alpha=0.35, novel_beta=0.65)
    expected = torch.tensor([
        [0.5**0.65 * 0.1**0.35, 0.2**0.35 * 0.4**0.65, 0.1**0.65 * 0.5**0.35],
        [0.04**0.65 * 0.9**0.35, 0.6**0.35 * 0.05**0.65, 0.3**0.65 * 0.05**0.35],
    ])
    torch.testing.assert_close(fused, expected)


def test_fusion_weights_at_their_ends() -> None:
    """alpha = 0 keeps the detector's base scores, beta = 1 takes the VLM's novel scores."""
    fused = fvlm_fuse_scores(DET, VLM, NOVEL, base_alpha=0.0, novel_beta=1.0)
    torch.testing.assert_close(fused[:, ~NOVEL], DET[:, ~NOVEL])
    torch.testing.assert_close(fused[:, NOVEL], VLM[:, NOVEL])
    # A zero score stays zero whatever the weight, except where its exponent is 0.
    zeros = fvlm_fuse_scores(torch.zeros(1, 3), VLM[:1], NOVEL, 0.35, 0.65)
    assert torch.equal(zeros, torch.zeros(1, 3))


def test_fusion_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r'got \(2, 3\), \(2, 2\) and \(3,\)'):
        fvlm_fuse_scores(DET, VLM[:, :2], NOVEL)
    with pytest.raises(ValueError, match=r'novel_mask of shape \(C,\)'):
        fvlm_fuse_scores(DET, VLM, NOVEL[:2])


def test_vlm_scores_classify_open_clip_region_features() -> None:
    """Pooling the dense map matches OpenCLIPRegion.region_features (what CLIM trains)."""
    torch.manual_seed(0)
    vlm = OpenCLIPRegion('mmclim-toy-vit').eval()
    images = torch.randn(2, 3, 64, 96)
    boxes = [torch.tensor([[0., 0., 96., 64.], [10.5, 3., 40., 33.]]),
             torch.tensor([[8., 8., 24., 56.]])]
    texts = F.normalize(torch.randn(5, vlm.embed_dim), dim=-1)
    with torch.no_grad():
        scores = vlm_region_scores(vlm.dense_features(images), boxes, vlm.stride, texts, 0.05)
        regions = vlm.region_features(images, boxes, normalize=True)
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores, (regions @ texts.T / 0.05).softmax(dim=-1))
    torch.testing.assert_close(scores.sum(dim=-1), torch.ones(3))


def test_vlm_scores_of_no_boxes() -> None:
    scores = vlm_region_scores(torch.randn(2, 8, 4, 4), [torch.zeros(0, 4)] * 2, 16,
                               torch.randn(3, 8))
    assert scores.shape == (0, 3)
