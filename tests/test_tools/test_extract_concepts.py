# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/dataset_converters/extract_concepts.py`` in-process, on tiny COCO Captions and CC3M
files (no images): the pools and counts worked out by hand from the rule of
:mod:`mmclim.datasets.concept_pool`."""
import json
from pathlib import Path

import pytest
from conftest import load_tool

from mmclim.evaluation.metrics import load_class_names

TOOL = load_tool('dataset_converters/extract_concepts.py')

# Captions 1-5 of three images; the captions of each concept: dog {1, 2, 4}, cat {3, 4, 5},
# sofa {3, 5} ('red sofa' 3 with adjectives), grass {1}, park {2}. Image 3's caption repeated
# exactly is one caption, as CocoCaptionPairDataset reads it.
COCO_CAPTIONS = {
    1: ['A dog on the grass.', 'Two dogs play in a park.'],
    2: ['A cat on a red sofa.', 'A black cat near the dogs.'],
    3: ['A cat on a sofa.', 'A cat on a sofa.'],
}
# Captions 1-3: dog {1}, grass {1}, cat {2, 3}, sofa {2, 3}; image 2's captions a single string.
CC3M_CAPTIONS = {1: ['A dog on the grass.', 'A cat on a sofa.'], 2: 'A cat on a red sofa.'}


def _coco_file(tmp_path: Path) -> Path:
    images = [dict(id=img_id, file_name=f'{img_id}.jpg') for img_id in COCO_CAPTIONS]
    annotations = [
        dict(id=len(images) * img_id + index, image_id=img_id, caption=caption)
        for img_id, captions in COCO_CAPTIONS.items() for index, caption in enumerate(captions)
    ]
    path = tmp_path / 'captions.json'
    path.write_text(json.dumps(dict(images=images, annotations=annotations)))
    return path


def test_coco_pool(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'concepts' / 'nouns.txt'
    TOOL.main([str(_coco_file(tmp_path)), '--out', str(out), '--min-count', '2'])
    assert load_class_names(str(out)) == ['cat', 'dog', 'sofa']
    sidecar = json.loads((tmp_path / 'concepts' / 'nouns.json').read_text())
    assert sidecar['concepts'] == [['cat', 3], ['dog', 3], ['sofa', 2]]
    assert sidecar['min_count'] == 2 and sidecar['with_adjectives'] is False
    assert sidecar['num_captions'] == 5 and sidecar['num_concepts_found'] == 5
    assert sidecar['format'] == 'coco'
    assert 'nouns.txt: 3 of the 5 concepts found in the 5 captions appear in >= 2 of them' \
        in capsys.readouterr().out


def test_coco_pool_with_adjectives(tmp_path: Path) -> None:
    """Adjectives split 'cat' (3, 5) from 'black cat' (4) and 'sofa' (5) from 'red sofa' (3)."""
    args = [str(_coco_file(tmp_path)), '--out', str(tmp_path / 'nouns.txt'), '--min-count', '2']
    TOOL.main(args + ['--with-adjectives'])
    sidecar = json.loads((tmp_path / 'nouns.json').read_text())
    assert sidecar['concepts'] == [['dog', 3], ['cat', 2]]
    assert sidecar['with_adjectives'] is True and sidecar['num_concepts_found'] == 7


def test_cc3m_pool(tmp_path: Path) -> None:
    path = tmp_path / 'cc3m.json'
    images = [
        dict(id=img_id, file_name=f'{img_id}.jpg', captions=captions)
        for img_id, captions in CC3M_CAPTIONS.items()
    ]
    path.write_text(json.dumps(dict(images=images)))
    out = tmp_path / 'nouns.txt'
    TOOL.main([str(path), '--format', 'cc3m', '--out', str(out), '--min-count', '2'])
    assert load_class_names(str(out)) == ['cat', 'sofa']
    sidecar = json.loads((tmp_path / 'nouns.json').read_text())
    assert sidecar['concepts'] == [['cat', 2], ['sofa', 2]] and sidecar['num_captions'] == 3


def test_no_concept_reaches_min_count(tmp_path: Path) -> None:
    out = tmp_path / 'nouns.txt'
    match = 'no concept reaches min_count=4: 5 concepts were found, the most frequent in 3 '
    with pytest.raises(SystemExit, match=match + 'captions'):
        TOOL.main([str(_coco_file(tmp_path)), '--out', str(out), '--min-count', '4'])
    assert not out.exists()
    assert TOOL.parse_args(['captions.json', '--out', 'nouns.txt']).min_count == 100
