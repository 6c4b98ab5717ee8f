# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/demo/detect_free_text.py`` and :func:`mmclim.apis.set_vocabulary` on the toy F-VLM
config (random weights, a random toy CLIP), in-process."""
import importlib.util
import json
from types import ModuleType
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from mmdet.apis import inference_detector, init_detector
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import get_test_pipeline_cfg
from mmengine.dataset import Compose
from torch import nn

from mmclim.apis import embed_vocabulary, set_vocabulary
from mmclim.datasets import class_names, generate_shape_scenes, write_base_only
from mmclim.datasets.toy_shapes import TOY_SPLIT_FILE
from mmclim.evaluation.metrics import get_prompt_set
from mmclim.models.detectors import FVLM
from mmclim.structures import save_class_embeddings

TOY_FVLM = REPO_ROOT / 'configs' / 'fvlm' / 'fvlm_toy-vit_toy-shapes.py'
TOY_CLIP = 'mmclim-toy-vit'
EMBED_DIM = 64  # of mmclim-toy-vit
TEMPLATE_SET = 'single'  # the config's embeddings (tools/demo.sh), recorded in their sidecar
NUM_IMAGES = 2
IMAGE_SIZE = 128  # the config's scene size: boxes are in input pixels (scale factor 1)
VOCABULARY = ['red circle', 'zebra', 'blue square', 'yellow diamond']
ATOL = 1e-5
# Proposals a fraction of a pixel apart can pool identical RoI features (thin boxes at the image
# border here), so they tie in score and NMS keeps either of them, whichever sorts first.
TIED_BOX_TOL = 0.5


def _load_tool() -> ModuleType:
    """The tool as a module (its ``main`` runs in-process)."""
    spec = importlib.util.spec_from_file_location(
        'detect_free_text', REPO_ROOT / 'tools' / 'demo' / 'detect_free_text.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """Toy scenes, the config's 16 class embeddings (random) and split, a random toy F-VLM
    saved as a checkpoint, and that model built once."""
    root = tmp_path_factory.mktemp('free_text')
    data = root / 'data' / 'toy_shapes'
    ann_file = generate_shape_scenes(str(data), 'val', NUM_IMAGES, image_size=IMAGE_SIZE, seed=1)
    write_base_only(ann_file)
    rows = torch.randn(len(class_names()), EMBED_DIM, generator=torch.Generator().manual_seed(0))
    embeddings = root / 'toy_classes.npy'
    save_class_embeddings(str(embeddings), F.normalize(rows, dim=-1), TOY_CLIP,
                          {TOOL.TEMPLATE_SET_KEY: TEMPLATE_SET})
    options = {'model.backbone.pretrained': None,  # random frozen toy CLIP
               'model.roi_head.bbox_head.class_embeddings': str(embeddings),
               'model.roi_head.bbox_head.split_file': str(data / 'annotations' / TOY_SPLIT_FILE)}
    torch.manual_seed(0)
    model = init_detector(str(TOY_FVLM), None, device='cpu', cfg_options=options)
    checkpoint = root / 'fvlm.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=tuple(class_names())))), checkpoint)
    return dict(root=root, model=model, checkpoint=checkpoint,
                images=sorted((data / 'val').glob('*.png')),
                cfg_options=[f'{key}={value}' for key, value in options.items()])


def _swap(model: FVLM, names: List[str], novel: Tuple[str, ...] = ()) -> None:
    """Swap in ``names`` embedded by the model's text tower, as the tool does."""
    set_vocabulary(model, names, embed_vocabulary(model, names, get_prompt_set(TEMPLATE_SET)),
                   novel)


def _named(result: DetDataSample, names: List[str]) -> List[Tuple[str, List[float], float]]:
    """The (label name, box, score) of each detection."""
    pred = result.pred_instances
    return [(names[label], bbox, score) for bbox, score, label in zip(
        pred.bboxes.tolist(), pred.scores.tolist(), pred.labels.tolist())]


def test_tool_writes_one_image_and_json_per_image(workspace: dict) -> None:
    out_dir = workspace['root'] / 'out'
    TOOL.main([str(TOY_FVLM), str(workspace['checkpoint']), str(workspace['images'][0].parent),
               '--texts', *VOCABULARY, '--novel', 'zebra', '--out-dir', str(out_dir),
               '--score-thr', '0.1', '--cfg-options', *workspace['cfg_options']])
    stems = [image.stem for image in workspace['images']]
    assert sorted(p.stem for p in (out_dir / TOOL.VIS_DIR).iterdir()) == stems
    assert all(p.suffix == '.png' for p in (out_dir / TOOL.VIS_DIR).iterdir())
    assert sorted(p.name for p in (out_dir / TOOL.PREDS_DIR).iterdir()) == [
        stem + '.json' for stem in stems]

    # The model of the fixture, same weights, same vocabulary: the json is its prediction.
    model = workspace['model']
    _swap(model, VOCABULARY, ('zebra', ))
    for image in workspace['images']:
        record = json.loads((out_dir / TOOL.PREDS_DIR / f'{image.stem}.json').read_text())
        assert record['classes'] == VOCABULARY and record['novel_classes'] == ['zebra']
        assert record['templates'] == TEMPLATE_SET  # from the config's embeddings' sidecar
        expected = inference_detector(model, str(image)).pred_instances
        found = record['detections']
        assert len(found) == len(expected) > 0
        assert torch.allclose(torch.tensor([d['bbox'] for d in found]), expected.bboxes,
                              atol=ATOL)
        assert torch.allclose(torch.tensor([d['score'] for d in found]), expected.scores,
                              atol=ATOL)
        assert [d['label'] for d in found] == expected.labels.tolist()
        assert [d['label_name'] for d in found] == [VOCABULARY[i] for i in expected.labels]
        assert [d['novel'] for d in found] == [VOCABULARY[i] == 'zebra' for i in expected.labels]


def test_permuted_vocabulary_permutes_labels(workspace: dict) -> None:
    model, image = workspace['model'], str(workspace['images'][0])
    templates = get_prompt_set(TEMPLATE_SET)
    embeddings = embed_vocabulary(model, VOCABULARY, templates)
    set_vocabulary(model, VOCABULARY, embeddings)
    before = _named(inference_detector(model, image), VOCABULARY)
    order = [2, 0, 3, 1]
    permuted = [VOCABULARY[i] for i in order]
    # Each name is embedded on its own: the rows follow the names.
    assert torch.allclose(embed_vocabulary(model, permuted, templates), embeddings[order],
                          atol=ATOL)
    set_vocabulary(model, permuted, embeddings[order])
    result = inference_detector(model, image)
    after = _named(result, permuted)
    assert model.dataset_meta['classes'] == tuple(permuted)
    # The same (name, box, score) detections, whose label indices are the names' new ones.
    assert len(before) == len(after) > 0
    unmatched = list(after)
    for name, bbox, score in before:
        match = next(i for i, (other, other_box, other_score) in enumerate(unmatched)
                     if other == name and abs(other_score - score) < ATOL
                     and max(abs(a - b) for a, b in zip(bbox, other_box)) < TIED_BOX_TOL)
        unmatched.pop(match)
    assert not unmatched
    # Every name moved (a derangement): the labels changed with them.
    assert all(permuted.index(name) != index for index, name in enumerate(VOCABULARY))
    assert set(result.pred_instances.labels.tolist()) == {
        permuted.index(name) for name, _, _ in before}


@pytest.mark.parametrize('size', [1, 6])
def test_number_of_classes_follows_vocabulary(workspace: dict, size: int) -> None:
    model = workspace['model']
    names = [f'class {i}' for i in range(size)]
    _swap(model, names, (names[-1], ))
    assert model.roi_head.bbox_head.num_classes == size
    assert model.roi_head.classifier.class_embeddings.shape == (size, EMBED_DIM)
    assert model.roi_head.classifier.novel_mask.tolist() == [False] * (size - 1) + [True]
    assert len(model.roi_head.bbox_head.loss_cls.class_weight) == size + 1
    pred = inference_detector(model, str(workspace['images'][0])).pred_instances
    assert len(pred) > 0 and pred.labels.max() < size


def test_novel_names_take_the_novel_fusion(workspace: dict) -> None:
    """Each detection's score is the hand-computed F-VLM fusion of its RoI's detection and VLM
    probabilities, with the novel weight for the --novel names and the base one otherwise."""
    model, image = workspace['model'], str(workspace['images'][0])
    novel = ('zebra', 'blue square')
    _swap(model, VOCABULARY, novel)
    detected = inference_detector(model, image).pred_instances

    # Every proposal's box and probabilities, as FVLM.predict computes them before the fusion.
    data = Compose(get_test_pipeline_cfg(model.cfg))(dict(img_path=image, img_id=0))
    data = model.data_preprocessor(dict(inputs=[data['inputs']],
                                        data_samples=[data['data_samples']]), False)
    with torch.no_grad():
        features = model.backbone(data['inputs'], with_vlm=True)
        x = model.neck(features.pyramid)
        proposals = model.rpn_head.predict(x, data['data_samples'], rescale=False)
        rois = StandardRoIHead.predict_bbox(
            model.roi_head, x, [data['data_samples'][0].metainfo], proposals,
            rcnn_test_cfg=None)[0]
        vlm = F.normalize(model.backbone.vlm_region_embeddings(
            features.vlm, bbox2roi([p.bboxes for p in proposals])), dim=-1)
        classes = F.normalize(model.roi_head.classifier.class_and_background_embeddings(),
                              dim=-1)
        vlm_probs = (model.roi_head.vlm_logit_scale * vlm @ classes.T).softmax(dim=-1)

    alpha, beta = model.roi_head.base_alpha, model.roi_head.novel_beta
    assert alpha != beta
    is_novel = [name in novel for name in VOCABULARY]
    assert any(is_novel[label] for label in detected.labels.tolist())
    for bbox, score, label in zip(detected.bboxes, detected.scores, detected.labels.tolist()):
        roi = (rois.bboxes - bbox).abs().sum(dim=1).argmin()
        det, vlm_score = rois.scores[roi, label], vlm_probs[roi, label]
        weight = beta if is_novel[label] else alpha
        assert score.item() == pytest.approx(
            (det**(1 - weight) * vlm_score**weight).item(), rel=1e-4)


@pytest.mark.parametrize('args, field', [
    (['--texts', ' '], '--texts'),
    (['--texts', 'a', 'a'], '--texts'),
    (['--texts', 'a', 'b', '--novel', 'c'], '--novel'),
    (['--texts-file', 'missing.txt'], '--texts-file'),
    (['--texts', 'a', '--score-thr', '2'], '--score-thr'),
])
def test_bad_arguments_name_the_field(workspace: dict, args: List[str], field: str,
                                      capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        TOOL.parse_args(['config.py', 'model.pth', str(workspace['images'][0]), *args])
    assert f'error: {field}:' in capsys.readouterr().err


def test_empty_vocabulary_file_and_missing_image_are_named(
        workspace: dict, capsys: pytest.CaptureFixture) -> None:
    empty = workspace['root'] / 'empty.txt'
    empty.write_text('\n')
    with pytest.raises(SystemExit):
        TOOL.parse_args(['config.py', 'model.pth', str(workspace['images'][0]),
                         '--texts-file', str(empty)])
    assert f'--texts-file: {empty}: expected at least one class name' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        TOOL.parse_args(['config.py', 'model.pth', 'missing.png', '--texts', 'a'])
    assert 'inputs: missing.png is not an image file' in capsys.readouterr().err


def test_set_vocabulary_errors_name_the_argument(workspace: dict) -> None:
    model = workspace['model']
    embeddings = torch.ones(2, EMBED_DIM)
    with pytest.raises(ValueError, match='names: expected at least one'):
        set_vocabulary(model, [], embeddings[:0])
    with pytest.raises(ValueError, match='novel:'):
        set_vocabulary(model, ['a', 'b'], embeddings, ['c'])
    with pytest.raises(ValueError, match=rf'embeddings: expected shape \(2, {EMBED_DIM}\)'):
        set_vocabulary(model, ['a', 'b'], torch.ones(2, EMBED_DIM + 1))
    with pytest.raises(ValueError, match='model: a Linear .*only FVLM'):
        set_vocabulary(nn.Linear(1, 1), ['a', 'b'], embeddings)
