# Copyright (c) mmclim contributors. All rights reserved.
"""The class-embedding file format: ``X.npy`` plus its sidecar ``X.json``."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmclim.structures import load_class_embeddings, save_class_embeddings, sidecar_path
from mmclim.structures.vocabulary import EMBEDDING_TEXT_OUTPUT_KEY

EMBED_DIM = 4


def test_save_writes_float32_npy_and_sidecar(tmp_path: Path) -> None:
    out = str(tmp_path / 'sub' / 'coco.npy')
    # Rows of norm 5 and 2 (3-4-0-0 and 0-0-0-2 triangles): stored as given, unit on load.
    embeddings = torch.tensor([[3., 4., 0., 0.], [0., 0., 0., 2.]], dtype=torch.float64)
    sidecar = save_class_embeddings(out, embeddings, 'ViT-B-16-quickgelu',
                                    dict(class_names=['cat', 'sky']))
    assert sidecar == sidecar_path(out) == str(tmp_path / 'sub' / 'coco.json')
    saved = np.load(out)
    assert saved.dtype == np.float32
    np.testing.assert_array_equal(saved, [[3, 4, 0, 0], [0, 0, 0, 2]])
    assert json.loads(Path(sidecar).read_text()) == dict(
        class_names=['cat', 'sky'], model='ViT-B-16-quickgelu', embed_dim=EMBED_DIM, num_rows=2)
    loaded = load_class_embeddings(out, model_name='ViT-B-16-quickgelu', embed_dim=EMBED_DIM,
                                   num_rows=2)
    torch.testing.assert_close(loaded, torch.tensor([[0.6, 0.8, 0., 0.], [0., 0., 0., 1.]]))


def test_save_errors_name_the_path(tmp_path: Path) -> None:
    embeddings = torch.ones(2, EMBED_DIM)
    with pytest.raises(ValueError, match=r"expected a path ending in '.npy', got 'x.pt'"):
        save_class_embeddings('x.pt', embeddings, 'm')
    with pytest.raises(ValueError, match=r'expected shape \(N, D\), got \(4,\)'):
        save_class_embeddings(str(tmp_path / 'e.npy'), embeddings[0], 'm')


def test_load_checks_the_sidecar_and_the_model(tmp_path: Path) -> None:
    out = str(tmp_path / 'e.npy')
    save_class_embeddings(out, torch.ones(3, EMBED_DIM), 'RN50')
    with pytest.raises(ValueError, match=r"made with the text tower of 'RN50' \(its sidecar\), "
                                         r"but the model is 'ViT-B-16'"):
        load_class_embeddings(out, model_name='ViT-B-16')
    with pytest.raises(ValueError, match='has 3 rows, expected 4'):
        load_class_embeddings(out, num_rows=4)
    np.save(out, np.ones((2, EMBED_DIM), np.float32))  # the array no longer fits its sidecar
    with pytest.raises(ValueError, match=r'has shape \(2, 4\) but its sidecar says num_rows=3'):
        load_class_embeddings(out)


def test_load_checks_the_text_output(tmp_path: Path) -> None:
    """BARON's 'last_block' class embeddings are not CLIP's projected ones: the sidecar says
    which, and files without the key (written before it existed) are 'projection'."""
    out = str(tmp_path / 'attn12.npy')
    save_class_embeddings(out, torch.ones(3, EMBED_DIM), 'ViT-B-32-quickgelu',
                          {EMBEDDING_TEXT_OUTPUT_KEY: 'last_block'})
    assert json.loads(Path(sidecar_path(out)).read_text())['text_output'] == 'last_block'
    assert load_class_embeddings(out, text_output='last_block').shape == (3, EMBED_DIM)
    assert load_class_embeddings(out).shape == (3, EMBED_DIM)  # None: not checked
    message = (rf"^class_embeddings: {re.escape(out)} holds the 'last_block' text output "
               r"\(its sidecar text_output\), but the model expects 'projection'; embed the "
               r'classes with tools/generate_text_embeddings.py --text-output projection$')
    with pytest.raises(ValueError, match=message):
        load_class_embeddings(out, text_output='projection')

    old = str(tmp_path / 'old.npy')
    save_class_embeddings(old, torch.ones(2, EMBED_DIM), 'RN50')
    assert 'text_output' not in json.loads(Path(sidecar_path(old)).read_text())
    assert load_class_embeddings(old, text_output='projection').shape == (2, EMBED_DIM)
    with pytest.raises(ValueError, match=r"^roi_head.class_embeddings: .*old.npy holds the "
                                         r"'projection' text output .* expects 'last_block'; "
                                         r'.* --text-output last_block$'):
        load_class_embeddings(old, text_output='last_block', field='roi_head.class_embeddings')
