# Copyright (c) mmclim contributors. All rights reserved.
import json
from pathlib import Path

import pytest
import torch
from mmdet.datasets import CocoDataset

from mmclim.datasets.ov_splits import (OV_COCO_CLASSES, OV_COCO_NOVEL_CLASSES, coco_category_split,
                                       dump_json, lvis_category_split, split_description)
from mmclim.models.roi_heads import load_novel_class_mask

# An LVIS-style fixture: categories listed out of id order, with LVIS frequencies.
LVIS_CATEGORIES = [
    dict(id=5, name='cat_e', frequency='c'),
    dict(id=1, name='cat_a', frequency='f'),
    dict(id=3, name='cat_c', frequency='r'),
    dict(id=2, name='cat_b', frequency='c'),
    dict(id=9, name='cat_i', frequency='r'),
]


def _instances(categories: list) -> dict:
    return dict(images=[dict(id=1, file_name='1.jpg', height=8, width=8)],
                annotations=[dict(id=1, image_id=1, category_id=categories[0]['id'],
                                  bbox=[0, 0, 4, 4], area=16, iscrowd=0)],
                categories=categories)


def _write_split(tmp_path: Path, data: dict, split) -> str:
    path = str(tmp_path / 'split.json')
    dump_json(split_description(data, split, 'fixture'), path)
    return path


def test_lvis_rare_categories_are_novel_in_category_id_order(tmp_path: Path) -> None:
    data = _instances(LVIS_CATEGORIES)
    split_file = _write_split(tmp_path, data, lvis_category_split(data, 'fixture'))
    # Ascending ids 1 (f), 2 (c), 3 (r), 5 (c), 9 (r).
    assert load_novel_class_mask(split_file).tolist() == [False, False, True, False, True]


def test_ov_coco_novel_classes_in_the_label_order_of_ov_coco_classes(tmp_path: Path) -> None:
    categories = [dict(id=index + 1, name=name)
                  for index, name in enumerate(CocoDataset.METAINFO['classes'])]
    data = _instances(categories)
    mask = load_novel_class_mask(_write_split(tmp_path, data, coco_category_split(data, 'coco')))
    expected = [name in OV_COCO_NOVEL_CLASSES for name in OV_COCO_CLASSES]
    assert mask.tolist() == expected
    assert mask.dtype == torch.bool and int(mask.sum()) == 17 and len(mask) == 65


@pytest.mark.parametrize('content,match', [
    ('[1, 2]', "'base_category_ids' is a list of category ids"),
    (json.dumps(dict(base_category_ids=[1, 2])), "'novel_category_ids' is a list"),
    (json.dumps(dict(base_category_ids=[1, 2], novel_category_ids=[2])),
     r'ids \[2\] are both base and novel'),
    (json.dumps(dict(base_category_ids=[1, 1], novel_category_ids=[2])), 'repeats category'),
    ('{', 'not a valid JSON file'),
])
def test_rejects_bad_split_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / 'split.json'
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_novel_class_mask(str(path))
