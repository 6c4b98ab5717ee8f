# Copyright (c) mmclim contributors. All rights reserved.
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from mmengine.logging import MMLogger
from PIL import Image

from mmclim.datasets import CC3MCaptionDataset, CocoCaptionPairDataset, generate_shape_captions


def _write_images(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)


@pytest.fixture
def coco_captions(tmp_path: Path) -> Path:
    _write_images(tmp_path / 'imgs', ['1.png', '2.png', '3.png'])  # 4.png is missing
    images = [dict(id=i, file_name=f'{i}.png', height=8, width=8) for i in range(1, 6)]
    annotations = [
        dict(id=1, image_id=1, caption='a cat'), dict(id=2, image_id=1, caption=' a small cat '),
        dict(id=3, image_id=2, caption='a dog'),
        dict(id=4, image_id=3, caption='   '),  # 3: only an empty caption
        dict(id=5, image_id=4, caption='a bird'),  # 4: image file missing
    ]  # 5: no caption at all, no file either
    ann_file = tmp_path / 'captions.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations)))
    return ann_file


def test_coco_captions_good_entries(coco_captions: Path, tmp_path: Path) -> None:
    prefix = dict(img=str(tmp_path / 'imgs'))
    dataset = CocoCaptionPairDataset(ann_file=str(coco_captions), data_prefix=prefix)
    assert len(dataset) == 2
    first = dataset.get_data_info(0)
    assert first['captions'] == ['a cat', 'a small cat'] and first['img_id'] == 1
    assert first['img_path'] == str(tmp_path / 'imgs' / '1.png') and first['height'] == 8
    assert dataset.bad_entries == {'entries without a caption': 2, 'missing image files': 1}


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__()
        self.records: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_bad_entries_are_reported_with_ids(coco_captions: Path, tmp_path: Path) -> None:
    prefix = dict(img=str(tmp_path / 'imgs'))
    handler = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        CocoCaptionPairDataset(ann_file=str(coco_captions), data_prefix=prefix)
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in handler.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    logged = warnings[0]
    assert 'skipped (on_bad_entry=skip)' in logged
    assert '2 entries without a caption (first ids: [3, 5])' in logged
    assert '1 missing image files (first ids: [4])' in logged
    with pytest.raises(ValueError, match=r'missing image files \(first ids: \[4\]\)'):
        CocoCaptionPairDataset(ann_file=str(coco_captions), on_bad_entry='raise',
                               data_prefix=prefix)


def test_config_errors_name_the_field(coco_captions: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='on_bad_entry must be one of'):
        CocoCaptionPairDataset(ann_file=str(coco_captions), on_bad_entry='ignore')
    with pytest.raises(FileNotFoundError, match='nope.json does not exist'):
        CocoCaptionPairDataset(ann_file=str(tmp_path / 'nope.json'))
    wrong = tmp_path / 'wrong.json'
    wrong.write_text(json.dumps(dict(images=[])))
    with pytest.raises(KeyError, match='no "annotations" list'):
        CocoCaptionPairDataset(ann_file=str(wrong))
    with pytest.raises(ValueError, match='no usable entry'):
        CC3MCaptionDataset(ann_file=str(wrong))


def test_cc3m_style_json(tmp_path: Path) -> None:
    _write_images(tmp_path, ['a.jpg', 'b.jpg'])
    ann_file = tmp_path / 'cc3m.json'
    ann_file.write_text(json.dumps(dict(images=[
        dict(id='a', file_name='a.jpg', captions=['first', 'second']),
        dict(id='b', file_name='b.jpg', captions='only one'),
        dict(id='c', file_name='c.jpg', captions=[]),
    ])))
    dataset = CC3MCaptionDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)))
    assert [dataset.get_data_info(i)['captions'] for i in range(len(dataset))] == [
        ['first', 'second'], ['only one']]
    assert dataset.bad_entries == {'entries without a caption': 1}
    ann_file.write_text(json.dumps(dict(images=[dict(file_name='a.jpg')])))
    with pytest.raises(KeyError, match=r"images\[0\] lacks \['id'\]"):
        CC3MCaptionDataset(ann_file=str(ann_file))


def test_generated_toy_captions_load(tmp_path: Path) -> None:
    ann_file = generate_shape_captions(str(tmp_path), 'caption_train', 6, image_size=32, seed=1)
    prefix = dict(img=str(tmp_path / 'caption_train'))
    dataset = CocoCaptionPairDataset(ann_file=str(ann_file), data_prefix=prefix)
    assert len(dataset) == 6 and not dataset.bad_entries
    for i in range(6):
        captions = dataset.get_data_info(i)['captions']
        assert len(captions) == 2 and all(len(c.split()) >= 2 for c in captions)


# Detic-style tagged captions: category ids out of name order and not contiguous.
TAG_CATEGORIES = [dict(id=7, name='dog'), dict(id=3, name='cat'), dict(id=12, name='bird')]
TAG_CLASSES = ('bird', 'cat', 'dog', 'horse')  # labels: bird 0, cat 1, dog 2, horse 3


def _tagged_images(tmp_path: Path) -> list:
    _write_images(tmp_path, ['1.png', '2.png', '3.png'])
    return [
        dict(id=1, file_name='1.png', captions=['a dog and a cat', 'two dogs'],
             pos_category_ids=[7, 3, 7]),  # dog twice: one tag
        dict(id=2, file_name='2.png', captions=['a lawn'], pos_category_ids=[]),
        dict(id=3, file_name='3.png', captions=['a bird'], pos_category_ids=[12]),
    ]


def test_tags_are_labels_of_the_classes(tmp_path: Path) -> None:
    ann_file = tmp_path / 'tags.json'
    ann_file.write_text(json.dumps(dict(images=_tagged_images(tmp_path),
                                        categories=TAG_CATEGORIES)))
    dataset = CC3MCaptionDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)),
                                 with_tags=True, metainfo=dict(classes=TAG_CLASSES))
    # dog -> 2, cat -> 1 (sorted, once); bird -> 0; no tag -> [].
    assert [dataset.get_data_info(i)['tags'] for i in range(3)] == [[1, 2], [], [0]]
    assert dataset.cat2label == {7: 2, 3: 1, 12: 0}
    plain = CC3MCaptionDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)))
    assert 'tags' not in plain.get_data_info(0)


def test_coco_captions_inline_with_tags(tmp_path: Path) -> None:
    """Detic's captions_train2017_tags_allcaps.json: captions on the images, no annotations."""
    images = _tagged_images(tmp_path)
    for img in images:
        img.update(height=8, width=8)
    ann_file = tmp_path / 'allcaps.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=[],
                                        categories=TAG_CATEGORIES)))
    dataset = CocoCaptionPairDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)),
                                     with_tags=True, metainfo=dict(classes=TAG_CLASSES))
    first = dataset.get_data_info(0)
    assert first['captions'] == ['a dog and a cat', 'two dogs'] and first['tags'] == [1, 2]
    assert first['height'] == 8 and dataset.get_data_info(2)['tags'] == [0]
    # Inline and annotation captions together; no "annotations" key at all also works.
    images[1]['captions'] = 'a lawn'
    annotations = [dict(id=1, image_id=2, caption='grass'),
                   dict(id=2, image_id=2, caption='a lawn')]
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations)))
    dataset = CocoCaptionPairDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)))
    assert dataset.get_data_info(1)['captions'] == ['a lawn', 'grass']  # the repeat dropped
    ann_file.write_text(json.dumps(dict(images=images)))
    dataset = CocoCaptionPairDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)))
    assert [dataset.get_data_info(i)['img_id'] for i in range(3)] == [1, 2, 3]


def test_tags_of_categories_outside_the_classes_are_dropped(tmp_path: Path) -> None:
    # Detic's COCO tag file names all 80 classes; OV-COCO trains 65: the others' tags go.
    ann_file = tmp_path / 'tags.json'
    ann_file.write_text(json.dumps(dict(images=_tagged_images(tmp_path),
                                        categories=TAG_CATEGORIES)))
    dataset = CC3MCaptionDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)),
                                 with_tags=True, metainfo=dict(classes=('cat', 'dog')))
    assert [dataset.get_data_info(i)['tags'] for i in range(3)] == [[0, 1], [], []]
    assert dataset.categories_outside_classes == {12: 'bird'}


def test_tag_errors_name_the_file(tmp_path: Path) -> None:
    images = _tagged_images(tmp_path)
    ann_file = tmp_path / 'tags.json'

    def build(data: dict, classes=TAG_CLASSES) -> CC3MCaptionDataset:
        ann_file.write_text(json.dumps(data))
        return CC3MCaptionDataset(ann_file=str(ann_file), data_prefix=dict(img=str(tmp_path)),
                                  with_tags=True, metainfo=dict(classes=classes))

    with pytest.raises(KeyError, match=r'needs a "categories" list .*tags\.json'):
        build(dict(images=images))
    with pytest.raises(ValueError, match=r'no category of .*tags\.json is one of the 1 '):
        build(dict(images=images, categories=TAG_CATEGORIES), classes=('horse', ))
    with pytest.raises(ValueError, match=r'metainfo=dict\(classes=...\)'):
        build(dict(images=images, categories=TAG_CATEGORIES), classes=())
    unknown = [dict(images[0], pos_category_ids=[7, 99])]
    with pytest.raises(ValueError, match=r'image 1 of .*tags\.json has "pos_category_ids" \[99\]'):
        build(dict(images=unknown, categories=TAG_CATEGORIES))
    untagged = [{k: v for k, v in img.items() if k != 'pos_category_ids'} for img in images]
    with pytest.raises(KeyError, match=r'no image of .*tags\.json has "pos_category_ids"'):
        build(dict(images=untagged, categories=TAG_CATEGORIES))
