# Copyright (c) mmclim contributors. All rights reserved.
"""Class names, prompt templates and class text embeddings for zero-shot classifiers."""
import json
from pathlib import Path
from typing import List

import pytest
import torch
import torch.nn.functional as F

from mmclim.evaluation.metrics import (BACKGROUND_CLASS_NAME, ENSEMBLE_TEMPLATES, PROMPT_TEMPLATES,
                                       PromptSet, build_prompts, compute_text_embeddings,
                                       get_prompt_set, get_prompt_templates, load_class_names)
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
    with pytest.raises(ValueError, match=r"template set: expected one of \['detic', 'ensemble', "
                                         r"'regionclip', 'single', 'toy-unseen', 'vild'\], got "
                                         r"'imagenet'"):
        get_prompt_templates('imagenet')


def test_regionclip_templates_are_the_name_and_clips_80() -> None:
    """RegionCLIP's 81 concept prompts: '{}.' then CLIP's 80 ImageNet templates, checked against
    open_clip's copy of CLIP's list (an independent source)."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES
    templates = get_prompt_templates('regionclip')
    assert len(templates) == 81
    assert templates[:2] == ('{}.', 'a photo of a {}.')
    assert set(templates[1:]) == {template('{}') for template in OPENAI_IMAGENET_TEMPLATES}
    assert get_prompt_set('regionclip').prompts('fire hydrant')[0] == 'fire hydrant.'


def test_build_prompts_is_class_major() -> None:
    prompts = build_prompts(['cat', 'dog'], ['a {}.', 'the {} here.'])
    assert prompts == ['a cat.', 'the cat here.', 'a dog.', 'the dog here.']
    with pytest.raises(ValueError, match="expected one '{}' in each template .* got 'a cat.'"):
        build_prompts(['dog'], ['a cat.'])
    with pytest.raises(ValueError, match="expected one '{}' in each template .* got 'a {} {}.'"):
        build_prompts(['dog'], ['a {} {}.'])
    with pytest.raises(ValueError, match=r"got 'a \{colour\} \{\}.'"):
        build_prompts(['dog'], ['a {colour} {}.'])
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


# The official prompts of CLIM's class embeddings (wusize/CLIM tools/generate_text_embeddings.py),
# written out by hand from its templates, article() ("an" before a lower-case vowel of the name
# as given), processed_name() ("_" -> " ", "/" -> " or ", lower case, no trailing ".") and the
# "This is " prefix of texts starting with "a" or "the". (template index, expected prompt)
VILD_PROMPTS = {
    'apple': [
        (0, 'There is an apple in the scene.'),
        (1, 'There is the apple in the scene.'),
        (2, 'This is a photo of an apple in the scene.'),
        (5, 'itap of an apple.'),
        (6, 'itap of my apple.'),
        (8, 'This is a photo of an apple.'),
        (17, 'This is a photo of a nice apple.'),  # the template's own "a"
        (51, 'This is a plastic apple.'),
        (52, 'This is the plastic apple.'),
        (59, 'This is an embroidered apple.'),
        (62, 'This is a painting of a apple.'),
    ],
    'traffic_light': [
        (0, 'There is a traffic light in the scene.'),
        (8, 'This is a photo of a traffic light.'),
        (50, 'This is a black and white photo of a traffic light.'),
    ],
    'wall-other-merged': [
        (0, 'There is a wall-other-merged in the scene.'),
        (10, 'This is a photo of the wall-other-merged.'),
    ],
    'Cup/Mug.': [
        (0, 'There is a cup or mug in the scene.'),
        (7, 'itap of the cup or mug.'),
    ],
    # The article comes from the name before lower-casing: "E" is not in "aeiou".
    'Egg_roll': [
        (0, 'There is a egg roll in the scene.'),
    ],
}


def test_vild_prompts_are_the_official_ones() -> None:
    prompt_set = get_prompt_set('vild')
    assert len(get_prompt_templates('vild')) == 63 == len(prompt_set)
    for name, expected in VILD_PROMPTS.items():
        prompts = prompt_set.prompts(name)
        assert len(prompts) == 63
        for index, prompt in expected:
            assert prompts[index] == prompt, (name, index)
    # 2 "There is ..." and 3 "itap of ..." templates keep no prefix: 63 - 5 = 58 have it.
    prompts = prompt_set.prompts('apple')
    assert sum(prompt.startswith('This is ') for prompt in prompts) == 58
    assert len(set(prompts)) == 63


def test_build_prompts_with_a_prompt_set_is_class_major() -> None:
    prompt_set = PromptSet(('a {}.', 'There is {article} {}.'), name_rule=str.upper,
                           this_is_prefix=True)
    assert build_prompts(['owl', 'cat'], prompt_set) == [
        'This is a OWL.', 'There is an OWL.', 'This is a CAT.', 'There is a CAT.']
    # Plain templates put names as they are and prefix nothing.
    assert build_prompts(['owl'], ['a {}.', 'There is {article} {}.']) == [
        'a owl.', 'There is an owl.']


def test_vild_embeddings_average_the_vild_prompts(model: OpenCLIPRegion) -> None:
    vild = get_prompt_set('vild')
    embeddings = compute_text_embeddings(model, ['apple', 'Cup/Mug.'], vild, batch_size=50)
    expected = torch.stack([
        F.normalize(model.encode_text(vild.prompts(name)).mean(dim=0), dim=-1)
        for name in ('apple', 'Cup/Mug.')])
    torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=ATOL)
    # The set's rules matter: its bare templates give other prompts, other embeddings.
    bare = compute_text_embeddings(model, ['apple', 'Cup/Mug.'], get_prompt_templates('vild'))
    assert not torch.allclose(bare, embeddings, atol=1e-3)


def _last_block_eot(model: OpenCLIPRegion, prompts: List[str]) -> torch.Tensor:
    """Independent reference of the 'last_block' output: a forward hook on the last text block
    during open_clip's own ``encode_text``, read at the EOT token (the highest id), normalised.
    """
    clip = model.clip
    assert clip.transformer.batch_first  # the hook's output is (N, L, W)
    tokens = model.tokenizer(prompts)
    captured = []
    handle = clip.transformer.resblocks[-1].register_forward_hook(
        lambda module, args, out: captured.append(out))
    try:
        with torch.no_grad():
            clip.encode_text(tokens)
    finally:
        handle.remove()
    return F.normalize(captured[0][torch.arange(len(prompts)), tokens.argmax(dim=-1)], dim=-1)


def test_last_block_embeddings_average_the_last_block_outputs(model: OpenCLIPRegion) -> None:
    """BARON's OV-COCO classifier: the prompts' EOT tokens after the last text block (no
    ln_final, no projection), of the tower's width, averaged over the templates as usual."""
    names = ['cat', 'traffic light']
    embeddings = compute_text_embeddings(model, names, ENSEMBLE_TEMPLATES, batch_size=7,
                                         text_output='last_block')
    width = model.clip.token_embedding.weight.shape[1]
    assert width != EMBED_DIM and embeddings.shape == (2, width)
    prompts = _last_block_eot(model, build_prompts(names, ENSEMBLE_TEMPLATES))
    expected = F.normalize(prompts.reshape(2, len(ENSEMBLE_TEMPLATES), -1).mean(dim=1), dim=-1)
    torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=ATOL)
    with torch.no_grad():
        direct = model.encode_text(['a photo of a cat.'], output='last_block')
    torch.testing.assert_close(direct, _last_block_eot(model, ['a photo of a cat.']), atol=ATOL,
                               rtol=ATOL)
    # The default output stays open_clip's encode_text, to the bit.
    tokens = model.tokenizer(['a photo of a cat.', 'two dogs'])
    with torch.no_grad():
        assert torch.equal(model.encode_text(['a photo of a cat.', 'two dogs']),
                           model.clip.encode_text(tokens, normalize=True))
    with pytest.raises(ValueError, match=r"output: expected one of .*, got 'attn12'"):
        compute_text_embeddings(model, names, ENSEMBLE_TEMPLATES, text_output='attn12')
