# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP's concept pool (:mod:`mmclim.datasets.concept_pool`): concepts parsed from
captions by our documented rule, their counts, and the pool file and its sidecar.

The expected concepts are worked out by hand from the rule (the tags are those of TextBlob's
``PatternTagger``, ``textblob==0.20.1``)."""
import json
from importlib.metadata import version
from pathlib import Path
from typing import List, Optional

import pytest

from mmclim.datasets import build_concept_pool, extract_concepts, write_concept_pool
from mmclim.datasets.concept_pool import CONCEPT_RULE
from mmclim.datasets.toy_shapes import CAPTION_TEMPLATES
from mmclim.evaluation.metrics import load_class_names

# (caption, concepts, concepts with adjectives or None when the same)
CAPTIONS = [
    # plural head singularised; a singular head ending in "s" kept ('grass', not 'gras')
    ('Two dogs are playing with a red frisbee on the grass.', ['dog', 'frisbee', 'grass'],
     ['dog', 'red frisbee', 'grass']),
    # compound nouns
    ('The train station has a clock tower.', ['train station', 'clock tower'], None),
    # a plural compound: only its head singularised
    ('Two fire hydrants stand next to a parking meter.', ['fire hydrant', 'parking meter'], None),
    # irregular plurals, and 'buses' is 'bus'
    ('People walking down the sidewalk near buses.', ['person', 'sidewalk', 'bus'], None),
    # proper nouns (NNP) are no concept, and one breaks a run
    ('An elephant walks through the forest with John.', ['elephant', 'forest'], None),
    ('A BMW car next to a dog.', ['car', 'dog'], None),
    # a token with digits (tagged NN) breaks a run; internal hyphens are letters
    ('a toy 4x4 truck', ['toy', 'truck'], None),
    ('An x-ray machine', ['x-ray machine'], None),
    # each concept once, in order of appearance; several adjectives kept
    ('a large black dog and a small white cat near a dog', ['dog', 'cat'],
     ['large black dog', 'small white cat', 'dog']),
    ('', [], None),
    ('  \n ', [], None),
]
# The toy captions (mmclim.datasets.toy_shapes.CAPTION_TEMPLATES) of a yellow square:
# (template, concepts, concepts with adjectives).
GREY_BACKGROUND = ['yellow square', 'grey background']
TOY_CAPTIONS = [
    ('a photo of a {color} {shape}', ['photo', 'square'], ['photo', 'yellow square']),
    ('a {color} {shape}', ['square'], ['yellow square']),
    ('a {shape} painted {color}', ['square'], ['square']),
    ('a {color} {shape} on a grey background', ['square', 'background'], GREY_BACKGROUND),
]
# Captions 1-5; the captions of each concept: dog {1, 2, 4} (twice in 2, counted once),
# cat {3, 4}, grass {1, 5}, park {2}, sofa {3} ('red sofa' with adjectives).
POOL_CAPTIONS = [
    'A dog on the grass.', 'Two dogs and a dog play in a park.', 'A cat on a red sofa.',
    'A cat and a dog.', 'The grass.'
]


@pytest.mark.parametrize('caption,concepts,with_adjectives', CAPTIONS)
def test_extract_concepts(caption: str, concepts: List[str],
                          with_adjectives: Optional[List[str]]) -> None:
    assert extract_concepts(caption) == concepts
    expected = concepts if with_adjectives is None else with_adjectives
    assert extract_concepts(caption, with_adjectives=True) == expected


def test_extract_concepts_of_toy_captions() -> None:
    assert {template for template, _, _ in TOY_CAPTIONS} == set(CAPTION_TEMPLATES)
    for template, concepts, with_adjectives in TOY_CAPTIONS:
        caption = template.format(color='yellow', shape='square')
        assert extract_concepts(caption) == concepts, caption
        assert extract_concepts(caption, with_adjectives=True) == with_adjectives, caption
    assert extract_concepts('a diamond painted yellow') == ['diamond']


def test_tagger_mistakes_the_docstring_names() -> None:
    """The module docstring's examples of the tagger's mistakes hold for the pinned textblob."""
    assert extract_concepts('a man rides a horse') == ['man ride', 'horse']  # 'rides': NNS
    assert extract_concepts('two teddy bears on a couch') == ['teddy', 'couch']  # 'bears': VBZ


def test_extract_concepts_rejects_a_non_string() -> None:
    with pytest.raises(TypeError, match='caption must be a str, got bytes'):
        extract_concepts(b'a dog')


def test_build_concept_pool_counts_captions() -> None:
    pool = build_concept_pool(iter(POOL_CAPTIONS), min_count=1)
    assert pool == [('dog', 3), ('cat', 2), ('grass', 2), ('park', 1), ('sofa', 1)]
    # ties by name; below the threshold dropped
    assert build_concept_pool(POOL_CAPTIONS, min_count=2) == [('dog', 3), ('cat', 2), ('grass', 2)]
    assert build_concept_pool(POOL_CAPTIONS, min_count=3) == [('dog', 3)]
    pool = build_concept_pool(POOL_CAPTIONS, min_count=1, with_adjectives=True)
    assert pool == [('dog', 3), ('cat', 2), ('grass', 2), ('park', 1), ('red sofa', 1)]


def test_build_concept_pool_errors() -> None:
    match = 'no concept reaches min_count=4: 5 concepts were found, the most frequent in 3 '
    with pytest.raises(ValueError, match=match + 'captions'):
        build_concept_pool(POOL_CAPTIONS, min_count=4)
    match = 'no concept reaches min_count=1: 0 concepts were found, the most frequent in 0 '
    with pytest.raises(ValueError, match=match + 'captions'):
        build_concept_pool(['', 'John.'], min_count=1)
    for min_count in (0, -1, 2.0, True):
        # checked before any caption is read: the non-str caption is not reached
        with pytest.raises(ValueError, match=f'min_count must be a positive int, got {min_count}'):
            build_concept_pool([42], min_count=min_count)
    with pytest.raises(TypeError, match=r'captions\[1\] must be a str, got NoneType'):
        build_concept_pool(['a dog', None], min_count=1)


def test_write_concept_pool_round_trip(tmp_path: Path) -> None:
    path = tmp_path / 'pools' / 'nouns.txt'  # the folder is made
    pool = [('fire hydrant', 3), ('dog', 2)]
    sidecar = write_concept_pool(
        str(path), pool, dict(num_captions=5), min_count=2, with_adjectives=False)
    assert sidecar == str(tmp_path / 'pools' / 'nouns.json')
    assert load_class_names(str(path)) == ['fire hydrant', 'dog']
    assert json.loads(Path(sidecar).read_text()) == dict(
        concepts=[['fire hydrant', 3], ['dog', 2]],
        rule=CONCEPT_RULE,
        tagger=f'textblob {version("textblob")}',
        min_count=2,
        with_adjectives=False,
        num_captions=5)


@pytest.mark.parametrize('path,pool,metadata,match', [
    ('nouns.csv', [('dog', 2)], {}, r"path must end in '.txt'"),
    ('nouns.txt', [], {}, 'pool is empty'),
    ('nouns.txt', [('dog', 2)], dict(rule='mine'), r"must not use the keys \['rule'\]"),
    ('nouns.txt', [('traffic_light', 2)], {}, "'traffic_light' would not be read back"),
    ('nouns.txt', [('hot  dog', 2)], {}, "'hot  dog' would not be read back"),
    ('nouns.txt', [('dog', 2), ('dog', 2)], {}, r"pool\[1\] name 'dog' is repeated"),
    ('nouns.txt', [('dog', 2), ('cat', 1)], {}, r"pool\[1\] \('cat'\) has count 1, expected an "
     r'int >= min_count=2'),
])
def test_write_concept_pool_errors(tmp_path: Path, path: str, pool: list, metadata: dict,
                                   match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_concept_pool(str(tmp_path / path), pool, metadata, min_count=2, with_adjectives=False)
    assert not list(tmp_path.iterdir())  # nothing written
