# Copyright (c) mmclim contributors. All rights reserved.
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

# Top-1 and Top-5, as reported by CLIM (Table 3 and Table 5, "Region Classification").
DEFAULT_TOPK = (1, 5)
# Accuracies are reported in percent, like the paper's tables.
PERCENT = 100.0
SCORES_KEY = 'pred_region_scores'


def _percent(values: np.ndarray) -> float:
    """The mean of ``values`` (shape (n, ); correctness or per-class accuracies) in percent;
    NaN when n = 0."""
    return float(values.mean() * PERCENT) if values.size else float('nan')


def _sample_name(data_sample: dict) -> str:
    """How errors name a data sample: its image id, else its image path."""
    for key in ('img_id', 'img_path'):
        if key in data_sample:
            return f'data sample ({key}={data_sample[key]!r})'
    return 'data sample'


@METRICS.register_module()
class RegionClassificationMetric(BaseMetric):
    """Zero-shot classification accuracy of ground-truth regions (CLIM, Table 5).

    The model scores every ground-truth instance of an image against all C classes; a region is
    correct at k when its class is among the k best-scored. Reported, in percent, for each k of
    ``topk`` (keys ``region_cls/<name>`` with the default prefix):

    - ``top{k}``: over all regions.
    - ``mean_top{k}``: the mean over the classes with at least one region of each class's
      accuracy.
    - ``things_top{k}`` and ``stuff_top{k}``: over the regions of thing classes and of stuff
      classes, when the dataset meta has ``thing_classes`` and ``stuff_classes`` (as mmdet's
      ``CocoPanopticDataset``), its ``classes`` being the things then the stuff. Every region is
      still ranked among all C classes.
    - ``things_mean_top{k}`` and ``stuff_mean_top{k}``: likewise split, the mean over the
      group's classes with at least one region of each class's accuracy. These are CLIM's
      Table 5 numbers (official ``zero_shot.py`` ``macc_with_is_thing``: ``thing.macc1``,
      ``thing.macc5``, ``stuff.macc1``, ``stuff.macc5``, there as fractions).

    With fewer than k classes, top-k is top-C (every region is correct), named ``top{k}`` still.
    A class scored exactly like the ground-truth class is ranked before it: ties count as
    errors, so constant scores score 0 rather than 100. A group without regions (e.g. no stuff
    regions) is reported as NaN, with a warning.

    Each data sample (the dict form of a ``DetDataSample``, as mmengine's ``Evaluator`` passes)
    needs:

    - ``pred_region_scores`` (Tensor): Scores (logits or probabilities: only their order is
      used) of shape (N, C), row i for ground-truth instance i.
    - ``gt_instances.labels`` (Tensor): Class indices of shape (N, ).
    - ``gt_instances.ignore_flags`` (Tensor, optional): Bool of shape (N, ); flagged regions
      are left out.

    mmdet's ``PackDetInputs`` already moves crowd and other ignore-flagged annotations to
    ``ignored_instances``, which the model does not score and this metric never reads. An image
    with no ground-truth instance may have scores of shape (0, C') for any C'.

    Every process stores, per image, the labels and ranks of its kept regions (small integer
    arrays), which ``BaseMetric`` gathers across ranks.

    Args:
        topk (Sequence[int]): The k of the top-k accuracies. Defaults to (1, 5).
        collect_device (str): Device used to gather results across ranks, ``'cpu'`` or
            ``'gpu'``. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names. None uses ``'region_cls'``.
            Defaults to None.
        collect_dir (str, optional): Folder to gather results through when collect_device is
            ``'cpu'``; None makes a temporary one. Defaults to None.
    """

    default_prefix: Optional[str] = 'region_cls'

    def __init__(self,
                 topk: Sequence[int] = DEFAULT_TOPK,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        topk = tuple(topk)
        if not topk or not all(isinstance(k, int) and k > 0 for k in topk) \
                or len(set(topk)) != len(topk):
            raise ValueError(f'{type(self).__name__}.topk: expected distinct positive ints, got '
                             f'{topk}')
        self.topk = tuple(sorted(topk))

    def _meta_num_classes(self) -> Optional[int]:
        """C from ``dataset_meta['classes']``, if the meta is set and has it."""
        classes = (self.dataset_meta or {}).get('classes')
        return None if classes is None else len(classes)

    def _num_thing_classes(self) -> Optional[int]:
        """How many of the first classes are things, if the meta splits things and stuff."""
        meta = self.dataset_meta or {}
        if 'thing_classes' not in meta or 'stuff_classes' not in meta:
            return None
        things, stuff = tuple(meta['thing_classes']), tuple(meta['stuff_classes'])
        if 'classes' in meta and tuple(meta['classes']) != things + stuff:
            raise ValueError(f"{type(self).__name__}: dataset_meta['classes'] must be "
                             "dataset_meta['thing_classes'] followed by "
                             "dataset_meta['stuff_classes'] for the thing/stuff split, got "
                             f"{len(meta['classes'])} classes that are not "
                             f'{len(things)} things then {len(stuff)} stuff')
        return len(things)

    def _rank_regions(self, data_sample: dict) -> Dict[str, Any]:
        """Labels and ground-truth ranks of the kept regions of one data sample.

        Args:
            data_sample (dict): A model output, see the class doc.

        Returns:
            dict: ``labels`` and ``ranks`` (int64 arrays of shape (n, )), rank r meaning r
            classes score at least as high as the ground-truth class, and ``num_classes`` (C).
        """
        name = _sample_name(data_sample)
        if SCORES_KEY not in data_sample:
            raise KeyError(f"{name}: missing '{SCORES_KEY}'; the model's predict must attach "
                           'the (N, C) class scores of the N ground-truth instances')
        if 'gt_instances' not in data_sample or 'labels' not in data_sample['gt_instances']:
            raise KeyError(f"{name}: missing 'gt_instances.labels'; the test pipeline must load "
                           'the annotations (LoadAnnotations with_bbox=True)')
        gt_instances = data_sample['gt_instances']
        labels = torch.as_tensor(gt_instances['labels']).long().cpu()
        scores = torch.as_tensor(data_sample[SCORES_KEY]).detach().float().cpu()
        num_regions = labels.shape[0]
        if scores.ndim != 2 or scores.shape[0] != num_regions:
            raise ValueError(f"{name}: '{SCORES_KEY}' must have shape (N, C) with N = "
                             f'{num_regions}, the number of gt_instances, got '
                             f'{tuple(scores.shape)}')
        num_classes = scores.shape[1]
        if num_regions == 0:
            empty = np.zeros(0, dtype=np.int64)
            return dict(labels=empty, ranks=empty, num_classes=None)
        meta_num_classes = self._meta_num_classes()
        if meta_num_classes is not None and num_classes != meta_num_classes:
            raise ValueError(f"{name}: '{SCORES_KEY}' must have C = {meta_num_classes} columns "
                             f"(len(dataset_meta['classes'])), got shape {tuple(scores.shape)}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{name}: 'gt_instances.labels' must lie in [0, {num_classes}) for "
                             f"'{SCORES_KEY}' of shape {tuple(scores.shape)}, got labels in "
                             f'[{labels.min().item()}, {labels.max().item()}]')
        if 'ignore_flags' in gt_instances:
            ignore_flags = torch.as_tensor(gt_instances['ignore_flags']).bool().cpu()
            if ignore_flags.shape != labels.shape:
                raise ValueError(f"{name}: 'gt_instances.ignore_flags' must have shape "
                                 f'({num_regions}, ) like the labels, got '
                                 f'{tuple(ignore_flags.shape)}')
            labels, scores = labels[~ignore_flags], scores[~ignore_flags]
        if torch.isnan(scores).any():
            raise ValueError(f"{name}: '{SCORES_KEY}' has NaN scores")
        gt_scores = scores.gather(1, labels[:, None])
        # The ground-truth class compares >= with itself: subtract it.
        ranks = (scores >= gt_scores).sum(dim=1) - 1
        return dict(labels=labels.numpy(), ranks=ranks.numpy(), num_classes=num_classes)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Rank the ground-truth class of every region of a batch.

        Args:
            data_batch (Any): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): The model's outputs as dicts, see the class doc.
        """
        for data_sample in data_samples:
            self.results.append(self._rank_regions(data_sample))

    def _warn_if_empty(self, group: str, num_regions: int) -> None:
        """Warn that the accuracies of a group without regions are NaN."""
        if num_regions == 0:
            print_log(f'{type(self).__name__}: no {group} regions to classify; their accuracies '
                      'are NaN', logger='current', level=logging.WARNING)

    def compute_metrics(self, results: List[Dict[str, Any]]) -> Dict[str, float]:
        """Top-k accuracies of the gathered regions.

        Args:
            results (List[dict]): Per data sample, the output of :meth:`_rank_regions`.

        Returns:
            Dict[str, float]: Accuracies in percent, keys as in the class doc without prefix.
        """
        labels = np.concatenate([np.zeros(0, dtype=np.int64)] + [r['labels'] for r in results])
        ranks = np.concatenate([np.zeros(0, dtype=np.int64)] + [r['ranks'] for r in results])
        score_widths = {r['num_classes'] for r in results if r['num_classes'] is not None}
        if len(score_widths) > 1:
            raise ValueError(f"{type(self).__name__}: '{SCORES_KEY}' must have the same number "
                             f'of columns C for every image, got {sorted(score_widths)}')
        num_classes = self._meta_num_classes() or next(iter(score_widths), 0)
        num_things = self._num_thing_classes()

        self._warn_if_empty('ground-truth', labels.size)
        metrics = {f'top{k}': _percent(ranks < k) for k in self.topk}
        per_class_regions = np.bincount(labels, minlength=num_classes)
        per_class_correct = {k: np.bincount(labels[ranks < k], minlength=num_classes)
                             for k in self.topk}
        present = per_class_regions > 0
        for k in self.topk:
            metrics[f'mean_top{k}'] = _percent(per_class_correct[k][present] /
                                               per_class_regions[present])
        if num_things is not None:
            is_thing = labels < num_things
            class_is_thing = np.arange(len(per_class_regions)) < num_things
            for group, in_group, class_in_group in (('things', is_thing, class_is_thing),
                                                    ('stuff', ~is_thing, ~class_is_thing)):
                self._warn_if_empty(group, int(in_group.sum()))
                metrics.update({f'{group}_top{k}': _percent(ranks[in_group] < k)
                                for k in self.topk})
                group_present = present & class_in_group
                metrics.update({
                    f'{group}_mean_top{k}': _percent(per_class_correct[k][group_present] /
                                                     per_class_regions[group_present])
                    for k in self.topk})
        return metrics
