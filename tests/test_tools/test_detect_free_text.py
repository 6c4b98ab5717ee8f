# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/demo/detect_free_text.py`` and :mod:`mmclim.apis.vocabulary` on the toy F-VLM, Detic
and BARON configs (random weights, a random toy CLIP), in-process.

Detic is its stage-1 toy (no caption branch, so no text tower: the CLIP comes from
``--text-model``), BARON its stage-1 toy with the OV-COCO recipe's ``'last_block'`` classifier
(``configs/baron/baron_r50-caffe-c4_45k_ov-coco-caption.py``); both have class embeddings whose
sidecar says they are ``'last_block'`` outputs. The cascade of the OV-LVIS Detic is built shrunk
as its detector tests do."""
import json
from pathlib import Path
from typing import Dict, List, Tuple

import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, load_tool
from mmdet.apis import inference_detector, init_detector
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import get_test_pipeline_cfg
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

from mmclim.apis import embed_vocabulary, set_vocabulary
from mmclim.datasets import class_names, generate_shape_scenes, write_base_only
from mmclim.datasets.toy_shapes import TOY_SPLIT_FILE
from mmclim.evaluation.metrics import get_prompt_set
from mmclim.models.backbones import OpenCLIPRegion, save_clip_checkpoint
from mmclim.models.detectors import FVLM
from mmclim.structures import read_embedding_sidecar, save_class_embeddings
from tests.test_models.test_detectors.test_detic import shrunk as shrunk_detic

TOY_FVLM = REPO_ROOT / 'configs' / 'fvlm' / 'fvlm_toy-vit_toy-shapes.py'
TOY_DETIC = REPO_ROOT / 'configs' / 'detic' / 'toy' / 'faster-rcnn_r18-fpn_toy-shapes-base.py'
TOY_BARON = REPO_ROOT / 'configs' / 'baron' / 'toy' / 'faster-rcnn_r18-fpn_toy-shapes-base.py'
LVIS_CASCADE = 'detic_centernet2_r50-fpn_45k_ov-lvis-cc3m.py'  # under configs/detic
TOY_CLIP = 'mmclim-toy-vit'
EMBED_DIM = 64  # of mmclim-toy-vit
WIDTH = 96  # of mmclim-toy-vit's text tower: the size of its 'last_block' output
# The class embeddings of the caption detectors: 'last_block' outputs (sidecar), WIDTH wide.
LAST_BLOCK = 'last_block'
DETECTORS = ['fvlm', 'detic', 'baron']
TEMPLATE_SET = 'single'  # the config's embeddings (tools/demo.sh), recorded in their sidecar
NUM_IMAGES = 2
IMAGE_SIZE = 128  # the config's scene size: boxes are in input pixels (scale factor 1)
VOCABULARY = ['red circle', 'zebra', 'blue square', 'yellow diamond']
ATOL = 1e-5
# Significant digits of the boxes that key the detections of two runs.
BOX_DECIMALS = 3

TOOL = load_tool('demo/detect_free_text.py')


def _save_checkpoint(model: nn.Module, path: Path) -> Path:
    """The model's weights as a checkpoint whose meta names the 16 toy classes."""
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=tuple(class_names())))), path)
    return path


def _embeddings_file(path: Path, size: int, text_output: str) -> str:
    """Random unit rows for the 16 toy classes, made "by" the toy CLIP's ``text_output``."""
    rows = torch.randn(len(class_names()), size, generator=torch.Generator().manual_seed(0))
    save_class_embeddings(str(path), F.normalize(rows, dim=-1), TOY_CLIP,
                          {TOOL.TEMPLATE_SET_KEY: TEMPLATE_SET, 'text_output': text_output})
    return str(path)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """Toy scenes, the config's 16 class embeddings (random) and split, a random toy F-VLM
    saved as a checkpoint, and that model built once."""
    root = tmp_path_factory.mktemp('free_text')
    data = root / 'data' / 'toy_shapes'
    ann_file = generate_shape_scenes(str(data), 'val', NUM_IMAGES, image_size=IMAGE_SIZE, seed=1)
    write_base_only(ann_file)
    embeddings = _embeddings_file(root / 'toy_classes.npy', EMBED_DIM, 'projection')
    last_block = _embeddings_file(root / 'toy_classes_last_block.npy', WIDTH, LAST_BLOCK)
    split_file = str(data / 'annotations' / TOY_SPLIT_FILE)
    options = {'model.backbone.pretrained': None,  # random frozen toy CLIP
               'model.roi_head.bbox_head.class_embeddings': embeddings,
               'model.roi_head.bbox_head.split_file': split_file}
    torch.manual_seed(0)
    model = init_detector(str(TOY_FVLM), None, device='cpu', cfg_options=options)
    return dict(root=root, model=model, checkpoint=_save_checkpoint(model, root / 'fvlm.pth'),
                images=sorted((data / 'val').glob('*.png')), last_block=last_block,
                split_file=split_file, config=TOY_FVLM, tower=None,
                cfg_options=[f'{key}={value}' for key, value in options.items()])


def _build(workspace: dict, name: str, config: Path, options: Dict[str, str], **extra) -> dict:
    """A toy detector of ``config`` with random weights, saved as the checkpoint ``name``."""
    torch.manual_seed(0)
    model = init_detector(str(config), None, device='cpu', cfg_options=options)
    return dict(extra, model=model, config=config,
                checkpoint=_save_checkpoint(model, workspace['root'] / f'{name}.pth'),
                cfg_options=[f'{key}={value}' for key, value in options.items()])


@pytest.fixture(scope='module')
def clip_file(workspace: dict) -> Path:
    """A random toy CLIP as a local open_clip checkpoint: the caption detectors' text tower."""
    torch.manual_seed(0)
    path = workspace['root'] / 'toy_clip.pt'
    save_clip_checkpoint(open_clip.create_model(TOY_CLIP, pretrained=None), str(path),
                         dtype=torch.float32)
    return path


@pytest.fixture(scope='module')
def fvlm(workspace: dict) -> dict:
    """The toy F-VLM (its text tower: the backbone's CLIP)."""
    return workspace


@pytest.fixture(scope='module')
def detic(workspace: dict, clip_file: Path) -> dict:
    """The toy Detic of stage 1: no caption branch, no text tower; ``tower`` is the CLIP that
    ``--text-model`` (``text_model``) names. Its class embeddings are 'last_block' outputs: its
    classifier cannot tell (it projects to their size), only their sidecar says."""
    options = {'model.roi_head.bbox_head.class_embeddings': workspace['last_block'],
               'model.roi_head.bbox_head.split_file': workspace['split_file']}
    return _build(workspace, 'detic', TOY_DETIC, options,
                  tower=OpenCLIPRegion(TOY_CLIP, pretrained=str(clip_file)).eval(),
                  text_model=f'{TOY_CLIP}:{clip_file}')


@pytest.fixture(scope='module')
def baron(workspace: dict, clip_file: Path) -> dict:
    """The toy BARON of stage 1 with the OV-COCO recipe's 'last_block' classifier and class
    embeddings whose sidecar says so; its text tower is its ``text_encoder``."""
    options = {'model.text_encoder.pretrained': str(clip_file),
               'model.roi_head.bbox_head.text_output': LAST_BLOCK,
               'model.roi_head.bbox_head.class_embeddings': workspace['last_block'],
               'model.roi_head.bbox_head.split_file': workspace['split_file']}
    return _build(workspace, 'baron', TOY_BARON, options, tower=None)


def _embed(detector: dict, names: List[str]) -> torch.Tensor:
    """``names`` embedded as the tool does: by the model's text tower (or the fixture's
    ``tower``), with the text output of the model's class embeddings."""
    model = detector['model']
    text_output = None if isinstance(model, FVLM) else LAST_BLOCK
    return embed_vocabulary(model, names, get_prompt_set(TEMPLATE_SET), detector['tower'],
                            text_output)


def _swap(detector: dict, names: List[str], novel: Tuple[str, ...] = ()) -> None:
    """Swap in ``names`` as the tool does."""
    set_vocabulary(detector['model'], names, _embed(detector, names), novel)


def _named(result: DetDataSample, names: List[str]) -> List[Tuple[str, List[float], float]]:
    """The (label name, box, score) of each detection."""
    pred = result.pred_instances
    return [(names[label], bbox, score) for bbox, score, label in zip(
        pred.bboxes.tolist(), pred.scores.tolist(), pred.labels.tolist())]


def _assert_record_is_prediction(record: dict, expected: InstanceData, novel: str) -> None:
    """The tool's json detections are the model's prediction ``expected`` on VOCABULARY with
    the novel name ``novel``."""
    found = record['detections']
    assert len(found) == len(expected) > 0
    assert torch.allclose(torch.tensor([d['bbox'] for d in found]), expected.bboxes, atol=ATOL)
    assert torch.allclose(torch.tensor([d['score'] for d in found]), expected.scores, atol=ATOL)
    assert [d['label'] for d in found] == expected.labels.tolist()
    assert [d['label_name'] for d in found] == [VOCABULARY[i] for i in expected.labels]
    assert [d['novel'] for d in found] == [VOCABULARY[i] == novel for i in expected.labels]


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
    _swap(workspace, VOCABULARY, ('zebra', ))
    for image in workspace['images']:
        record = json.loads((out_dir / TOOL.PREDS_DIR / f'{image.stem}.json').read_text())
        assert record['classes'] == VOCABULARY and record['novel_classes'] == ['zebra']
        assert record['templates'] == TEMPLATE_SET  # from the config's embeddings' sidecar
        _assert_record_is_prediction(
            record, inference_detector(model, str(image)).pred_instances, 'zebra')


def test_tool_detic_takes_text_model_and_sidecar_output(detic: dict, workspace: dict) -> None:
    """A Detic without text tower embeds with the CLIP of --text-model and the text output of
    its embeddings' sidecar; the json is the prediction of the model swapped so."""
    image, out_dir = workspace['images'][0], workspace['root'] / 'out_detic'
    TOOL.main([str(detic['config']), str(detic['checkpoint']), str(image), '--texts', *VOCABULARY,
               '--novel', 'zebra', '--out-dir', str(out_dir), '--text-model', detic['text_model'],
               '--cfg-options', *detic['cfg_options']])
    record = json.loads((out_dir / TOOL.PREDS_DIR / f'{image.stem}.json').read_text())
    assert record['text_output'] == LAST_BLOCK and record['templates'] == TEMPLATE_SET
    model = detic['model']
    set_vocabulary(model, VOCABULARY, embed_vocabulary(
        model, VOCABULARY, get_prompt_set(TEMPLATE_SET), detic['tower'], LAST_BLOCK), ['zebra'])
    _assert_record_is_prediction(record, inference_detector(model, str(image)).pred_instances,
                                 'zebra')


def test_tool_names_text_model(detic: dict, clip_file: Path, workspace: dict) -> None:
    """A Detic without text tower and no --text-model; a --text-model that did not make the
    config's class embeddings (their sidecar)."""
    with pytest.raises(SystemExit, match='--text-model: the DeticDetector has no text tower'):
        TOOL.main([str(detic['config']), str(detic['checkpoint']), str(workspace['images'][0]),
                   '--texts', 'a', '--out-dir', str(workspace['root'] / 'unused'),
                   '--cfg-options', *detic['cfg_options']])
    with pytest.raises(SystemExit, match="--text-model: .* made with the text tower of "
                       f"'{TOY_CLIP}' .*, got 'mmclim-tiny-vit'"):
        TOOL.load_text_model(('mmclim-tiny-vit', str(clip_file)),
                             read_embedding_sidecar(workspace['last_block']), 'cpu')


@pytest.mark.parametrize('name', DETECTORS)
def test_permuted_vocabulary_permutes_labels(request: pytest.FixtureRequest, workspace: dict,
                                             name: str) -> None:
    detector, image = request.getfixturevalue(name), str(workspace['images'][0])
    model = detector['model']
    embeddings = _embed(detector, VOCABULARY)
    order = [2, 0, 3, 1]
    permuted = [VOCABULARY[i] for i in order]
    # Each name is embedded on its own: the rows follow the names.
    assert torch.allclose(_embed(detector, permuted), embeddings[order], atol=ATOL)
    # Without NMS and its top-k every (RoI, class) score above the threshold is a detection,
    # so that ties (the random caption detectors' sigmoid scores saturate) cannot change
    # which are kept.
    test_cfg = model.roi_head.test_cfg
    nms, max_per_img = test_cfg.nms, test_cfg.max_per_img
    test_cfg.nms, test_cfg.max_per_img = None, -1
    try:
        set_vocabulary(model, VOCABULARY, embeddings)
        before = _named(inference_detector(model, image), VOCABULARY)
        set_vocabulary(model, permuted, embeddings[order])
        result = inference_detector(model, image)
    finally:
        test_cfg.nms, test_cfg.max_per_img = nms, max_per_img
    after = _named(result, permuted)
    assert model.dataset_meta['classes'] == tuple(permuted)
    # The same (name, box, score) detections, whose label indices are the names' new ones.

    def key(detection: Tuple[str, List[float], float]) -> tuple:
        return detection[0], tuple(round(x, BOX_DECIMALS) for x in detection[1])

    before, after = sorted(before, key=key), sorted(after, key=key)
    assert len(before) == len(after) > 0
    assert [key(d) for d in before] == [key(d) for d in after]
    assert torch.allclose(torch.tensor([d[2] for d in before]), torch.tensor([d[2] for d in after]),
                          atol=ATOL)
    # Every name moved (a derangement): the labels changed with them.
    assert all(permuted.index(name) != index for index, name in enumerate(VOCABULARY))
    assert set(result.pred_instances.labels.tolist()) == {
        permuted.index(name) for name, _, _ in before}


@pytest.mark.parametrize('name', DETECTORS)
@pytest.mark.parametrize('size', [1, 6])
def test_number_of_classes_follows_vocabulary(request: pytest.FixtureRequest, workspace: dict,
                                              name: str, size: int) -> None:
    detector = request.getfixturevalue(name)
    model = detector['model']
    names = [f'class {i}' for i in range(size)]
    _swap(detector, names, (names[-1], ))
    head = model.roi_head.bbox_head  # a single box head in the three toys
    assert head.num_classes == size
    assert head.classifier.class_embeddings.shape == (size,
                                                      EMBED_DIM if name == 'fvlm' else WIDTH)
    assert head.classifier.novel_mask.tolist() == [False] * (size - 1) + [True]
    if name == 'fvlm':  # softmax: 1 per class, then the background's
        assert head.loss_cls.class_weight == [1.0] * size + [head.background_weight]
    else:  # sigmoid: base 1, novel 0 (the toys' novel_class_weight, OV-COCO's)
        assert head.loss_cls.class_weight.tolist() == [1.0] * (size - 1) + [0.0]
    assert model.dataset_meta['classes'] == tuple(names)
    pred = inference_detector(model, str(workspace['images'][0])).pred_instances
    assert len(pred) > 0 and pred.labels.max() < size


def test_baron_embeds_with_its_last_block_output(baron: dict) -> None:
    model = baron['model']
    embeddings = embed_vocabulary(model, VOCABULARY, get_prompt_set(TEMPLATE_SET))
    # The 'single' set by hand, through the BARON's own tower, read after its last block.
    prompts = [f'a photo of a {name}.' for name in VOCABULARY]
    expected = model.text_encoder.encode_text(prompts, output='last_block')
    assert embeddings.shape == (len(VOCABULARY), WIDTH)
    assert model.text_encoder(prompts).shape == (len(VOCABULARY), EMBED_DIM)  # 'projection'
    assert torch.allclose(embeddings, expected, atol=ATOL)
    with pytest.raises(ValueError, match="text_output: 'projection', but the classifier of the "
                       "BaronDetector compares its 'last_block'"):
        embed_vocabulary(model, VOCABULARY, get_prompt_set(TEMPLATE_SET),
                         text_output='projection')


def test_text_tower_errors_name_the_argument(detic: dict, baron: dict) -> None:
    templates = get_prompt_set(TEMPLATE_SET)
    with pytest.raises(ValueError, match='tower: the DeticDetector has no text tower'):
        embed_vocabulary(detic['model'], VOCABULARY, templates)
    # The right tower, the wrong output: its projection is EMBED_DIM wide, not WIDTH.
    with pytest.raises(ValueError, match=f"tower: the 'projection' text output of '{TOY_CLIP}' "
                       f'has {EMBED_DIM} dimensions, .* DeticDetector {WIDTH}'):
        embed_vocabulary(detic['model'], VOCABULARY, templates, detic['tower'])
    with pytest.raises(ValueError, match='tower: the BaronDetector embeds with its own'):
        embed_vocabulary(baron['model'], VOCABULARY, templates, detic['tower'])


def test_every_cascade_stage_takes_the_vocabulary(tmp_path: Path) -> None:
    """The OV-LVIS Detic's three stages: classifiers, class counts, class weights and the
    federated loss's frequencies, which follow the names (the toys above predict with swapped
    heads; this CenterNet2 costs seconds to run)."""
    init_default_scope('mmdet')
    cfg = shrunk_detic(LVIS_CASCADE, tmp_path)
    model = MODELS.build(cfg.model).eval()
    heads = model.roi_head.bbox_head
    assert len(heads) == 3
    probs = heads[0].loss_cls.fed_class_probs.tolist()
    model.dataset_meta = dict(classes=tuple(f'class_{i}' for i in range(len(probs))))
    names = ['class_2', 'class_0', 'zebra']
    embeddings = embed_vocabulary(model, names, get_prompt_set(TEMPLATE_SET))
    set_vocabulary(model, names, embeddings, ['zebra'])
    for head in heads:
        assert head.num_classes == len(names)
        assert torch.allclose(head.classifier.class_embeddings, embeddings, atol=ATOL)
        assert head.classifier.novel_mask.tolist() == [False, False, True]
        assert head.loss_cls.class_weight.tolist() == [1.0, 1.0, head.novel_class_weight]
        # class_2's and class_0's frequencies; zebra has none.
        assert head.loss_cls.fed_class_probs.tolist() == [probs[2], probs[0], 0.0]


def test_novel_names_take_the_novel_fusion(workspace: dict) -> None:
    """Each detection's score is the hand-computed F-VLM fusion of its RoI's detection and VLM
    probabilities, with the novel weight for the --novel names and the base one otherwise."""
    model, image = workspace['model'], str(workspace['images'][0])
    novel = ('zebra', 'blue square')
    _swap(workspace, VOCABULARY, novel)
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
    (['--texts', 'a', '--text-model', TOY_CLIP], '--text-model'),
    (['--texts', 'a', '--text-model', f'{TOY_CLIP}:missing.pt'], '--text-model'),
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
    with pytest.raises(ValueError, match='model: a Linear has no swappable vocabulary; '
                       'expected an FVLM, DeticDetector or BaronDetector'):
        set_vocabulary(nn.Linear(1, 1), ['a', 'b'], embeddings)
