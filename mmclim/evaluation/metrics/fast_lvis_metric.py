# Copyright (c) mmclim contributors. All rights reserved.
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from lvis import LVIS
from mmdet.evaluation.metrics import LVISMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from ..functional import AREA_LABELS, LVISEvalResult, LVISGroundTruth, evaluate_lvis

# What mmdet's LVISMetric reports when ``metric_items`` is None: for bbox and segm, and for
# proposal (which it evaluates as bbox).
DEFAULT_AP_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
DEFAULT_PROPOSAL_ITEMS = ('AR@300', 'ARs@300', 'ARm@300', 'ARl@300')
# (category, AP) pairs per row of the classwise table, as mmdet's.
CLASSWISE_PAIRS_PER_ROW = 3


def _report(value: float) -> float:
    """A value as mmdet's LVISMetric reports it: rounded to 3 decimals."""
    return float('{:.3f}'.format(float(value)))


@METRICS.register_module()
class FastLVISMetric(LVISMetric):
    """mmdet's ``LVISMetric``, evaluated by :func:`~mmclim.evaluation.functional.evaluate_lvis`.

    Same arguments, result files (``results2json``) and metric keys (``lvis/bbox_AP``,
    ``lvis/bbox_APr``, ..., ``lvis/segm_AP``, ...) as ``LVISMetric``, and the same values: the
    evaluator reproduces the reference LVIS API's results, in a fraction of its time.

    Args:
        eval_cat_ids (Sequence[int], optional): Average AP over these category ids only (e.g.
            the novel categories of an open-vocabulary split), as setting
            ``LVISEval.params.cat_ids``; groups without a category report -1. Defaults to None:
            all categories.
        *args, **kwargs: ``LVISMetric``'s arguments (``ann_file``, ``metric``, ``classwise``,
            ...).
    """

    def __init__(self, *args, eval_cat_ids: Optional[Sequence[int]] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eval_cat_ids = None if eval_cat_ids is None else list(eval_cat_ids)

    def _classwise(self, lvis_eval: LVISEvalResult, logger: MMLogger) -> Dict[str, float]:
        """Per-category AP over IoUs and recalls (``{name}_precision``), logged as a table."""
        names = [cat['name'] for cat in self._lvis_api.load_cats(lvis_eval.cat_ids.tolist())]
        per_category = {}
        for index, name in enumerate(names):
            precision = lvis_eval.precision[:, :, index, AREA_LABELS.index('all')]
            precision = precision[precision > -1]
            per_category[name] = np.mean(precision) if precision.size else float('nan')
        cells = [cell for name, ap in per_category.items() for cell in (name, f'{ap:0.3f}')]
        row_len = 2 * min(CLASSWISE_PAIRS_PER_ROW, len(per_category))
        rows = [cells[i:i + row_len] for i in range(0, len(cells), row_len)]
        logger.info('\n' + AsciiTable([['category', 'AP'] * (row_len // 2)] + rows).table)
        return {f'{name}_precision': round(ap, 3) for name, ap in per_category.items()}

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        """Compute the metrics from the processed results, as ``LVISMetric`` does.

        Args:
            results (List[tuple]): (ground truth, prediction) of each image, from ``process``.

        Returns:
            Dict[str, float]: The metrics, keyed as ``LVISMetric``'s.
        """
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        tmp_dir = None
        if self.outfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            outfile_prefix = osp.join(tmp_dir.name, 'results')
        else:
            outfile_prefix = self.outfile_prefix
        if self._lvis_api is None:
            logger.info('Converting ground truth to coco format...')
            self._lvis_api = LVIS(self.gt_to_coco_json(gt_dicts=gts,
                                                       outfile_prefix=outfile_prefix))
        if self.cat_ids is None:
            self.cat_ids = self._lvis_api.get_cat_ids()
        if self.img_ids is None:
            self.img_ids = self._lvis_api.get_img_ids()
        result_files = self.results2json(preds, outfile_prefix)

        eval_results = OrderedDict()
        if self.format_only:
            logger.info(f'results are saved in {osp.dirname(outfile_prefix)}')
            return eval_results

        gt = LVISGroundTruth.from_dataset(self._lvis_api.dataset, cat_ids=self.eval_cat_ids)
        for metric in self.metrics:
            logger.info(f'Evaluating {metric}...')
            if metric == 'proposal_fast':
                recalls = self.fast_eval_recall(preds, self.proposal_nums, self.iou_thrs,
                                                logger=logger)
                for num, recall in zip(self.proposal_nums, recalls):
                    eval_results[f'AR@{num}'] = recall
                logger.info(''.join(f'\nAR@{num}\t{recall:.4f}'
                                    for num, recall in zip(self.proposal_nums, recalls)))
                continue
            detections = load(result_files[metric])
            if not detections:
                logger.info('The testing results of the whole dataset is empty.')
                break
            lvis_eval = evaluate_lvis(gt, detections,
                                      iou_type='bbox' if metric == 'proposal' else metric)
            if metric == 'proposal':
                items, key_prefix = self.metric_items or DEFAULT_PROPOSAL_ITEMS, ''
            else:
                if self.classwise:
                    eval_results.update(self._classwise(lvis_eval, logger))
                items, key_prefix = self.metric_items or DEFAULT_AP_ITEMS, f'{metric}_'
            for key, value in lvis_eval.stats.items():
                if key in items:
                    eval_results[key_prefix + key] = _report(value)
            logger.info(f'{metric}: ' + ', '.join(f'{key}={value:.3f}'
                                                  for key, value in lvis_eval.stats.items()))
        if tmp_dir is not None:
            tmp_dir.cleanup()
        return eval_results
