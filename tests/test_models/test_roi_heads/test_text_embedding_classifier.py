# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from vocabulary_files import write_vocabulary

from mmclim.models.roi_heads import TextEmbeddingClassifier, load_text_embeddings

NUM_CLASSES = 6
EMBED_DIM = 16
NOVEL = (1, 4)


def _classifier(tmp_path: Path, **kwargs) -> TextEmbeddingClassifier:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    torch.manual_seed(0)
    return MODELS.build(dict(dict(type='TextEmbeddingClassifier', in_features=32,
                                  out_features=NUM_CLASSES + 1, text_embeddings=embeddings,
                                  split_file=split), **kwargs))


def test_eval_logits_are_cosine_similarities_over_temperature(
        tmp_path: Path) -> None:
    classifier = _classifier(tmp_path, temperature=0.05).eval()
    x = torch.randn(4, 32)
    regions = F.normalize(classifier.projection(x), dim=-1)
    classes = torch.cat([classifier.text_embeddings,
                         F.normalize(classifier.background_embedding, dim=-1)[None]])
    logits = classifier(x)
    assert logits.shape == (4, NUM_CLASSES + 1)
    torch.testing.assert_close(logits, regions @ classes.T / 0.05)
    assert logits.abs().max() <= 1 / 0.05 + 1e-4
    assert classifier.novel_mask.tolist() == [i in NOVEL for i in range(NUM_CLASSES)]


def test_training_masks_novel_classes_and_trains_projection_and_background(
        tmp_path: Path) -> None:
    classifier = _classifier(tmp_path).train()
    logits = classifier(torch.randn(5, 32))
    assert torch.isneginf(logits[:, list(NOVEL)]).all()
    assert torch.isfinite(logits[:, [0, 2, 3, 5, NUM_CLASSES]]).all()
    loss = F.cross_entropy(logits, torch.tensor([0, 2, 3, 5, NUM_CLASSES]))
    loss.backward()
    assert torch.isfinite(loss)
    assert classifier.projection.weight.grad.abs().sum() > 0
    assert classifier.background_embedding.grad.abs().sum() > 0
    # The text embeddings are fixed buffers, read from the file, not from checkpoints.
    assert 'text_embeddings' not in dict(classifier.named_parameters())
    assert set(classifier.state_dict()) == {'projection.weight', 'projection.bias',
                                            'background_embedding'}


def test_rows_are_normalised(tmp_path: Path) -> None:
    path = str(tmp_path / 'e.npy')
    np.save(path, np.array([[3., 4.], [0., 2.]], dtype=np.float32))
    torch.testing.assert_close(load_text_embeddings(path), torch.tensor([[.6, .8], [0., 1.]]))


def test_rejects_mismatched_files(tmp_path: Path) -> None:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    with pytest.raises(ValueError, match=r'has 6 rows, expected 7 .*--background'):
        TextEmbeddingClassifier(32, NUM_CLASSES + 2, embeddings, split)
    _, small_split = write_vocabulary(tmp_path, NUM_CLASSES - 1, EMBED_DIM, NOVEL)
    with pytest.raises(ValueError, match=r'split_file: .* lists 5 base and novel classes, '
                                         r'expected 6'):
        TextEmbeddingClassifier(32, NUM_CLASSES + 1, embeddings, small_split)
    with pytest.raises(FileNotFoundError, match='text_embeddings: .*missing.npy'):
        TextEmbeddingClassifier(32, NUM_CLASSES + 1, str(tmp_path / 'missing.npy'), split)
    np.save(tmp_path / 'flat.npy', np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r'shape \(C, D\), got float32 of shape \(4,\)'):
        TextEmbeddingClassifier(32, 5, str(tmp_path / 'flat.npy'), split)
    with pytest.raises(ValueError, match='temperature: expected a positive number, got 0'):
        TextEmbeddingClassifier(32, NUM_CLASSES + 1, embeddings, split, temperature=0)
