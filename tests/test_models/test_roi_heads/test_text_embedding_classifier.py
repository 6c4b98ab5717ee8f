# Copyright (c) mmclim contributors. All rights reserved.
import math
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from vocabulary_files import TEST_MODEL, write_vocabulary

from mmclim.models.roi_heads import TextEmbeddingClassifier
from mmclim.structures import save_class_embeddings, split_record, write_split_file

NUM_CLASSES = 6
EMBED_DIM = 16
NOVEL = (1, 4)
IN_FEATURES = 32
# The official FVLMConvFCBBoxHead: cls_temp = nn.Parameter(torch.tensor(50.)) (learn_cls_temp).
OFFICIAL_LOGIT_SCALE = 50.0


def _classifier(tmp_path: Path, **kwargs) -> TextEmbeddingClassifier:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(dict(dict(type='TextEmbeddingClassifier', in_features=IN_FEATURES,
                                  out_features=NUM_CLASSES + 1, class_embeddings=embeddings,
                                  split_file=split), **kwargs))


def _hand_classifier(tmp_path: Path) -> TextEmbeddingClassifier:
    """Two classes with embeddings (1, 0) and (0, 1), class 1 novel, identity projection and
    background embedding (0.6, 0.8)."""
    save_class_embeddings(str(tmp_path / 'hand.npy'), torch.eye(2), 'hand-model')
    write_split_file(str(tmp_path / 'hand.json'),
                     split_record({1: 'a', 2: 'b'}, [1], [2], 'test'))
    classifier = TextEmbeddingClassifier(2, 3, str(tmp_path / 'hand.npy'),
                                         str(tmp_path / 'hand.json'), clip_model_name='hand-model',
                                         embed_dim=2)
    with torch.no_grad():
        classifier.projection.weight.copy_(torch.eye(2))
        classifier.projection.bias.zero_()
        classifier.background.weight.copy_(torch.tensor([[3.], [4.]]))  # normalised: (0.6, 0.8)
        classifier.background.bias.zero_()
    return classifier


def test_logits_by_hand(tmp_path: Path) -> None:
    """x = (3, 4) is (0.6, 0.8) once normalised: cosines 0.6, 0.8 and 1 (background), x 50."""
    classifier = _hand_classifier(tmp_path).eval()
    x = torch.tensor([[3., 4.]])
    torch.testing.assert_close(classifier(x), torch.tensor([[30., 40., 50.]]))
    torch.testing.assert_close(classifier.class_and_background_embeddings(),
                               torch.tensor([[1., 0.], [0., 1.], [0.6, 0.8]]))
    classifier.train()  # class 1 is novel: out of the training softmax
    torch.testing.assert_close(classifier(x), torch.tensor([[30., -math.inf, 50.]]))


def test_logit_scale_is_learned_from_50(tmp_path: Path) -> None:
    classifier = _classifier(tmp_path).train()
    assert isinstance(classifier.logit_scale, torch.nn.Parameter)
    assert classifier.logit_scale.item() == OFFICIAL_LOGIT_SCALE
    logits = classifier(torch.randn(4, IN_FEATURES))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 3, NUM_CLASSES])).backward()
    assert classifier.logit_scale.grad is not None and classifier.logit_scale.grad != 0
    for module in (classifier.projection, classifier.background):
        assert module.weight.grad.abs().sum() > 0
    frozen = _classifier(tmp_path, logit_scale=20.0, learn_logit_scale=False)
    assert 'logit_scale' not in dict(frozen.named_parameters())
    assert frozen.logit_scale.item() == 20.0


def test_background_init_is_xavier_uniform(tmp_path: Path) -> None:
    """mmengine's XavierInit(distribution='uniform') of nn.Linear(1, D): weights within
    +-sqrt(6 / (1 + D)), bias 0 (the official bg_embedding init)."""
    classifier = _classifier(tmp_path)
    classifier.init_weights()
    bound = math.sqrt(6 / (1 + EMBED_DIM))
    weight = classifier.background.weight
    assert weight.shape == (EMBED_DIM, 1) and weight.abs().max() <= bound
    assert weight.abs().max() > bound / 4  # not a near-zero init
    assert torch.equal(classifier.background.bias, torch.zeros(EMBED_DIM))


def test_embeddings_of_another_text_tower_are_an_error_naming_the_file(tmp_path: Path) -> None:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL,
                                         model_name='ViT-B-16-quickgelu')
    with pytest.raises(ValueError, match=f"{embeddings} was made with the text tower of "
                                         f"'ViT-B-16-quickgelu'.*the model is '{TEST_MODEL}'"):
        TextEmbeddingClassifier(IN_FEATURES, NUM_CLASSES + 1, embeddings, split,
                                clip_model_name=TEST_MODEL)


def test_file_checks(tmp_path: Path) -> None:
    embeddings, split = write_vocabulary(tmp_path, NUM_CLASSES, EMBED_DIM, NOVEL)
    with pytest.raises(ValueError, match=f'class_embeddings: {embeddings} has 6 rows, expected 7'):
        TextEmbeddingClassifier(IN_FEATURES, NUM_CLASSES + 2, embeddings, split)
    with pytest.raises(ValueError, match='embeddings of size 16, the model\'s embedding size is 8'):
        TextEmbeddingClassifier(IN_FEATURES, NUM_CLASSES + 1, embeddings, split, embed_dim=8)
    _, small_split = write_vocabulary(tmp_path, NUM_CLASSES - 1, EMBED_DIM, NOVEL)
    with pytest.raises(ValueError, match=f'split_file: {small_split} lists 5 base and novel'):
        TextEmbeddingClassifier(IN_FEATURES, NUM_CLASSES + 1, embeddings, small_split)
    with pytest.raises(FileNotFoundError, match='missing.npy'):
        TextEmbeddingClassifier(IN_FEATURES, NUM_CLASSES + 1, str(tmp_path / 'missing.npy'), split)
    with pytest.raises(ValueError, match='logit_scale: expected a positive number'):
        TextEmbeddingClassifier(IN_FEATURES, NUM_CLASSES + 1, embeddings, split, logit_scale=0)
