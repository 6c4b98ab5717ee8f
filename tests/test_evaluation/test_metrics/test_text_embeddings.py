# Copyright (c) mmclim contributors. All rights reserved.
"""Class names, prompt templates and class text embeddings for zero-shot classifiers."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmclim.evaluation.metrics import (BACKGROUND_CLASS_NAME, ENSEMBLE_TEMPLATES, PROMPT_TEMPLATES,
                                       build_prompts, compute_text_embeddings, get_prompt_templates,
                                       load_class_names)
from mmclim.models.backbones import OpenCLIPRegion

EMBED_DIM = 32  # embed_dim of mmclim-tiny-vit
ATOL = 1e-5
LVIS_CATEGORIES = [
    dict(id=12, name='traffic_light', synonyms=['traffic_light', 'stoplight']),
    dict(id=3, name='cat', synonyms=['cat']),
    dict(id=7, name='hot_dog_(food)', synonyms=['hot_dog']),
]


@pytest.fixture(scope='module')
def model() -> OpenCLIPRegion:
    torch.manual_seed(0)
    return OpenCLIPRegion('mmclim-tiny-vit').eval()


def _write_json(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_json_class_names_in_id_order_with_spaces(tmp_path: Path) -> None:
    path = _write_json(tmp_path / 'lvis.json', dict(images=[], categories=LVIS_CATEGORIES))
    assert load_class_names(path) == ['cat', 'hot dog (food)', 'traffic light']


def test_txt_class_names_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / 'names.txt'
    path.write_text('person\n\n  traffic_light \nteddy bear\n\n')
    assert load_class_names(str(path)) == ['person', 'traffic light', 'teddy bear']


@pytest.mark.parametrize('data,message', [
    ([1, 2], r"expected a json object with a 'categories' list, got list"),
    (dict(images=[]), r"expected a json object with a 'categories' list, got NoneType"),
    (dict(categories=[dict(id=1)]), r"categories\[0\]: expected an object with an int 'id' and "
                                    r"a str 'name', got \{'id': 1\}"),
    (dict(categories=[dict(id=1, name='a'), dict(id=1, name='b')]),
     r'categories\[1\]: id 1 is repeated'),
    (dict(categories=[dict(id=1, name='_')]), r'class 0 has an empty name'),
    (dict(categories=[]), r'expected at least one class name, found none'),
])
def test_bad_json_is_named(tmp_path: Path, data: object, message: str) -> None:
    path = _write_json(tmp_path / 'bad.json', data)
    with pytest.raises(ValueError, match=f'{path}: {message}'):
        load_class_names(path)


def test_missing_empty_and_unknown_class_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"class file '.*nowhere.json' does not exist"):
        load_class_names(str(tmp_path / 'nowhere.json'))
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n \n')
    with pytest.raises(ValueError, match='empty.txt: expected at least one class name'):
        load_class_names(str(empty))
    with pytest.raises(ValueError, match=r"names.csv: expected a class file ending in one of "
                                         r"\('.json', '.txt'\)"):
        load_class_names(str(tmp_path / 'names.csv'))


def test_template_sets() -> None:
    assert get_prompt_templates('single') == ('a photo of a {}.', )
    assert 10 <= len(ENSEMBLE_TEMPLATES) <= 20
    assert len(set(ENSEMBLE_TEMPLATES)) == len(ENSEMBLE_TEMPLATES)
    for templates in PROMPT_TEMPLATES.values():
        assert all(template.count('{}') == 1 for template in templates)
    with pytest.raises(ValueError, match=r"template set: expected one of \['ensemble', "
                                         r"'single'\], got 'imagenet'"):
        get_prompt_templates('imagenet')


def test_build_prompts_is_class_major() -> None:
    prompts = build_prompts(['cat', 'dog'], ['a {}.', 'the {} here.'])
    assert prompts == ['a cat.', 'the cat here.', 'a dog.', 'the dog here.']
    with pytest.raises(ValueError, match="expected one '{}' in each template, got 'a cat.'"):
        build_prompts(['dog'], ['a cat.'])
    with pytest.raises(ValueError, match='templates: expected at least one template'):
        build_prompts(['dog'], [])


def test_embeddings_are_normalised_means_of_normalised_prompts(model: OpenCLIPRegion) -> None:
    names = ['cat', 'traffic light']
    embeddings = compute_text_embeddings(model, names, ENSEMBLE_TEMPLATES, batch_size=7)
    prompts = model.encode_text(build_prompts(names, ENSEMBLE_TEMPLATES))
    expected = F.normalize(prompts.reshape(2, len(ENSEMBLE_TEMPLATES), -1).mean(dim=1), dim=-1)
    assert embeddings.shape == (2, EMBED_DIM) and not embeddings.requires_grad
    torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
    # The templates matter: averaging is not the single prompt's embedding.
    single = compute_text_embeddings(model, names, get_prompt_templates('single'))
    torch.testing.assert_close(single, model.encode_text(['a photo of a cat.',
                                                          'a photo of a traffic light.']))
    assert not torch.allclose(single, embeddings, atol=1e-3)


def test_background_row_is_appended(model: OpenCLIPRegion) -> None:
    templates = get_prompt_templates('single')
    with_background = compute_text_embeddings(model, ['cat', 'dog'], templates, background=True)
    assert with_background.shape == (3, EMBED_DIM)
    torch.testing.assert_close(with_background[:2],
                               compute_text_embeddings(model, ['cat', 'dog'], templates))
    torch.testing.assert_close(with_background[2:], compute_text_embeddings(
        model, [BACKGROUND_CLASS_NAME], templates))
    with pytest.raises(ValueError, match='class_names: expected at least one class name'):
        compute_text_embeddings(model, [], templates)
