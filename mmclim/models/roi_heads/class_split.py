# Copyright (c) mmclim contributors. All rights reserved.
"""Which classes of an open-vocabulary detector are novel, read from the data set's split file.

``tools/dataset_converters/prepare_ov_lvis.py`` and ``prepare_ov_coco.py`` write, next to the
base-only training file, a split file (:func:`mmclim.datasets.ov_splits.split_description`)
listing the base and novel category ids. The novel ones are the LVIS categories of frequency 'r'
(OV-LVIS) or the 17 novel classes of OV-COCO, taken from the annotations, never typed by hand.
"""
import json
from typing import Any, List

import torch
from torch import Tensor

SPLIT_BASE_IDS_FIELD = 'base_category_ids'
SPLIT_NOVEL_IDS_FIELD = 'novel_category_ids'


def _category_ids(split: Any, field: str, split_file: str) -> List[int]:
    ids = split.get(field) if isinstance(split, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f'{split_file}: expected a json object whose {field!r} is a list of '
                         f'category ids (a split file of tools/dataset_converters/prepare_ov_*.py)'
                         f', got {type(ids).__name__}')
    if len(set(ids)) != len(ids):
        raise ValueError(f'{split_file}: {field!r} repeats category ids')
    return ids


def load_novel_class_mask(split_file: str) -> Tensor:
    """Which classes are novel, in label order, from an open-vocabulary split file.

    The classes are the base and novel categories together in ascending category id, the order
    of the rows of ``tools/generate_text_embeddings.py`` and of mmdet's labels for the LVIS v1 and
    OV-COCO files (whose categories are listed by ascending id).

    Args:
        split_file (str): A json object with the lists ``base_category_ids`` and
            ``novel_category_ids`` (as ``prepare_ov_lvis.py`` / ``prepare_ov_coco.py`` write).

    Returns:
        Tensor: Bool of shape (C,), C the number of base and novel categories; True for novel.
    """
    with open(split_file, encoding='utf-8') as f:
        try:
            split = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{split_file}: not a valid JSON file ({err})') from err
    base_ids = _category_ids(split, SPLIT_BASE_IDS_FIELD, split_file)
    novel_ids = set(_category_ids(split, SPLIT_NOVEL_IDS_FIELD, split_file))
    both = sorted(novel_ids.intersection(base_ids))
    if both:
        raise ValueError(f'{split_file}: the category ids {both} are both base and novel')
    return torch.tensor([cat_id in novel_ids for cat_id in sorted(novel_ids.union(base_ids))],
                        dtype=torch.bool)
