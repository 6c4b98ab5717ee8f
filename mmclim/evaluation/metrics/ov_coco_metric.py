# Copyright (c) mmclim contributors. All rights reserved.
import os.path as osp
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.fileio import load
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from mmclim.structures import read_split_file

# OV-COCO reports box AP at IoU 0.5 (OV-RCNN, Zareian et al., CVPR 2021, Table 1).
AP50_IOU_THR = 0.5
# COCO's AP uses the 100 best-scored detections of each image, over all object areas.
AP_MAX_DETS = 100
AP_AREA = 'all'
# COCO's value for an average over no category with ground truth.
NO_GROUND_TRUTH_AP = -1.0
# The first six ``COCOeval.stats`` (AP@[.5:.95], AP50, AP75, AP small/medium/large) under the
# names mmdet's CocoMetric gives them.
COCO_AP_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
SUPPORTED_METRICS = ('bbox', 'segm')
SPLIT_NAMES = ('base', 'novel', 'all')
# Reported values are rounded as mmdet's CocoMetric rounds them.
DECIMALS = 3


def per_category_ap(coco_eval: COCOeval,
                    iou_thr: float = AP50_IOU_THR,
                    area: str = AP_AREA,
                    max_dets: int = AP_MAX_DETS) -> Dict[int, float]:
    """The AP of each category at one IoU threshold, from an accumulated ``COCOeval``.

    A category's AP is the mean of its interpolated precision over COCO's 101 recall thresholds
    (``COCOeval.eval['precision']``, of shape (T, R, K, A, M)). Categories without ground truth
    have no AP (their precision is -1 throughout) and are left out, as ``COCOeval.summarize``
    leaves them out.

    Args:
        coco_eval (COCOeval): Evaluated and accumulated.
        iou_thr (float): The IoU threshold, one of ``coco_eval.params.iouThrs``. Defaults to 0.5.
        area (str): The area range label. Defaults to 'all'.
        max_dets (int): The detections per image, one of ``coco_eval.params.maxDets``.
            Defaults to 100.

    Returns:
        dict[int, float]: AP in [0, 1] by category id, for the categories with ground truth.

    Raises:
        ValueError: If ``iou_thr``, ``area`` or ``max_dets`` is not among the evaluated ones.
    """
    params = coco_eval.params
    thr_index = np.flatnonzero(np.isclose(params.iouThrs, iou_thr))
    if thr_index.size != 1:
        raise ValueError(f'IoU threshold {iou_thr} is not among the evaluated COCOeval.params.'
                         f'iouThrs {list(params.iouThrs)}')
    if area not in params.areaRngLbl or max_dets not in params.maxDets:
        raise ValueError(f'area {area!r} and max_dets {max_dets} must be among the evaluated '
                         f'COCOeval.params.areaRngLbl {params.areaRngLbl} and maxDets '
                         f'{params.maxDets}')
    precision = coco_eval.eval['precision'][thr_index[0], :, :, params.areaRngLbl.index(area),
                                            params.maxDets.index(max_dets)]
    aps = {}
    # The K axis follows params.catIds, which COCOeval.evaluate sorts.
    for cat_index, cat_id in enumerate(params.catIds):
        values = precision[:, cat_index]
        values = values[values > -1]
        if values.size:
            aps[cat_id] = float(values.mean())
    return aps


def mean_ap(aps: Dict[int, float], cat_ids: Iterable[int]) -> float:
    """The mean AP over the categories of ``cat_ids`` that have an AP (ground truth).

    Args:
        aps (dict[int, float]): AP by category id, as :func:`per_category_ap` returns.
        cat_ids (Iterable[int]): The categories to average.

    Returns:
        float: The mean, or -1 (as COCO) when no category of ``cat_ids`` has ground truth.
    """
    values = [aps[cat_id] for cat_id in cat_ids if cat_id in aps]
    return float(np.mean(values)) if values else NO_GROUND_TRUTH_AP


def _no_detections(coco_gt: COCO) -> COCO:
    """An empty detection set for ``coco_gt`` (pycocotools' ``loadRes`` rejects an empty list)."""
    coco_dt = COCO()
    coco_dt.dataset = dict(images=list(coco_gt.dataset['images']),
                           categories=list(coco_gt.dataset['categories']), annotations=[])
    coco_dt.createIndex()
    return coco_dt


@METRICS.register_module()
class OVCocoSplitMetric(CocoMetric):
    """COCO box (or mask) evaluation with AP50 of the base, novel and all classes (OV-COCO).

    One ``COCOeval`` over all the dataset's classes gives each category's AP at IoU 0.5 (100
    detections per image, all areas); ``AP50_base``, ``AP50_novel`` and ``AP50_all`` are its means
    over the base, the novel and all classes with ground truth. Each novel class is thus scored
    against detections of every class (the generalized setting OV-COCO reports). The usual COCO
    AP summary (``mAP``, ``mAP_50``, ... as mmdet's ``CocoMetric`` names it) comes along;
    ``mAP_50`` equals ``AP50_all``. Keys, with the default prefix: ``coco/bbox_AP50_base``,
    ``coco/bbox_AP50_novel``, ``coco/bbox_AP50_all``, ``coco/bbox_mAP``, ...; values in [0, 1]
    rounded to 3 decimals, -1 for a subset without ground truth.

    The base and novel classes are those of the data set's open-vocabulary split file
    (``split_file``, read by :func:`mmclim.structures.read_split_file`; e.g. ``ov_coco_split.json``
    of ``tools/dataset_converters/prepare_ov_coco.py``), matched to the ground truth's categories
    by name; the dataset's classes (``dataset_meta['classes']``, e.g. ``OV_COCO_CLASSES``) must be
    exactly the split's base and novel classes.

    Unlike mmdet's ``OVCocoMetric`` (hence the other name), the split needs no ``base_classes``
    / ``novel_classes`` in the dataset meta, categories are matched to ``COCOeval``'s precision by
    id whatever their order, AP50 of all classes is reported, and no detection at all scores 0
    instead of failing.

    Data samples are read as ``CocoMetric`` reads them (``pred_instances``, ``img_id``,
    ``ori_shape``, and ``instances`` when ``ann_file`` is None).

    Args:
        split_file (str): The open-vocabulary split file, with the class names
            (``base_classes`` and ``novel_classes``).
        ann_file (str, optional): COCO-format ground truth, e.g. the ``_ov_all`` val file of
            ``prepare_ov_coco.py``. None converts the data samples' ``instances``. Defaults to
            None.
        metric (str | list[str]): 'bbox' and/or 'segm'. Defaults to 'bbox'.
        classwise (bool): Also log a table of each class's AP50 and split. Defaults to False.
        format_only (bool): Only write the detections to ``outfile_prefix`` json files.
            Defaults to False.
        outfile_prefix (str, optional): Prefix of the json files of detections (and of converted
            ground truth); None writes them to a temporary folder. Defaults to None.
        backend_args (dict, optional): File backend arguments for ``ann_file``. Defaults to
            None.
        collect_device (str): Device used to gather results across ranks, 'cpu' or 'gpu'.
            Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names; None uses 'coco'. Defaults to None.
    """

    def __init__(self,
                 split_file: str,
                 ann_file: Optional[str] = None,
                 metric: Union[str, List[str]] = 'bbox',
                 classwise: bool = False,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        metrics = [metric] if isinstance(metric, str) else list(metric)
        unsupported = [name for name in metrics if name not in SUPPORTED_METRICS]
        if unsupported:
            raise ValueError(f'OVCocoSplitMetric.metric: {unsupported} are not supported, expected '
                             f'some of {SUPPORTED_METRICS} (base/novel AP needs class labels)')
        split = read_split_file(split_file)
        if not split.novel_classes or not split.base_classes:
            raise ValueError(f'OVCocoSplitMetric.split_file: {split_file} has no class names '
                             '(base_classes and novel_classes); write it with '
                             'mmclim.structures.split_record, as the converters do')
        super().__init__(ann_file=ann_file, metric=metrics, classwise=classwise,
                         format_only=format_only, outfile_prefix=outfile_prefix,
                         backend_args=backend_args, collect_device=collect_device, prefix=prefix)
        self.split_file = split_file
        self.base_classes = split.base_classes
        self.novel_classes = split.novel_classes

    @property
    def dataset_meta(self) -> Optional[dict]:
        """The dataset meta; setting it checks that its classes are the split's, so a mismatched
        split file fails before inference rather than after it."""
        return BaseMetric.dataset_meta.fget(self)

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        if dataset_meta is not None:
            self._check_classes(dataset_meta['classes'])
        BaseMetric.dataset_meta.fset(self, dataset_meta)

    def _check_classes(self, classes: Sequence[str]) -> None:
        """Raise a ValueError naming the classes that are in only one of the dataset and the
        split."""
        split_classes = set(self.base_classes) | set(self.novel_classes)
        not_in_dataset = sorted(split_classes - set(classes))
        not_in_split = sorted(set(classes) - split_classes)
        if not_in_dataset or not_in_split:
            raise ValueError(f'OVCocoSplitMetric.split_file: {self.split_file} does not list the '
                             f'dataset\'s classes: {not_in_dataset} are not dataset classes, '
                             f'{not_in_split} are neither base nor novel (expected the split '
                             'file of the dataset\'s annotations)')

    def _split_cat_ids(self) -> Tuple[List[int], List[int]]:
        """The evaluated category ids (``self.cat_ids``) of the base and of the novel classes,
        matched by name in the ground truth's categories."""
        novel = set(self.novel_classes)
        base_ids, novel_ids = [], []
        for cat_id in self.cat_ids:
            is_novel = self._coco_api.cats[cat_id]['name'] in novel
            (novel_ids if is_novel else base_ids).append(cat_id)
        return base_ids, novel_ids

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Evaluate the gathered ``(ground truth, prediction)`` pairs of ``process``.

        Args:
            results (list): The processed results of every image.

        Returns:
            dict[str, float]: For each metric ``m``: ``m_AP50_base``, ``m_AP50_novel``,
            ``m_AP50_all`` and the COCO AP summary ``m_mAP``, ``m_mAP_50``, ...; empty with
            ``format_only``.
        """
        logger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        eval_results = {}
        with tempfile.TemporaryDirectory() as tmp_dir:
            outfile_prefix = self.outfile_prefix or osp.join(tmp_dir, 'results')
            if self._coco_api is None:
                logger.info('Converting ground truth to coco format...')
                self._coco_api = COCO(self.gt_to_coco_json(gts, outfile_prefix))
            if self.cat_ids is None:
                self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta['classes'])
            if self.img_ids is None:
                self.img_ids = self._coco_api.get_img_ids()
            result_files = self.results2json(preds, outfile_prefix)
            if self.format_only:
                logger.info(f'results are saved in {osp.dirname(outfile_prefix)}')
                return eval_results
            for metric in self.metrics:
                if metric not in result_files:
                    raise ValueError(f'OVCocoSplitMetric.metric {metric!r} needs '
                                     'pred_instances.masks, which the predictions lack')
                eval_results.update(self._evaluate(metric, load(result_files[metric]), logger))
        return eval_results

    def _evaluate(self, metric: str, predictions: List[dict],
                  logger: MMLogger) -> Dict[str, float]:
        """Run one ``COCOeval`` of ``predictions`` (COCO result dicts) and report its AP."""
        if metric == 'segm':
            # As CocoMetric: without the box, COCO takes the mask area for the area ranges.
            for prediction in predictions:
                prediction.pop('bbox')
        coco_dt = (self._coco_api.loadRes(predictions)
                   if predictions else _no_detections(self._coco_api))
        coco_eval = COCOeval(self._coco_api, coco_dt, metric)
        coco_eval.params.catIds = self.cat_ids
        coco_eval.params.imgIds = self.img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

        aps = per_category_ap(coco_eval)
        base_ids, novel_ids = self._split_cat_ids()
        split_aps = dict(zip(SPLIT_NAMES, (mean_ap(aps, ids)
                                           for ids in (base_ids, novel_ids, self.cat_ids))))
        if self.classwise:
            self._log_classwise(aps, set(novel_ids), logger)
        logger.info(f'{metric} AP50 ' + ' '.join(f'{name}: {ap:.3f}'
                                                 for name, ap in split_aps.items()))
        results = {f'{metric}_AP50_{name}': round(ap, DECIMALS) for name, ap in split_aps.items()}
        for index, name in enumerate(COCO_AP_NAMES):
            results[f'{metric}_{name}'] = round(float(coco_eval.stats[index]), DECIMALS)
        return results

    def _log_classwise(self, aps: Dict[int, float], novel_ids: set, logger: MMLogger) -> None:
        """Log each evaluated class's AP50 (nan without ground truth) and split."""
        rows = [('category', 'split', 'AP50')]
        for cat_id in self.cat_ids:
            rows.append((self._coco_api.cats[cat_id]['name'],
                         'novel' if cat_id in novel_ids else 'base',
                         f'{aps.get(cat_id, float("nan")):.3f}'))
        logger.info('\n' + AsciiTable(rows).table)
