# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/generate_text_embeddings.py`` on the tiny ViT with a saved checkpoint."""
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, python_tool, run_tool

from mmclim.evaluation.metrics import (VILD_TEMPLATES, compute_text_embeddings, get_prompt_set,
                                       get_prompt_templates)
from mmclim.models.backbones import OpenCLIPRegion, save_clip_checkpoint
from mmclim.structures import load_class_embeddings

TINY_VIT = 'mmclim-tiny-vit'
EMBED_DIM = 32  # embed_dim of mmclim-tiny-vit
TEXT_WIDTH = 64  # text_cfg.width of mmclim-tiny-vit: the size of its 'last_block' output
ATOL = 1e-5
# Ids out of order: rows must follow ascending ids (cat 1, dog 4, traffic light 9).
CATEGORIES = [
    dict(id=9, name='traffic_light', synonyms=['traffic_light', 'stoplight']),
    dict(id=1, name='cat', synonyms=['cat']),
    dict(id=4, name='dog', synonyms=['dog']),
]
ID_ORDER_NAMES = ['cat', 'dog', 'traffic light']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT checkpoint (OpenAI format), a LVIS-style json and a txt of class names."""
    root = tmp_path_factory.mktemp('text_embeddings')
    torch.manual_seed(3)
    save_clip_checkpoint(OpenCLIPRegion(TINY_VIT).clip, str(root / 'tiny.pt'))
    (root / 'lvis.json').write_text(json.dumps(dict(images=[], categories=CATEGORIES)))
    (root / 'names.txt').write_text('cat\ndog\n\ntraffic_light\n')
    return root


@pytest.fixture(scope='module')
def model(workspace: Path) -> OpenCLIPRegion:
    return OpenCLIPRegion(TINY_VIT, pretrained=str(workspace / 'tiny.pt')).eval()


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    """The tool as a module, to check its argument errors without a subprocess."""
    spec = importlib.util.spec_from_file_location(
        'generate_text_embeddings', REPO_ROOT / 'tools' / 'generate_text_embeddings.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generate(workspace: Path, classes: str, out: str, *args: str) -> np.ndarray:
    run_tool(python_tool('generate_text_embeddings.py', str(workspace / classes), '--model',
                         TINY_VIT, '--checkpoint', str(workspace / 'tiny.pt'), '--out', out,
                         *args), cwd=workspace)
    return np.load(out)


@pytest.mark.slow
def test_json_ensemble_with_background(workspace: Path, model: OpenCLIPRegion) -> None:
    out = workspace / 'out' / 'lvis_ensemble.npy'
    embeddings = _generate(workspace, 'lvis.json', str(out), '--templates', 'ensemble',
                           '--background', '--batch-size', '5')
    assert embeddings.shape == (len(CATEGORIES) + 1, EMBED_DIM)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=ATOL)
    expected = compute_text_embeddings(model, ID_ORDER_NAMES, get_prompt_templates('ensemble'),
                                       background=True)
    np.testing.assert_allclose(embeddings, expected.numpy(), atol=ATOL)

    sidecar = json.loads((workspace / 'out' / 'lvis_ensemble.json').read_text())
    assert sidecar == dict(model=TINY_VIT, checkpoint=str(workspace / 'tiny.pt'),
                           classes_file=str(workspace / 'lvis.json'), template_set='ensemble',
                           templates=list(get_prompt_templates('ensemble')),
                           class_names=ID_ORDER_NAMES, background=True,
                           text_output='projection', embed_dim=EMBED_DIM,
                           num_rows=len(CATEGORIES) + 1)


@pytest.mark.slow
def test_txt_single_template_differs_from_ensemble(workspace: Path,
                                                   model: OpenCLIPRegion) -> None:
    single = _generate(workspace, 'names.txt', str(workspace / 'names_single.npy'),
                       '--templates', 'single')
    assert single.shape == (len(ID_ORDER_NAMES), EMBED_DIM)
    expected = model.encode_text([f'a photo of a {name}.' for name in ID_ORDER_NAMES])
    np.testing.assert_allclose(single, expected.numpy(), atol=ATOL)
    ensemble = compute_text_embeddings(model, ID_ORDER_NAMES, get_prompt_templates('ensemble'))
    assert np.abs(single - ensemble.numpy()).max() > 1e-3
    sidecar = json.loads((workspace / 'names_single.json').read_text())
    assert sidecar['template_set'] == 'single' and sidecar['background'] is False
    assert sidecar['class_names'] == ID_ORDER_NAMES and sidecar['embed_dim'] == EMBED_DIM


def test_vild_embeddings_are_a_vocabulary_file_of_the_model(tool: ModuleType, workspace: Path,
                                                            model: OpenCLIPRegion,
                                                            tmp_path: Path) -> None:
    """``--templates vild``: each row averages the class's 63 official ViLD prompts, and the
    sidecar names the open_clip model, which ``load_class_embeddings`` checks."""
    out = tmp_path / 'lvis_vild.npy'
    tool.main([str(workspace / 'lvis.json'), '--model', TINY_VIT, '--checkpoint',
               str(workspace / 'tiny.pt'), '--templates', 'vild', '--out', str(out)])
    vild = get_prompt_set('vild')
    # Hand-checked official prompts (the full set is checked in test_text_embeddings.py).
    assert vild.prompts('traffic light')[0] == 'There is a traffic light in the scene.'
    assert vild.prompts('traffic light')[2] == 'This is a photo of a traffic light in the scene.'
    expected = torch.stack([F.normalize(model.encode_text(vild.prompts(name)).mean(dim=0), dim=0)
                            for name in ID_ORDER_NAMES])
    loaded = load_class_embeddings(str(out), model_name=TINY_VIT, embed_dim=EMBED_DIM,
                                   num_rows=len(ID_ORDER_NAMES))
    torch.testing.assert_close(loaded, expected, atol=ATOL, rtol=ATOL)
    sidecar = json.loads(out.with_suffix('.json').read_text())
    assert sidecar['model'] == TINY_VIT and sidecar['template_set'] == 'vild'
    assert sidecar['templates'] == list(VILD_TEMPLATES) and len(sidecar['templates']) == 63
    assert sidecar['num_rows'] == 3 and sidecar['background'] is False
    assert sidecar['text_output'] == 'projection'
    with pytest.raises(ValueError, match=r"made with the text tower of 'mmclim-tiny-vit' \(its "
                                         r"sidecar\), but the model is 'ViT-B-16-quickgelu'"):
        load_class_embeddings(str(out), model_name='ViT-B-16-quickgelu')


def test_last_block_embeddings_record_their_text_output(tool: ModuleType, workspace: Path,
                                                        model: OpenCLIPRegion,
                                                        tmp_path: Path) -> None:
    """``--text-output last_block`` (BARON's OV-COCO classifier): rows of the text width, the
    sidecar says so, and loading them for a model of CLIP's projected embeddings fails."""
    out = tmp_path / 'lvis_last_block.npy'
    tool.main([str(workspace / 'lvis.json'), '--model', TINY_VIT, '--checkpoint',
               str(workspace / 'tiny.pt'), '--templates', 'single', '--text-output',
               'last_block', '--out', str(out)])
    sidecar = json.loads(out.with_suffix('.json').read_text())
    assert sidecar['text_output'] == 'last_block' and sidecar['embed_dim'] == TEXT_WIDTH
    expected = compute_text_embeddings(model, ID_ORDER_NAMES, get_prompt_templates('single'),
                                       text_output='last_block')
    loaded = load_class_embeddings(str(out), model_name=TINY_VIT, embed_dim=TEXT_WIDTH,
                                   num_rows=len(ID_ORDER_NAMES), text_output='last_block')
    assert loaded.shape == (len(ID_ORDER_NAMES), TEXT_WIDTH)
    torch.testing.assert_close(loaded, expected, atol=ATOL, rtol=ATOL)
    # Not the projected embeddings of the same prompts.
    projected = compute_text_embeddings(model, ID_ORDER_NAMES, get_prompt_templates('single'))
    assert projected.shape == (len(ID_ORDER_NAMES), EMBED_DIM)
    with pytest.raises(ValueError, match=r"lvis_last_block.npy holds the 'last_block' text "
                                         r"output .* expects 'projection'; embed the classes "
                                         r'with tools/generate_text_embeddings.py '
                                         r'--text-output projection'):
        load_class_embeddings(str(out), text_output='projection')


def test_errors(tool: ModuleType, workspace: Path, tmp_path: Path,
                capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / 'e.npy')
    with pytest.raises(FileNotFoundError, match=r"class file '.*missing.json' does not exist"):
        tool.main([str(tmp_path / 'missing.json'), '--model', TINY_VIT, '--out', out])
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(categories=[])))
    with pytest.raises(ValueError, match='empty.json: expected at least one class name'):
        tool.main([str(empty), '--model', TINY_VIT, '--out', out])
    with pytest.raises(SystemExit):
        tool.main([str(workspace / 'names.txt'), '--templates', 'imagenet', '--out', out])
    assert "--templates: invalid choice: 'imagenet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(workspace / 'names.txt'), '--out', str(tmp_path / 'e.pt')])
    assert '--out: expected a path ending in .npy' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(workspace / 'names.txt'), '--text-output', 'attn12', '--out', out])
    assert "--text-output: invalid choice: 'attn12'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # names.npy's sidecar names.json is the pool's
        tool.main([str(workspace / 'names.txt'), '--out', str(workspace / 'names.npy')])
    assert "would overwrite the one of" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='nowhere/ViT.pt'):
        tool.main([str(workspace / 'names.txt'), '--model', TINY_VIT, '--checkpoint',
                   str(tmp_path / 'nowhere' / 'ViT.pt'), '--out', out])
    assert not Path(out).exists()


def test_without_checkpoint_warns(tool: ModuleType, workspace: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'random.npy'
    tool.main([str(workspace / 'names.txt'), '--model', TINY_VIT, '--templates', 'single',
               '--out', str(out)])
    captured = capsys.readouterr()
    assert 'no --checkpoint: mmclim-tiny-vit has random weights' in captured.err
    assert f'embeddings of shape (3, {EMBED_DIM}) -> {out}' in captured.out
    assert json.loads(out.with_suffix('.json').read_text())['checkpoint'] is None
