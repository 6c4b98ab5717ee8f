# Copyright (c) mmclim contributors. All rights reserved.
"""``RegionClassificationMetric`` on hand-made scores whose accuracies are known."""
import math
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
from conftest import fork_process, join_process
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import Tensor

from mmclim.evaluation.metrics import RegionClassificationMetric

CLASSES = ('cat', 'dog', 'car')
THINGS = ('cat', 'dog')
STUFF = ('sky', 'grass')
PANOPTIC_META = dict(classes=THINGS + STUFF, thing_classes=THINGS, stuff_classes=STUFF)


def _scores(labels: Sequence[int], ranks: Sequence[int], num_classes: int) -> Tensor:
    """Scores of shape (N, C) in which the ground-truth class of region i has ``ranks[i]``
    classes scored above it (and none tied)."""
    rows = []
    for label, rank in zip(labels, ranks):
        others = [c for c in range(num_classes) if c != label]
        order = others[:rank] + [label] + others[rank:]
        row = torch.empty(num_classes)
        row[order] = torch.arange(num_classes, 0, -1, dtype=torch.float)
        rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, num_classes)


def _sample(labels: Sequence[int], scores: Tensor, img_id: int = 0,
            ignore_flags: Optional[Sequence[bool]] = None) -> dict:
    """A data sample as mmengine's Evaluator hands it to the metric: a ``to_dict`` dict."""
    sample = DetDataSample(metainfo=dict(img_id=img_id))
    sample.gt_instances = InstanceData(labels=torch.tensor(labels, dtype=torch.long))
    if ignore_flags is not None:
        sample.gt_instances.ignore_flags = torch.tensor(ignore_flags)
    sample.pred_region_scores = scores
    return sample.to_dict()


def _evaluate(samples: List[dict], dataset_meta: Optional[dict] = None, **kwargs) -> dict:
    metric = RegionClassificationMetric(**kwargs)
    metric.dataset_meta = dataset_meta
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_overall_and_mean_per_class_accuracy() -> None:
    """Class 0: four regions, all right. Class 1: one region, second best. Class 2: none.

    Overall top-1 is 4 / 5; per class it is (1 + 0) / 2 (class 2, without regions, is not
    averaged). With three classes top-5 is top-3: every region counts.
    """
    samples = [
        _sample([0, 0, 1], _scores([0, 0, 1], [0, 0, 1], 3), img_id=0),
        _sample([], _scores([], [], 3), img_id=1),  # no ground-truth region
        _sample([0, 0], _scores([0, 0], [0, 0], 3), img_id=2),
    ]
    metrics = _evaluate(samples, dict(classes=CLASSES), topk=(5, 1, 2))
    assert metrics == pytest.approx({
        'region_cls/top1': 80.0, 'region_cls/top2': 100.0, 'region_cls/top5': 100.0,
        'region_cls/mean_top1': 50.0, 'region_cls/mean_top2': 100.0,
        'region_cls/mean_top5': 100.0})
    assert list(metrics) == ['region_cls/top1', 'region_cls/top2', 'region_cls/top5',
                             'region_cls/mean_top1', 'region_cls/mean_top2',
                             'region_cls/mean_top5']


def test_topk_beyond_the_number_of_classes_is_top_c() -> None:
    """Ten classes: ranks 0, 4, 5 and 9 are right at top-5 for the first two only."""
    labels, ranks = [3, 7, 0, 9], [0, 4, 5, 9]
    metrics = _evaluate([_sample(labels, _scores(labels, ranks, 10))], prefix='zs')
    assert metrics['zs/top1'] == pytest.approx(25.0)
    assert metrics['zs/top5'] == pytest.approx(50.0)
    assert metrics['zs/mean_top5'] == pytest.approx(50.0)


def test_thing_and_stuff_accuracies() -> None:
    """Things: ranks 0, 0, 2 (top-1 2/3); stuff: ranks 1, 0 (top-1 1/2); all: 3/5.

    Per class (CLIM's macc): top-1 cat 1/1, dog 1/2 (ranks 0, 2), sky 0/1, grass 1/1, so the
    things' mean is (1 + 1/2) / 2 = 75 (not the 2/3 of their regions) and the stuff's
    (0 + 1) / 2 = 50; top-2 dog is still 1/2 (rank 2), sky 1/1: things 75, stuff 100.
    """
    labels, ranks = [0, 1, 1, 2, 3], [0, 0, 2, 1, 0]
    samples = [_sample(labels[:2], _scores(labels[:2], ranks[:2], 4), img_id=0),
               _sample(labels[2:], _scores(labels[2:], ranks[2:], 4), img_id=1)]
    metrics = _evaluate(samples, PANOPTIC_META, topk=(1, 2))
    assert metrics == pytest.approx({
        'region_cls/top1': 60.0, 'region_cls/top2': 80.0,
        # per class: cat 1, dog 1/2, sky 0, grass 1
        'region_cls/mean_top1': 62.5, 'region_cls/mean_top2': 87.5,
        'region_cls/things_top1': 200 / 3, 'region_cls/things_top2': 200 / 3,
        'region_cls/things_mean_top1': 75.0, 'region_cls/things_mean_top2': 75.0,
        'region_cls/stuff_top1': 50.0, 'region_cls/stuff_top2': 100.0,
        'region_cls/stuff_mean_top1': 50.0, 'region_cls/stuff_mean_top2': 100.0})


def test_group_means_skip_classes_without_regions() -> None:
    """Dog has no region: the things' mean is cat's alone, 1/3 (ranks 0, 1, 1), though the
    meta lists dog; sky 1/1 and grass 0/1 average to 50 for the stuff."""
    labels, ranks = [0, 0, 0, 2, 3], [0, 1, 1, 0, 3]
    metrics = _evaluate([_sample(labels, _scores(labels, ranks, 4))], PANOPTIC_META, topk=(1, ))
    assert metrics['region_cls/things_mean_top1'] == pytest.approx(100 / 3)
    assert metrics['region_cls/stuff_mean_top1'] == pytest.approx(50.0)
    assert metrics['region_cls/mean_top1'] == pytest.approx((1 / 3 + 1 + 0) / 3 * 100)


def test_group_without_regions_is_nan() -> None:
    labels = [0, 1]
    metrics = _evaluate([_sample(labels, _scores(labels, [0, 0], 4))], PANOPTIC_META)
    assert metrics['region_cls/things_top1'] == 100.0
    assert metrics['region_cls/things_mean_top1'] == 100.0
    assert math.isnan(metrics['region_cls/stuff_top1'])
    assert math.isnan(metrics['region_cls/stuff_mean_top5'])
    empty = _evaluate([_sample([], torch.zeros(0, 0))], dict(classes=CLASSES))
    assert all(math.isnan(value) for value in empty.values()) and len(empty) == 4


def test_ties_with_the_ground_truth_count_as_errors() -> None:
    scores = torch.tensor([[0., 0., 0.], [2., 2., 1.], [5., 1., 5.]])
    metrics = _evaluate([_sample([0, 1, 2], scores)], topk=(1, 2))
    # Region 0: two classes tie with it (rank 2); regions 1 and 2: one (rank 1).
    assert metrics['region_cls/top1'] == 0.0
    assert metrics['region_cls/top2'] == pytest.approx(200 / 3)


def test_ignore_flagged_regions_are_left_out() -> None:
    labels = [0, 1, 2]
    scores = _scores(labels, [0, 2, 0], 3)  # the flagged region 1 is wrong
    metrics = _evaluate([_sample(labels, scores, ignore_flags=[False, True, False])],
                        dict(classes=CLASSES))
    assert metrics['region_cls/top1'] == 100.0
    assert metrics['region_cls/mean_top1'] == 100.0


def test_pack_det_inputs_moves_crowd_regions_out_of_gt_instances() -> None:
    """The path of COCO crowd boxes: ignore_flag 1 -> PackDetInputs -> ignored_instances."""
    packed = PackDetInputs()(dict(
        img=np.zeros((8, 8, 3), dtype=np.uint8), img_id=0, img_path='x.jpg', ori_shape=(8, 8),
        img_shape=(8, 8), scale_factor=(1., 1.), flip=False, flip_direction=None,
        gt_bboxes=HorizontalBoxes(torch.tensor([[0., 0., 4., 4.], [1., 1., 8., 8.],
                                                [2., 2., 6., 6.]])),
        gt_bboxes_labels=np.array([0, 1, 2]), gt_ignore_flags=np.array([False, True, False])))
    sample = packed['data_samples']
    assert sample.gt_instances.labels.tolist() == [0, 2]
    assert sample.ignored_instances.labels.tolist() == [1]
    sample.pred_region_scores = _scores([0, 2], [0, 1], 3)  # scored: the two kept regions
    metric = RegionClassificationMetric(topk=(1, ))
    metric.process({}, [sample.to_dict()])
    assert metric.evaluate(1) == {'region_cls/top1': 50.0, 'region_cls/mean_top1': 50.0}


def test_through_mmengine_evaluator() -> None:
    init_default_scope('mmdet')
    evaluator = Evaluator(metrics=dict(type='RegionClassificationMetric', topk=(1, 3)))
    assert isinstance(evaluator.metrics[0], RegionClassificationMetric)
    evaluator.dataset_meta = PANOPTIC_META
    labels, ranks = [[0, 2], [3], [1, 1, 0]], [[0, 1], [3], [0, 2, 0]]
    for batch in ((0, 1), (2, )):
        data_samples = []
        for index in batch:
            sample = DetDataSample(metainfo=dict(img_id=index))
            sample.gt_instances = InstanceData(labels=torch.tensor(labels[index]))
            sample.pred_region_scores = _scores(labels[index], ranks[index], 4)
            data_samples.append(sample)
        evaluator.process(data_samples)
    metrics = evaluator.evaluate(3)
    # Ranks of things 0, 0, 2, 0 and of stuff 1, 3. Per class top-1: cat (ranks 0, 0) 1,
    # dog (0, 2) 1/2, sky (1) 0, grass (3) 0; top-3: 1, 1, 1, 0.
    assert metrics == pytest.approx({
        'region_cls/top1': 50.0, 'region_cls/top3': 5 / 6 * 100,
        'region_cls/mean_top1': (1 + 0.5 + 0 + 0) / 4 * 100,
        'region_cls/mean_top3': (1 + 1 + 1 + 0) / 4 * 100,
        'region_cls/things_top1': 75.0, 'region_cls/things_top3': 100.0,
        'region_cls/things_mean_top1': 75.0, 'region_cls/things_mean_top3': 100.0,
        'region_cls/stuff_top1': 0.0, 'region_cls/stuff_top3': 50.0,
        'region_cls/stuff_mean_top1': 0.0, 'region_cls/stuff_mean_top3': 50.0})


def test_build_from_registry() -> None:
    metric = METRICS.build(dict(type='RegionClassificationMetric', topk=[5, 1], prefix='coco'))
    assert metric.topk == (1, 5) and metric.prefix == 'coco'


def test_bad_scores_and_labels_are_named() -> None:
    meta = dict(classes=CLASSES)
    with pytest.raises(ValueError, match=r"data sample \(img_id=7\): 'pred_region_scores' must "
                                         r'have shape \(N, C\) with N = 2, .* got \(3, 3\)'):
        _evaluate([_sample([0, 1], torch.zeros(3, 3), img_id=7)], meta)
    with pytest.raises(ValueError, match=r'must have shape \(N, C\) with N = 2.* got \(2,\)'):
        _evaluate([_sample([0, 1], torch.zeros(2))], meta)
    with pytest.raises(ValueError, match=r"must have C = 3 columns \(len\(dataset_meta\['classes'"
                                         r"\]\)\), got shape \(2, 4\)"):
        _evaluate([_sample([0, 1], torch.zeros(2, 4))], meta)
    with pytest.raises(ValueError, match=r"'gt_instances.labels' must lie in \[0, 3\) .* got "
                                         r'labels in \[0, 5\]'):
        _evaluate([_sample([0, 5], torch.zeros(2, 3))])
    with pytest.raises(ValueError, match="'pred_region_scores' has NaN scores"):
        _evaluate([_sample([0], torch.tensor([[float('nan'), 0., 1.]]))])
    sample = _sample([0, 1], torch.zeros(2, 3))
    sample['gt_instances']['ignore_flags'] = torch.tensor([False])  # InstanceData forbids this
    with pytest.raises(ValueError, match=r"'gt_instances.ignore_flags' must have shape \(2, \)"):
        _evaluate([sample])
    with pytest.raises(ValueError, match=r'same number of columns C for every image, got '
                                         r'\[3, 4\]'):
        _evaluate([_sample([0], torch.zeros(1, 3)), _sample([0], torch.zeros(1, 4))])


def test_infinite_scores_are_ranked() -> None:
    scores = torch.tensor([[float('inf'), 0., -1.], [float('-inf'), 0., 1.]])
    assert _evaluate([_sample([0, 0], scores)], topk=(1, ))['region_cls/top1'] == 50.0


def test_missing_fields_and_bad_config() -> None:
    sample = _sample([0], torch.zeros(1, 3), img_id=3)
    del sample['pred_region_scores']
    with pytest.raises(KeyError, match=r"img_id=3\): missing 'pred_region_scores'"):
        _evaluate([sample])
    with pytest.raises(KeyError, match="missing 'gt_instances.labels'"):
        _evaluate([dict(pred_region_scores=torch.zeros(1, 3))])
    for topk in ((), (0, 5), (1, 1), (1.5, )):
        with pytest.raises(ValueError, match='topk: expected distinct positive ints'):
            RegionClassificationMetric(topk=topk)
    swapped = dict(PANOPTIC_META, classes=STUFF + THINGS)
    with pytest.raises(ValueError, match=r"dataset_meta\['classes'\] must be "
                                         r"dataset_meta\['thing_classes'\] followed by"):
        _evaluate([_sample([0], _scores([0], [0], 4))], swapped)


# ---------------------------------------------------------------------------------------------
# Distributed evaluation: two gloo processes, each with a shard of the images.
# ---------------------------------------------------------------------------------------------
DIST_LABELS = [[0, 2], [3], [1, 1, 0], [], [2, 3, 3]]
DIST_RANKS = [[0, 1], [3], [0, 2, 0], [], [0, 0, 1]]
WORLD_SIZE = 2


def _dist_samples() -> List[dict]:
    return [_sample(labels, _scores(labels, ranks, 4), img_id=index)
            for index, (labels, ranks) in enumerate(zip(DIST_LABELS, DIST_RANKS))]


def _evaluate_on_rank(rank: int, init_file: str, out_file: str) -> None:
    torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                  world_size=WORLD_SIZE)
    metric = RegionClassificationMetric(topk=(1, 2))
    metric.dataset_meta = PANOPTIC_META
    # Like mmengine's DefaultSampler without shuffling: rank r gets images r, r + 2, ...
    metric.process({}, _dist_samples()[rank::WORLD_SIZE])
    metrics = metric.evaluate(len(DIST_LABELS))
    if rank == 0:
        torch.save(metrics, out_file)
    torch_dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_evaluation_matches_single_process(tmp_path: Path) -> None:
    out_file = tmp_path / 'metrics.pt'
    # Forked, not spawned: a spawned rank spends about 10 s importing mmdet again.
    processes = [fork_process(_evaluate_on_rank, rank, str(tmp_path / 'init'), str(out_file))
                 for rank in range(WORLD_SIZE)]
    assert [join_process(process) for process in processes] == [0] * WORLD_SIZE
    expected = _evaluate(_dist_samples(), PANOPTIC_META, topk=(1, 2))
    assert torch.load(out_file) == pytest.approx(expected)
    assert expected['region_cls/top1'] == pytest.approx(500 / 9)  # 5 of 9 regions ranked first
