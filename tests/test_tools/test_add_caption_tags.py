# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/dataset_converters/add_caption_tags.py``, run in-process through ``main(argv)``."""
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO_ROOT

from mmclim.datasets import CocoCaptionPairDataset, class_names, generate_shape_captions
from mmclim.datasets.toy_shapes import COLORS, SHAPES


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    path = REPO_ROOT / 'tools' / 'dataset_converters' / 'add_caption_tags.py'
    spec = importlib.util.spec_from_file_location('add_caption_tags', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Ids out of name order; 'hot dog' shares a word with 'dog'; LVIS-style names and synonyms.
CATEGORIES = [dict(id=5, name='dog'), dict(id=2, name='cat'), dict(id=9, name='hot dog'),
              dict(id=4, name='bus'), dict(id=11, name='bow_(weapon)'),
              dict(id=12, name='aerosol_can', synonyms=['aerosol_can', 'spray_can'])]
# (captions, expected ids), worked by hand.
CASES = {
    1: (['Two DOGS play.', 'a dog'], [5]),  # plural and upper case
    2: (['A catalog of hotdogs'], []),  # no word boundary: neither cat nor dog nor hot dog
    3: (['a hot dog next to a cat'], [2, 5, 9]),  # hot dog contains the word dog
    4: (['three buses'], [4]),  # plural with -es
    5: (['an archer with a bow', 'a spray can'], [11, 12]),  # qualifier dropped; a synonym
    6: (['an empty street'], []),
}


def test_inline_captions_hand_worked(tool: ModuleType, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    captions = tmp_path / 'caps.json'
    images = [dict(id=i, file_name=f'{i}.jpg', captions=caps) for i, (caps, _) in CASES.items()]
    captions.write_text(json.dumps(dict(images=images, info='kept')))
    vocabulary = tmp_path / 'vocabulary.json'
    vocabulary.write_text(json.dumps(CATEGORIES))
    tool.main([str(captions), '--categories', str(vocabulary)])
    out = json.loads((tmp_path / 'caps_tags.json').read_text())
    assert {img['id']: img['pos_category_ids'] for img in out['images']} == {
        i: ids for i, (_, ids) in CASES.items()}
    assert out['categories'] == [dict(id=c['id'], name=c['name']) for c in CATEGORIES]
    assert out['info'] == 'kept' and out['images'][0]['captions'] == CASES[1][0]
    assert '4 of 6 images got at least one tag' in capsys.readouterr().out


def test_coco_captions_and_text_vocabulary(tool: ModuleType, tmp_path: Path) -> None:
    captions = tmp_path / 'coco.json'
    annotations = [dict(id=1, image_id=7, caption='a cat on a sofa'),
                   dict(id=2, image_id=7, caption='a sleeping dog'),
                   dict(id=3, image_id=8, caption='a sofa')]
    captions.write_text(json.dumps(dict(images=[dict(id=7, file_name='7.jpg'),
                                                dict(id=8, file_name='8.jpg')],
                                        annotations=annotations)))
    vocabulary = tmp_path / 'names.txt'
    vocabulary.write_text('sofa\ncat\ndog\n')  # ids 1, 2, 3
    tool.main([str(captions), '--categories', str(vocabulary), '--out', str(tmp_path / 'o.json')])
    out = json.loads((tmp_path / 'o.json').read_text())
    assert [img['pos_category_ids'] for img in out['images']] == [[1, 2, 3], [1]]
    assert out['annotations'] == annotations
    assert out['categories'] == [dict(id=1, name='sofa'), dict(id=2, name='cat'),
                                 dict(id=3, name='dog')]


def test_toy_captions_get_exactly_their_class(tool: ModuleType, tmp_path: Path) -> None:
    ann_file = generate_shape_captions(str(tmp_path), 'caption_train', 24, image_size=32, seed=0)
    instances = tmp_path / 'instances.json'  # the toy categories, as instances_val.json lists them
    instances.write_text(json.dumps(dict(
        images=[], annotations=[],
        categories=[dict(id=i + 1, name=name) for i, name in enumerate(class_names())])))
    tool.main([str(ann_file), '--categories', str(instances)])
    tagged = ann_file.with_name('captions_caption_train_tags.json')
    out = json.loads(tagged.read_text())
    captions = {}
    for ann in out['annotations']:
        captions.setdefault(ann['image_id'], []).append(ann['caption'])
    names = {c['id']: c['name'] for c in out['categories']}
    for img in out['images']:
        # The class of the image, read off its captions' colour and shape words.
        caption_words = set(' '.join(captions[img['id']]).split())
        (color, ) = caption_words & set(COLORS)
        (shape, ) = caption_words & set(SHAPES)
        assert [names[i] for i in img['pos_category_ids']] == [f'{color} {shape}']
    # The tagged file loads with tags.
    dataset = CocoCaptionPairDataset(ann_file=str(tagged), with_tags=True,
                                     data_prefix=dict(img=str(tmp_path / 'caption_train')),
                                     metainfo=dict(classes=tuple(class_names())))
    assert len(dataset) == 24 and all(len(dataset.get_data_info(i)['tags']) == 1
                                      for i in range(24))


def test_bad_inputs_exit_with_the_file(tool: ModuleType, tmp_path: Path) -> None:
    captions = tmp_path / 'caps.json'
    captions.write_text(json.dumps(dict(images=[dict(id=1, file_name='1.jpg')])))
    no_categories = tmp_path / 'inst.json'
    no_categories.write_text(json.dumps(dict(images=[])))
    with pytest.raises(SystemExit, match=r'inst\.json: a JSON object must have a "categories"'):
        tool.main([str(captions), '--categories', str(no_categories)])
    repeated = tmp_path / 'repeated.json'
    repeated.write_text(json.dumps([dict(id=1, name='a'), dict(id=1, name='b')]))
    with pytest.raises(SystemExit, match=r'category ids \[1\] repeat'):
        tool.main([str(captions), '--categories', str(repeated)])
    no_images = tmp_path / 'empty.json'
    no_images.write_text(json.dumps(dict(annotations=[])))
    vocabulary = tmp_path / 'names.txt'
    vocabulary.write_text('cat\n')
    with pytest.raises(SystemExit, match=r'empty\.json: expected an "images" list'):
        tool.main([str(no_images), '--categories', str(vocabulary)])


def test_help(tool: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--help'])
    assert exit_info.value.code == 0
    assert '--categories' in capsys.readouterr().out
