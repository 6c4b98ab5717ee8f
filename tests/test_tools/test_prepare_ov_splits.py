# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/dataset_converters/prepare_ov_{lvis,coco}.py`` as subprocesses, on small fixtures."""
import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import List, Sequence, Tuple

import pytest
import torch
from conftest import REPO_ROOT, python_tool, run_tool
from mmdet.datasets import CocoDataset, LVISV1Dataset
from mmdet.datasets.api_wrappers import COCO, COCOeval

from mmclim.datasets.ov_splits import OV_COCO_BASE_CLASSES, OV_COCO_CLASSES, OV_COCO_NOVEL_CLASSES
from mmclim.evaluation.metrics.ov_coco_metric import OVCocoSplitMetric

LVIS_TOOL = 'dataset_converters/prepare_ov_lvis.py'
COCO_TOOL = 'dataset_converters/prepare_ov_coco.py'
IMAGE_SIZE = 64
BOX = [4, 4, 20, 20]  # x, y, w, h of every fixture annotation

# LVIS: (id, name, frequency); ids out of the names' order and not contiguous.
LVIS_CATEGORIES = [(3, 'apple', 'f'), (4, 'banjo', 'r'), (8, 'cab', 'c'), (9, 'dalmatian', 'r'),
                   (12, 'egg', 'f')]
LVIS_BASE_IDS, LVIS_NOVEL_IDS = {3, 8, 12}, {4, 9}
# (image id, category id) of each LVIS annotation; image 23 has only novel ones, 24 none.
LVIS_ANNOTATIONS = [(21, 3), (21, 4), (21, 12), (22, 8), (22, 8), (22, 9), (23, 4), (23, 9)]
LVIS_IMAGE_IDS = (21, 22, 23, 24)

# COCO: the 80 COCO 2017 names with ids 1000, 1007, ...: not contiguous nor from 1.
COCO_NAMES = CocoDataset.METAINFO['classes']
COCO_IDS = {name: 1000 + 7 * index for index, name in enumerate(COCO_NAMES)}
# (image id, class name) of each annotation. Train: 1 base + novel + unused, 2 novel only,
# 3 base only, 4 unused only, 5 none. Val: 101 base + novel, 102 novel, 103 unused, 104 base,
# 105 none.
COCO_TRAIN = [(1, 'person'), (1, 'cat'), (1, 'traffic light'), (2, 'bus'), (3, 'car'),
              (3, 'car'), (4, 'traffic light')]
COCO_VAL = [(101, 'person'), (101, 'airplane'), (102, 'sink'), (103, 'hair drier'), (104, 'car')]
COCO_TRAIN_IMAGES, COCO_VAL_IMAGES = (1, 2, 3, 4, 5), (101, 102, 103, 104, 105)


def _instances(image_ids: Sequence[int], annotations: Sequence[Tuple[int, int]],
               categories: List[dict]) -> dict:
    """An instances file with ``annotations`` as (image id, category id) pairs."""
    images = [dict(id=image_id, width=IMAGE_SIZE, height=IMAGE_SIZE, file_name=f'{image_id}.jpg',
                   coco_url=f'http://images.cocodataset.org/train2017/{image_id}.jpg')
              for image_id in image_ids]
    anns = [dict(id=ann_id, image_id=image_id, category_id=cat_id, bbox=BOX,
                 area=BOX[2] * BOX[3], iscrowd=0)
            for ann_id, (image_id, cat_id) in enumerate(annotations, start=1)]
    return dict(info=dict(description='fixture'), images=images, annotations=anns,
                categories=categories)


def _lvis_json() -> dict:
    data = _instances(LVIS_IMAGE_IDS, LVIS_ANNOTATIONS,
                      [dict(id=cat_id, name=name, frequency=frequency, synonyms=[name])
                       for cat_id, name, frequency in LVIS_CATEGORIES])
    for image in data['images']:
        image['neg_category_ids'] = [4, 8]
        image['not_exhaustive_category_ids'] = [9, 12]
    return data


def _coco_json(image_ids: Sequence[int], annotations: Sequence[Tuple[int, str]],
               names: Sequence[str] = COCO_NAMES) -> dict:
    categories = [dict(id=COCO_IDS.get(name, 1), name=name, supercategory='thing')
                  for name in names]
    return _instances(image_ids, [(image_id, COCO_IDS[name]) for image_id, name in annotations],
                      categories)


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _run_failing(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    return proc


def _tool_module(name: str) -> ModuleType:
    """A tool as a module, to run its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(Path(name).stem, REPO_ROOT / 'tools' / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tool_error(tool: str, args: Sequence[str]) -> str:
    """The message with which the tool's ``main(args)`` exits."""
    with pytest.raises(SystemExit) as exit_info:
        _tool_module(tool).main(list(args))
    return str(exit_info.value.code)


@pytest.mark.slow
def test_ov_lvis(tmp_path: Path) -> None:
    ann_file = _write(tmp_path / 'lvis_v1_train.json', _lvis_json())
    proc = run_tool(python_tool(LVIS_TOOL, str(ann_file)), cwd=tmp_path)
    assert 'classes: 3 base (frequency f/c), 2 novel (frequency r)' in proc.stdout
    assert 'annotations: 4 base kept, 4 novel dropped' in proc.stdout
    assert 'LVIS v1 has 866 and 337' in proc.stderr  # the fixture is no LVIS v1

    out = _load(tmp_path / 'lvis_v1_train_ov_base.json')
    source = _lvis_json()
    assert [image['id'] for image in out['images']] == list(LVIS_IMAGE_IDS)
    assert out['categories'] == [dict(category, image_count=count, instance_count=instances)
                                 for category, count, instances in zip(
                                     source['categories'], (1, 0, 1, 0, 1), (1, 0, 2, 0, 1))]
    assert not {ann['category_id'] for ann in out['annotations']} & LVIS_NOVEL_IDS
    assert [ann for ann in source['annotations'] if ann['category_id'] in LVIS_BASE_IDS] \
        == out['annotations']
    for image in out['images']:
        assert image['neg_category_ids'] == [8]
        assert image['not_exhaustive_category_ids'] == [12]
    assert out['info'] == source['info']

    split = _load(tmp_path / 'lvis_v1_train_ov_split.json')
    assert split['base_category_ids'] == [3, 8, 12]
    assert split['novel_classes'] == ['banjo', 'dalmatian']

    # mmdet reads it as LVIS v1 (labelling the categories in id order); every label is base.
    dataset = LVISV1Dataset(ann_file=str(tmp_path / 'lvis_v1_train_ov_base.json'),
                            data_root=str(tmp_path), data_prefix=dict(img=''), pipeline=[])
    assert dataset.cat_ids == [cat_id for cat_id, _, _ in LVIS_CATEGORIES]
    name_of = {cat_id: name for cat_id, name, _ in LVIS_CATEGORIES}
    names = [name_of[dataset.cat_ids[instance['bbox_label']]]
             for index in range(len(dataset))
             for instance in dataset.get_data_info(index)['instances']]
    assert sorted(names) == ['apple', 'cab', 'cab', 'egg']


@pytest.mark.slow
def test_ov_lvis_rejects_a_coco_file(tmp_path: Path) -> None:
    coco = _write(tmp_path / 'instances_train2017.json', _coco_json(COCO_TRAIN_IMAGES, COCO_TRAIN))
    proc = _run_failing(python_tool(LVIS_TOOL, str(coco)), cwd=tmp_path)
    assert 'instances_train2017.json: categories[0]' in proc.stderr
    assert "no 'frequency' field: not an LVIS annotation file" in proc.stderr
    assert not list(tmp_path.glob('*_ov_*.json'))


def test_ov_lvis_input_errors(tmp_path: Path) -> None:
    no_annotations = _lvis_json()
    del no_annotations['annotations']
    ann_file = _write(tmp_path / 'lvis.json', no_annotations)
    message = _tool_error(LVIS_TOOL, [str(ann_file)])
    assert "lvis.json: not a COCO/LVIS instances file: the fields ['annotations']" in message
    bad_frequency = _lvis_json()
    bad_frequency['categories'][2]['frequency'] = 'x'
    ann_file = _write(tmp_path / 'lvis.json', bad_frequency)
    message = _tool_error(LVIS_TOOL, [str(ann_file)])
    assert "lvis.json: categories[2] (id 8): frequency is 'x'" in message
    assert not list(tmp_path.glob('*_ov_*.json'))


@pytest.fixture(scope='module')
def ov_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OV-COCO files of the fixture, made by the tool, in ``<tmp>/out``."""
    tmp_path = tmp_path_factory.mktemp('ov_coco')
    train = _write(tmp_path / 'instances_train2017.json',
                   _coco_json(COCO_TRAIN_IMAGES, COCO_TRAIN))
    val = _write(tmp_path / 'instances_val2017.json', _coco_json(COCO_VAL_IMAGES, COCO_VAL))
    proc = run_tool(python_tool(COCO_TOOL, str(train), str(val), '--out-dir', 'out'),
                    cwd=tmp_path)
    assert 'classes: 48 base, 17 novel, 15 unused' in proc.stdout
    assert ('instances_train2017_ov_base.json: 2 of 5 images, 3 of 7 annotations kept (3 base, '
            '0 novel; 4 dropped), 65 categories') in proc.stdout
    assert ('instances_val2017_ov_all.json: 3 of 5 images, 4 of 5 annotations kept (2 base, '
            '2 novel; 1 dropped), 65 categories') in proc.stdout
    return tmp_path / 'out'


def _image_and_names(data: dict) -> List[Tuple[int, str]]:
    names = {category['id']: category['name'] for category in data['categories']}
    return [(ann['image_id'], names[ann['category_id']]) for ann in data['annotations']]


@pytest.mark.slow
def test_ov_coco_files(ov_coco: Path) -> None:
    expected_categories = [dict(id=COCO_IDS[name], name=name, supercategory='thing')
                           for name in OV_COCO_CLASSES]
    train = _load(ov_coco / 'instances_train2017_ov_base.json')
    assert train['categories'] == expected_categories
    assert _image_and_names(train) == [(1, 'person'), (3, 'car'), (3, 'car')]
    assert [image['id'] for image in train['images']] == [1, 3]

    expected_val = dict(all=[(101, 'person'), (101, 'airplane'), (102, 'sink'), (104, 'car')],
                        base=[(101, 'person'), (104, 'car')],
                        novel=[(101, 'airplane'), (102, 'sink')])
    for subset, annotations in expected_val.items():
        val = _load(ov_coco / f'instances_val2017_ov_{subset}.json')
        assert val['categories'] == expected_categories
        assert _image_and_names(val) == annotations
        assert [image['id'] for image in val['images']] == [101, 102, 104]

    split = _load(ov_coco / 'ov_coco_split.json')
    assert split['base_classes'] == list(OV_COCO_BASE_CLASSES)
    assert split['novel_classes'] == list(OV_COCO_NOVEL_CLASSES)
    assert split['novel_category_ids'] == [COCO_IDS[name] for name in OV_COCO_NOVEL_CLASSES]


@pytest.mark.slow
def test_ov_coco_loads_in_mmdet(ov_coco: Path) -> None:
    dataset = CocoDataset(ann_file=str(ov_coco / 'instances_val2017_ov_all.json'),
                          data_root=str(ov_coco), data_prefix=dict(img=''),
                          metainfo=dict(classes=OV_COCO_CLASSES), pipeline=[], test_mode=True)
    infos = [dataset.get_data_info(index) for index in range(len(dataset))]
    found = [(info['img_id'], OV_COCO_CLASSES[instance['bbox_label']])
             for info in infos for instance in info['instances']]
    assert found == [(101, 'person'), (101, 'airplane'), (102, 'sink'), (104, 'car')]
    base_only = CocoDataset(ann_file=str(ov_coco / 'instances_train2017_ov_base.json'),
                            data_root=str(ov_coco), data_prefix=dict(img=''),
                            metainfo=dict(classes=OV_COCO_BASE_CLASSES), pipeline=[])
    assert base_only.cat_ids == [COCO_IDS[name] for name in OV_COCO_BASE_CLASSES]
    assert len(base_only) == 2


def test_keep_all_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = _write(tmp_path / 'train.json', _coco_json(COCO_TRAIN_IMAGES, COCO_TRAIN))
    val = _write(tmp_path / 'val.json', _coco_json(COCO_VAL_IMAGES, COCO_VAL))
    _tool_module(COCO_TOOL).main([str(train), str(val), '--keep-all-images'])
    assert 'train_ov_base.json: 5 of 5 images, 3 of 7 annotations kept' in capsys.readouterr().out
    assert len(_load(tmp_path / 'train_ov_base.json')['images']) == len(COCO_TRAIN_IMAGES)
    for subset in ('all', 'base', 'novel'):
        val_images = _load(tmp_path / f'val_ov_{subset}.json')['images']
        assert [image['id'] for image in val_images] == list(COCO_VAL_IMAGES)


@pytest.mark.slow
def test_novel_ap50_of_the_split_files_agree(ov_coco: Path) -> None:
    """Novel AP50 of ``OVCocoSplitMetric`` on the all-65 file is COCO's AP50 on the novel file."""
    # (image id, class name, box x1 y1 x2 y2, score): airplane found after a false sink.
    detections = [(101, 'airplane', (4, 4, 24, 24), 0.8), (104, 'sink', (4, 4, 24, 24), 0.9),
                  (101, 'person', (4, 4, 24, 24), 0.7), (102, 'sink', (30, 30, 60, 60), 0.5)]
    metric = OVCocoSplitMetric(split_file=str(ov_coco / 'ov_coco_split.json'),
                               ann_file=str(ov_coco / 'instances_val2017_ov_all.json'))
    metric.dataset_meta = dict(classes=OV_COCO_CLASSES)
    for image_id in (101, 102, 104):
        dets = [det for det in detections if det[0] == image_id]
        metric.process({}, [dict(img_id=image_id, ori_shape=(IMAGE_SIZE, IMAGE_SIZE),
                                 pred_instances=dict(
                                     bboxes=torch.tensor([det[2] for det in dets],
                                                         dtype=torch.float),
                                     scores=torch.tensor([det[3] for det in dets]),
                                     labels=torch.tensor([OV_COCO_CLASSES.index(det[1])
                                                          for det in dets])))])
    results = metric.evaluate(3)

    coco_gt = COCO(str(ov_coco / 'instances_val2017_ov_novel.json'))
    novel = [dict(image_id=image_id, category_id=COCO_IDS[name], score=score,
                  bbox=[x1, y1, x2 - x1, y2 - y1])
             for image_id, name, (x1, y1, x2, y2), score in detections
             if name in OV_COCO_NOVEL_CLASSES]
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(novel), 'bbox')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert 0 < coco_eval.stats[1] < 1
    assert results['coco/bbox_AP50_novel'] == round(coco_eval.stats[1], 3)
    assert results['coco/bbox_AP50_base'] == 0.5  # the car is missed


@pytest.mark.slow
def test_ov_coco_names_missing(tmp_path: Path) -> None:
    train = _write(tmp_path / 'train.json', _coco_json(COCO_TRAIN_IMAGES, COCO_TRAIN))
    renamed = [{'tv': 'tvmonitor'}.get(name, name) for name in COCO_NAMES if name != 'cat']
    val = _write(tmp_path / 'val.json', _coco_json(COCO_VAL_IMAGES, COCO_VAL, renamed))
    proc = _run_failing(python_tool(COCO_TOOL, str(train), str(val)), cwd=tmp_path)
    assert "val.json: the categories lack the class names ['tv', 'cat']" in proc.stderr
    assert not list(tmp_path.glob('*_ov_*.json'))


def test_ov_coco_ids_differ(tmp_path: Path) -> None:
    train = _write(tmp_path / 'train.json', _coco_json(COCO_TRAIN_IMAGES, COCO_TRAIN))
    moved = _coco_json(COCO_VAL_IMAGES, COCO_VAL)
    next(cat for cat in moved['categories'] if cat['name'] == 'cat')['id'] = 1
    val = _write(tmp_path / 'val.json', moved)
    message = _tool_error(COCO_TOOL, [str(train), str(val)])
    assert 'train.json and' in message and 'val.json give the OV-COCO classes different' in message
    assert not list(tmp_path.glob('*_ov_*.json'))
