# Copyright (c) mmclim contributors. All rights reserved.
"""Panoptic ground truth (things and stuff) through the region classification path."""
import json
from pathlib import Path

import numpy as np
import torch
from mmdet.registry import DATASETS, MODELS
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from PIL import Image

CLASSES = ('person', 'sky')  # one thing, one stuff class


def _panoptic_fixture(root: Path) -> Path:
    """One 32x48 image: a person (id 1), a crowd of persons (id 2) and sky (id 3)."""
    (root / 'images').mkdir()
    (root / 'panoptic').mkdir()
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(root / 'images' / '1.jpg')
    ids = np.full((32, 48), 3, np.int64)
    ids[8:24, 4:20] = 1
    ids[0:8, 40:48] = 2
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(root / 'panoptic' / '1.png')
    segments = [
        dict(id=1, category_id=1, iscrowd=0, bbox=[4, 8, 16, 16], area=256),
        dict(id=2, category_id=1, iscrowd=1, bbox=[40, 0, 8, 8], area=64),
        dict(id=3, category_id=200, iscrowd=0, bbox=[0, 0, 48, 32], area=32 * 48 - 320),
    ]
    ann = dict(images=[dict(id=1, file_name='1.jpg', height=32, width=48)],
               annotations=[dict(image_id=1, file_name='1.png', segments_info=segments)],
               categories=[dict(id=1, name='person', isthing=1),
                           dict(id=200, name='sky', isthing=0)])
    ann_file = root / 'panoptic.json'
    ann_file.write_text(json.dumps(ann))
    return ann_file


def test_panoptic_regions_are_classified_with_thing_stuff_split(tmp_path: Path) -> None:
    init_default_scope('mmdet')
    ann_file = _panoptic_fixture(tmp_path)
    dataset = DATASETS.build(dict(
        type='CocoPanopticDataset', ann_file=str(ann_file), test_mode=True,
        metainfo=dict(classes=CLASSES, thing_classes=CLASSES[:1], stuff_classes=CLASSES[1:]),
        data_prefix=dict(img=str(tmp_path / 'images'), seg=str(tmp_path / 'panoptic')),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadPanopticRegions', num_thing_classes=1),
            dict(type='Resize', scale=(64, 64), keep_ratio=True),
            dict(type='Pad', size=(64, 64)),
            dict(type='PackDetInputs',
                 meta_keys=('img_id', 'img_shape', 'ori_shape', 'scale_factor')),
        ]))
    packed = dataset[0]
    gt = packed['data_samples'].gt_instances
    assert gt.labels.tolist() == [0, 1]  # the person and the sky; the crowd is ignored
    assert packed['data_samples'].ignored_instances.labels.tolist() == [0]
    masks = gt.masks.to_tensor(torch.bool, 'cpu')
    assert masks.shape == (2, 64, 64)
    # the person's box is the extent of its mask, resized with the image
    w_scale, h_scale = packed['data_samples'].scale_factor
    expected = torch.tensor([4 * w_scale, 8 * h_scale, 20 * w_scale, 24 * h_scale])
    torch.testing.assert_close(gt.bboxes.tensor[0], expected)
    assert masks[1].sum() > masks[0].sum()  # the sky fills most of the image

    model = MODELS.build(dict(type='CLIMCLIP', clip=dict(type='OpenCLIPRegion',
                                                         model_name='mmclim-toy-vit')))
    model.class_embeddings = torch.nn.functional.normalize(torch.randn(2, 64), dim=1)
    model.eval()
    with torch.no_grad():
        out = model.predict(packed['inputs'][None].float(), [packed['data_samples']])
    assert out[0].pred_region_scores.shape == (2, 2)
    evaluator = Evaluator(dict(type='RegionClassificationMetric', topk=(1, )))
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(data_samples=out)
    metrics = evaluator.evaluate(1)
    assert {'region_cls/things_top1', 'region_cls/stuff_top1'} <= set(metrics)
    assert metrics['region_cls/top1'] == (metrics['region_cls/things_top1'] +
                                          metrics['region_cls/stuff_top1']) / 2
