# Copyright (c) mmclim contributors. All rights reserved.
from .lvis_data import (DEFAULT_MAX_DETS, FREQUENCY_GROUPS, IOU_TYPES, LVISDetections,
                        LVISGroundTruth, box_polygon, segmentation_to_rle)
from .lvis_eval import (AREA_LABELS, AREA_RANGES, IOU_THRESHOLDS, RECALL_THRESHOLDS, LVISEvalResult,
                        evaluate_lvis, paired_box_iou)

__all__ = [
    'DEFAULT_MAX_DETS', 'FREQUENCY_GROUPS', 'IOU_TYPES', 'LVISDetections', 'LVISGroundTruth',
    'box_polygon', 'segmentation_to_rle', 'AREA_LABELS', 'AREA_RANGES', 'IOU_THRESHOLDS',
    'RECALL_THRESHOLDS', 'LVISEvalResult', 'evaluate_lvis', 'paired_box_iou'
]
