# Copyright (c) mmclim contributors. All rights reserved.
"""The OV-COCO / OV-LVIS split definitions and the pure conversion functions of ``ov_splits``."""
import copy
import json
from pathlib import Path

import pytest
from mmdet.datasets import CocoDataset

from mmclim.datasets.ov_splits import (LVIS_IMAGE_COUNT_FIELD, LVIS_INSTANCE_COUNT_FIELD,
                                       OV_COCO_BASE_CLASSES, OV_COCO_CLASSES, OV_COCO_NOVEL_CLASSES,
                                       CategorySplit, annotated_image_ids, category_names,
                                       coco_category_split, count_annotations, load_annotation_file,
                                       lvis_category_split, ov_lvis_train, subset_instances)
from mmclim.structures import read_split_file, split_record, write_split_file

COCO_2017_CLASSES = CocoDataset.METAINFO['classes']
NUM_BASE, NUM_NOVEL, NUM_UNUSED = 48, 17, 15  # OV-RCNN's split of the 80 COCO classes


def _lvis() -> dict:
    """An LVIS-like file: frequent 1, rare 2, common 5, rare 7; three images."""
    categories = [dict(id=cat_id, name=name, frequency=frequency, image_count=99,
                       instance_count=99)
                  for cat_id, name, frequency in ((1, 'apple', 'f'), (2, 'banjo', 'r'),
                                                  (5, 'cab', 'c'), (7, 'dalmatian', 'r'))]
    images = [dict(id=10, neg_category_ids=[2, 5], not_exhaustive_category_ids=[7]),
              dict(id=11, neg_category_ids=[], not_exhaustive_category_ids=[1, 2]),
              dict(id=12, neg_category_ids=[7], not_exhaustive_category_ids=[])]
    annotations = [dict(id=ann_id, image_id=image_id, category_id=cat_id)
                   for ann_id, image_id, cat_id in ((100, 10, 1), (101, 10, 2), (102, 11, 1),
                                                    (103, 11, 5), (104, 12, 7))]
    return dict(info=dict(version='test'), images=images, annotations=annotations,
                categories=categories)


def _coco(names=COCO_2017_CLASSES) -> dict:
    """A COCO-like file with the given category names, ids 2, 4, 6, ..."""
    categories = [dict(id=2 * (index + 1), name=name) for index, name in enumerate(names)]
    return dict(images=[], annotations=[], categories=categories)


def test_ov_coco_class_lists() -> None:
    assert len(set(OV_COCO_BASE_CLASSES)) == len(OV_COCO_BASE_CLASSES) == NUM_BASE
    assert len(set(OV_COCO_NOVEL_CLASSES)) == len(OV_COCO_NOVEL_CLASSES) == NUM_NOVEL
    assert not set(OV_COCO_BASE_CLASSES) & set(OV_COCO_NOVEL_CLASSES)
    assert set(OV_COCO_BASE_CLASSES) | set(OV_COCO_NOVEL_CLASSES) <= set(COCO_2017_CLASSES)
    assert len(set(COCO_2017_CLASSES) - set(OV_COCO_CLASSES)) == NUM_UNUSED
    # All three lists follow COCO's category order.
    for names in (OV_COCO_BASE_CLASSES, OV_COCO_NOVEL_CLASSES, OV_COCO_CLASSES):
        assert list(names) == sorted(names, key=COCO_2017_CLASSES.index)
    assert set(OV_COCO_CLASSES) == set(OV_COCO_BASE_CLASSES) | set(OV_COCO_NOVEL_CLASSES)


def test_coco_category_split_by_name() -> None:
    data = _coco()
    split = coco_category_split(data, 'coco.json')
    names = {category['id']: category['name'] for category in data['categories']}
    assert [names[cat_id] for cat_id in split.base_ids] == list(OV_COCO_BASE_CLASSES)
    assert [names[cat_id] for cat_id in split.novel_ids] == list(OV_COCO_NOVEL_CLASSES)
    assert split.ids == set(split.base_ids) | set(split.novel_ids)


def test_coco_category_split_errors() -> None:
    renamed = [{'tv': 'tvmonitor'}.get(name, name) for name in COCO_2017_CLASSES if name != 'cat']
    with pytest.raises(ValueError, match=r"val\.json: the categories lack the class names "
                       r"\['tv', 'cat'\]"):
        coco_category_split(_coco(renamed), 'val.json')
    with pytest.raises(ValueError, match=r"several categories are named each of \['bus'\]"):
        coco_category_split(_coco(COCO_2017_CLASSES + ('bus', )), 'val.json')
    with pytest.raises(ValueError, match=r"\['cat'\] are both base and novel"):
        coco_category_split(_coco(), 'val.json', base_classes=['cat'], novel_classes=['cat'])
    with pytest.raises(ValueError, match=r"x\.json: not a COCO/LVIS instances file: the fields "
                       r"\['annotations'\]"):
        coco_category_split(dict(images=[], categories=[]), 'x.json')


def test_lvis_category_split_from_frequency() -> None:
    data = _lvis()
    assert lvis_category_split(data, 'lvis.json') == CategorySplit((1, 5), (2, 7))
    data['categories'].reverse()
    assert lvis_category_split(data, 'lvis.json') == CategorySplit((1, 5), (2, 7))


def test_lvis_category_split_errors() -> None:
    data = _lvis()
    del data['categories'][1]['frequency']
    with pytest.raises(ValueError, match=r"lvis\.json: categories\[1\] \(id 2\) has no "
                       "'frequency' field: not an LVIS"):
        lvis_category_split(data, 'lvis.json')
    data['categories'][1]['frequency'] = 'rare'
    with pytest.raises(ValueError, match="frequency is 'rare', expected one of"):
        lvis_category_split(data, 'lvis.json')
    data = _lvis()
    data['annotations'][0]['category_id'] = 6
    with pytest.raises(ValueError, match=r'lvis\.json: annotations have the category_id values '
                       r'\[6\], which are not ids'):
        lvis_category_split(data, 'lvis.json')


def test_subset_instances_keeps_ids_and_leaves_input() -> None:
    data = _lvis()
    original = copy.deepcopy(data)
    out = subset_instances(data, annotation_category_ids=[1], category_ids=[1, 7],
                           image_ids=annotated_image_ids(data, [1]))
    assert data == original
    assert [ann['id'] for ann in out['annotations']] == [100, 102]
    assert [image['id'] for image in out['images']] == [10, 11]
    assert [category['id'] for category in out['categories']] == [1, 7]
    assert out['info'] == data['info']
    every_image = subset_instances(data, [7], [7])
    assert [image['id'] for image in every_image['images']] == [10, 11, 12]
    assert count_annotations(every_image, [7]) == len(every_image['annotations']) == 1
    data['categories'].reverse()
    out = subset_instances(data, [], [7, 1, 5])
    assert [category['id'] for category in out['categories']] == [1, 5, 7]  # ascending ids


def test_ov_lvis_train_drops_every_novel_label() -> None:
    data = _lvis()
    original = copy.deepcopy(data)
    split = lvis_category_split(data, 'lvis.json')
    out = ov_lvis_train(data, split)
    assert data == original
    assert [image['id'] for image in out['images']] == [10, 11, 12]
    assert [ann['id'] for ann in out['annotations']] == [100, 102, 103]
    assert [category['id'] for category in out['categories']] == [1, 2, 5, 7]
    assert [category['frequency'] for category in out['categories']] == ['f', 'r', 'c', 'r']
    assert [image['neg_category_ids'] for image in out['images']] == [[5], [], []]
    assert [image['not_exhaustive_category_ids'] for image in out['images']] == [[], [1], []]
    counts = [(category[LVIS_IMAGE_COUNT_FIELD], category[LVIS_INSTANCE_COUNT_FIELD])
              for category in out['categories']]
    assert counts == [(2, 2), (0, 0), (1, 1), (0, 0)]


def _write_split(tmp_path: Path, data: dict, split: CategorySplit) -> str:
    """The split file of ``data``, as the converters write it."""
    path = str(tmp_path / 'split.json')
    write_split_file(path, split_record(category_names(data), split.base_ids, split.novel_ids,
                                        'fixture'))
    return path


def test_split_file_round_trip(tmp_path: Path) -> None:
    data = _lvis()
    split = read_split_file(_write_split(tmp_path, data, lvis_category_split(data, 'lvis.json')))
    assert split.base_ids == (1, 5) and split.base_classes == ('apple', 'cab')
    assert split.novel_ids == (2, 7) and split.novel_classes == ('banjo', 'dalmatian')
    # Labels follow the ascending ids 1 (f), 2 (r), 5 (c), 7 (r).
    assert split.novel_mask().tolist() == [False, True, False, True]


def test_lvis_categories_out_of_id_order_give_the_mask_in_id_order(tmp_path: Path) -> None:
    categories = [dict(id=5, name='cat_e', frequency='c'), dict(id=1, name='cat_a', frequency='f'),
                  dict(id=3, name='cat_c', frequency='r'), dict(id=2, name='cat_b', frequency='c'),
                  dict(id=9, name='cat_i', frequency='r')]
    data = dict(images=[], annotations=[], categories=categories)
    split_file = _write_split(tmp_path, data, lvis_category_split(data, 'fixture'))
    # Ascending ids 1 (f), 2 (c), 3 (r), 5 (c), 9 (r).
    assert read_split_file(split_file).novel_mask().tolist() == [False, False, True, False, True]


def test_ov_coco_novel_mask_in_the_label_order_of_ov_coco_classes(tmp_path: Path) -> None:
    data = _coco()
    mask = read_split_file(_write_split(tmp_path, data, coco_category_split(data, 'coco')))
    mask = mask.novel_mask()
    assert mask.tolist() == [name in OV_COCO_NOVEL_CLASSES for name in OV_COCO_CLASSES]
    assert int(mask.sum()) == NUM_NOVEL and len(mask) == NUM_BASE + NUM_NOVEL


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
    with pytest.raises(ValueError, match=f'{path}: .*{match}'):
        read_split_file(str(path))


def test_load_annotation_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / 'bad.json'
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match=r'bad\.json: not a valid JSON file'):
        load_annotation_file(str(bad))
    listed = tmp_path / 'list.json'
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r'list\.json: expected a JSON object .* got a list'):
        load_annotation_file(str(listed))
