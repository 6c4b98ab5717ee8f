# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from vocabulary_files import write_vocabulary

from mmclim.models.roi_heads import DeticBBoxHead
from mmclim.structures import save_class_embeddings


def _head(tmp_path: Path, **kwargs) -> DeticBBoxHead:
    embeddings, split_file = write_vocabulary(tmp_path, 3, 2, novel_labels=[1])
    # Hand-set class embeddings: class 0 along x, class 1 along y, class 2 diagonal.
    rows = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    save_class_embeddings(embeddings, rows, 'mmclim-tiny-vit12')
    args = dict(num_classes=3, class_embeddings=embeddings, split_file=split_file,
                in_channels=4, roi_feat_size=1, with_avg_pool=True, num_shared_fcs=0,
                num_reg_fcs=1, fc_out_channels=8, reg_class_agnostic=True, logit_scale=25.0,
                cls_bias=-20.0)
    args.update(kwargs)
    return DeticBBoxHead(**args)


def test_logits_class_weights_and_embedding(tmp_path: Path) -> None:
    head = _head(tmp_path)
    # The novel class 1 is masked out of the loss; base classes weigh 1.
    assert head.loss_cls.class_weight.tolist() == [1.0, 0.0, 1.0]
    assert _head(tmp_path, novel_class_weight=1.0).loss_cls.class_weight.tolist() == [1, 1, 1]
    with torch.no_grad():
        head.classifier.projection.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        head.classifier.projection.bias.zero_()
    x = torch.tensor([[3.0, 0, 5, 5], [0, 2.0, 1, 1]]).view(2, 4, 1, 1)
    # Region 0 projects to (3, 0): cosines 1, 0, 1/sqrt(2); region 1 to (0, 2): 0, 1, 1/sqrt(2).
    r = 2 ** -0.5
    expected = 25.0 * torch.tensor([[1.0, 0.0, r, 0.0], [0.0, 1.0, r, 0.0]])
    head.eval()
    cls_score, bbox_pred = head(x)
    assert torch.allclose(cls_score, expected, atol=1e-5) and bbox_pred.shape == (2, 4)
    head.train()
    assert torch.allclose(head(x)[0], expected - 20.0, atol=1e-5)  # the bias trains only
    assert torch.equal(head.vision_to_language(x), torch.tensor([[3.0, 0.0], [0.0, 2.0]]))


def test_refine_keeps_ground_truth(tmp_path: Path) -> None:
    head = _head(tmp_path)
    rois = torch.tensor([[0, 0, 0, 10, 10], [0, 5, 5, 20, 20], [0, 1, 1, 4, 4.0]])
    bbox_results = dict(rois=rois, cls_score=torch.zeros(3, 4), bbox_pred=torch.zeros(3, 4),
                        bbox_targets=(torch.tensor([0, 2, 3]), None, None, None))
    sampling = [InstanceData(pos_is_gt=torch.tensor([1, 0], dtype=torch.uint8))]
    refined = head.refine_bboxes(sampling, bbox_results, [dict(img_shape=(32, 32))])
    # Zero deltas: every RoI, the ground truth included, comes back unchanged (mmdet's
    # BBoxHead would drop the first).
    assert torch.equal(refined[0].bboxes, rois[:, 1:])


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='reg_class_agnostic: expected True'):
        _head(tmp_path, reg_class_agnostic=False)
    with pytest.raises(ValueError, match='class_weight: derived from split_file'):
        _head(tmp_path, loss_cls=dict(type='DeticSigmoidClassLoss', class_weight=[1, 1, 1]))
    with pytest.raises(ValueError, match=r'num_classes: 4, but .* lists 3'):
        _head(tmp_path, num_classes=4)
