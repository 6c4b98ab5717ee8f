# Copyright (c) mmclim contributors. All rights reserved.
"""LVIS ground truth and detections as flat arrays, selected as the LVIS API selects them.

The selection follows the reference implementation (``lvis==0.5.3``: ``LVIS.get_ann_ids``,
``LVISResults`` and ``LVISEval._prepare``):

- Ground truth: the annotations of listed images and categories whose ``area`` lies in the open
  interval (0, inf). A category is *present* on an image when it has such an annotation there.
- Detections: at most ``max_dets`` per image, the best-scored (ties: the earlier result), chosen
  before any other selection. Then, like the ground truth, those of listed categories whose area
  lies in (0, inf), and of those only the ones on an image where their category is present or
  listed in ``neg_category_ids`` (federated evaluation).
- A detection's area is its box's ``w * h`` when the first kept result has a ``bbox``, else its
  mask's area. A result without a mask is the polygon of its box; one without a box is the box
  of its mask.
"""
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils

# Category frequency groups, in the order LVIS reports APr, APc, APf: rare (in fewer than 10
# training images), common (10 to 99) and frequent (100 or more).
FREQUENCY_GROUPS = ('r', 'c', 'f')
# LVIS keeps the 300 best-scored detections of each image (``LVISResults(max_dets=300)``);
# a negative limit keeps all of them.
DEFAULT_MAX_DETS = 300
IOU_TYPES = ('bbox', 'segm')
# An LVIS box is (x, y, w, h).
BOX_DIM = 4

LVISDataset = Union[str, Path, dict]
LVISResultList = Union[str, Path, Sequence[dict]]


def _load_json(source: Union[str, Path, Any]) -> Tuple[Any, str]:
    """The JSON content of ``source`` when it is a path, else ``source``; and how errors name it."""
    if isinstance(source, (str, Path)):
        with open(source) as f:
            return json.load(f), str(source)
    return source, '<in-memory>'


def _column(records: Sequence[dict], key: str, where: str) -> list:
    """``record[key]`` of every record; a missing key raises naming the record."""
    try:
        return [record[key] for record in records]
    except KeyError:
        index = next(i for i, record in enumerate(records) if key not in record)
        raise ValueError(f"{where}[{index}] has no '{key}'") from None


def _id_column(records: Sequence[dict], key: str, where: str) -> np.ndarray:
    """``record[key]`` of every record as an int64 array of shape (N, )."""
    return np.asarray(_column(records, key, where), dtype=np.int64)


def index_in_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Where each id is in ``sorted_ids``.

    Args:
        sorted_ids (np.ndarray): Sorted unique ids of shape (M, ).
        ids (np.ndarray): Ids of shape (N, ).

    Returns:
        Tuple[np.ndarray, np.ndarray]: Positions of shape (N, ) (0 where absent) and whether each
        id is in ``sorted_ids``, of shape (N, ).
    """
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    found = sorted_ids[positions] == ids
    return np.where(found, positions, 0), found


def rank_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """The position of each element within its run of equal keys.

    Args:
        sorted_keys (np.ndarray): Keys of shape (N, ), equal keys adjacent.

    Returns:
        np.ndarray: Ranks of shape (N, ), 0 for the first of each run.
    """
    run_start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_length = np.diff(np.r_[run_start, len(sorted_keys)])
    return np.arange(len(sorted_keys)) - np.repeat(run_start, run_length)


def _sorted_unique_ids(ids: list, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Ids as a sorted array and the order that sorts them; duplicates raise."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind='stable')
    repeated = ids[order][1:][np.diff(ids[order]) == 0]
    if len(repeated):
        raise ValueError(f'{where}: id {repeated[0]} appears more than once')
    return ids[order], order


def _boxes(values: list, where: str) -> np.ndarray:
    """(x, y, w, h) boxes as a float64 array of shape (N, 4)."""
    try:
        boxes = np.asarray(values, dtype=np.float64).reshape(len(values), BOX_DIM)
    except ValueError:
        raise ValueError(f'{where}: every bbox must be [x, y, w, h]') from None
    return boxes


def segmentation_to_rle(segmentation: Union[list, dict], height: int, width: int) -> dict:
    """A compressed RLE of an LVIS segmentation, as ``LVIS.ann_to_rle`` makes it.

    Args:
        segmentation (list | dict): Polygons (a list of flat [x0, y0, x1, y1, ...] lists, merged
            into one mask), an uncompressed RLE (``counts`` a list) or a compressed RLE.
        height (int): Image height.
        width (int): Image width.

    Returns:
        dict: The compressed RLE (``size`` and ``counts``).
    """
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation['counts'], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def box_polygon(box: Sequence[float]) -> List[List[float]]:
    """The polygon ``LVISResults`` gives a result without a mask.

    Args:
        box (Sequence[float]): (x, y, w, h).

    Returns:
        List[List[float]]: One polygon, the box's corners.
    """
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    return [[x1, y1, x1, y2, x2, y2, x2, y1]]


def _select_categories(categories: List[dict], cat_ids: Optional[Sequence[int]],
                       source: str) -> Tuple[np.ndarray, np.ndarray]:
    """The evaluated category ids, sorted, and their frequency group indices, both (K, )."""
    where = f'{source}: categories'
    all_ids, order = _sorted_unique_ids(_column(categories, 'id', where), where)
    frequency = np.array(_column(categories, 'frequency', where), dtype=object)[order]
    unknown = np.flatnonzero(~np.isin(frequency, FREQUENCY_GROUPS))
    if len(unknown):
        raise ValueError(f'{where}: category {all_ids[unknown[0]]} has frequency '
                         f'{frequency[unknown[0]]!r}; expected one of {FREQUENCY_GROUPS}')
    frequency_index = np.array([FREQUENCY_GROUPS.index(group) for group in frequency], np.int64)
    if cat_ids is None:
        return all_ids, frequency_index
    missing = np.setdiff1d(np.asarray(cat_ids, dtype=np.int64), all_ids)
    if len(missing):
        raise ValueError(f'{source}: cat_ids {missing.tolist()} are not in the categories')
    selected = np.isin(all_ids, cat_ids)
    if not selected.any():
        raise ValueError(f'{source}: no categories to evaluate')
    return all_ids[selected], frequency_index[selected]


def _listed_pair_keys(images: List[dict], field: str, cat_ids: np.ndarray,
                      source: str) -> np.ndarray:
    """Sorted (image, category) keys of the categories the images list in ``field``.

    Args:
        images (List[dict]): Images sorted by id.
        field (str): 'neg_category_ids' or 'not_exhaustive_category_ids'.
        cat_ids (np.ndarray): Evaluated category ids, sorted, shape (K, ); others are left out.
        source (str): How errors name the annotation file.

    Returns:
        np.ndarray: Keys ``img * K + cat`` of shape (M, ).
    """
    lists = _column(images, field, f'{source}: images')
    img_index = np.repeat(np.arange(len(images)), [len(cats) for cats in lists])
    cat_index, found = index_in_sorted(
        cat_ids, np.fromiter(itertools.chain.from_iterable(lists), np.int64))
    return np.unique(img_index[found] * len(cat_ids) + cat_index[found])


@dataclass
class LVISGroundTruth:
    """LVIS ground truth of the evaluated categories, as arrays.

    Images are sorted by id and categories by id; ``img`` and ``cat`` fields index those orders.
    Annotations keep the order of the dataset's ``annotations`` (the LVIS API's order, which
    breaks ties in matching). An (image, category) pair is keyed ``img * num_cats + cat``.

    Attributes:
        source (str): The annotation file, or ``'<in-memory>'``; errors name it.
        img_ids (np.ndarray): Image ids of shape (I, ), sorted.
        img_sizes (np.ndarray): (height, width) of each image, shape (I, 2); -1 where missing.
        cat_ids (np.ndarray): Evaluated category ids of shape (K, ), sorted.
        cat_frequency (np.ndarray): Index into :data:`FREQUENCY_GROUPS` of each category, (K, ).
        ann_ids (np.ndarray): Annotation ids of shape (N, ).
        ann_img (np.ndarray): Image index of each annotation, shape (N, ).
        ann_cat (np.ndarray): Category index of each annotation, shape (N, ).
        ann_area (np.ndarray): ``area`` of each annotation, shape (N, ).
        ann_ignore (np.ndarray): The optional ``ignore`` flag of each annotation, bool (N, ).
        annotations (List[dict]): The N annotations, for their ``bbox`` and ``segmentation``.
        neg_keys (np.ndarray): Sorted keys of the pairs in ``neg_category_ids``.
        not_exhaustive_keys (np.ndarray): Sorted keys of the pairs in
            ``not_exhaustive_category_ids``.
        present_keys (np.ndarray): Sorted keys of the pairs with an annotation.
    """

    source: str
    img_ids: np.ndarray
    img_sizes: np.ndarray
    cat_ids: np.ndarray
    cat_frequency: np.ndarray
    ann_ids: np.ndarray
    ann_img: np.ndarray
    ann_cat: np.ndarray
    ann_area: np.ndarray
    ann_ignore: np.ndarray
    annotations: List[dict]
    neg_keys: np.ndarray
    not_exhaustive_keys: np.ndarray
    present_keys: np.ndarray

    @property
    def num_cats(self) -> int:
        return len(self.cat_ids)

    @property
    def ann_keys(self) -> np.ndarray:
        """(image, category) key of each annotation, shape (N, )."""
        return self.ann_img * self.num_cats + self.ann_cat

    @classmethod
    def from_dataset(cls,
                     dataset: LVISDataset,
                     cat_ids: Optional[Sequence[int]] = None) -> 'LVISGroundTruth':
        """Parse an LVIS annotation file or its loaded dict.

        Args:
            dataset (str | Path | dict): The annotation file or its content (``images`` with
                ``id``, ``neg_category_ids``, ``not_exhaustive_category_ids`` and, for masks,
                ``height``/``width``; ``annotations`` with ``id``, ``image_id``,
                ``category_id``, ``area``, ``bbox`` and/or ``segmentation``; ``categories``
                with ``id`` and ``frequency``).
            cat_ids (Sequence[int], optional): Evaluate only these categories (as setting
                ``LVISEval.params.cat_ids``). Defaults to None: all.

        Returns:
            LVISGroundTruth: The parsed ground truth.
        """
        data, source = _load_json(dataset)
        for key in ('images', 'annotations', 'categories'):
            if key not in data:
                raise ValueError(f"{source}: no '{key}'")
        images, categories = data['images'], data['categories']

        img_ids, img_order = _sorted_unique_ids(_column(images, 'id', f'{source}: images'),
                                                f'{source}: images')
        images = [images[i] for i in img_order]
        img_sizes = np.array([(img.get('height', -1), img.get('width', -1)) for img in images],
                             dtype=np.int64).reshape(-1, 2)

        cat_ids_array, cat_frequency = _select_categories(categories, cat_ids, source)
        num_cats = len(cat_ids_array)

        anns = data['annotations']
        where = f'{source}: annotations'
        ann_img, img_found = index_in_sorted(img_ids, _id_column(anns, 'image_id', where))
        ann_cat, cat_found = index_in_sorted(cat_ids_array,
                                             _id_column(anns, 'category_id', where))
        ann_area = np.asarray(_column(anns, 'area', where), dtype=np.float64)
        keep = np.flatnonzero(img_found & cat_found & (ann_area > 0) & (ann_area < np.inf))
        kept_anns = [anns[i] for i in keep]
        ann_ids = _id_column(kept_anns, 'id', where)
        if len(np.unique(ann_ids)) != len(ann_ids):
            raise ValueError(f'{where}: annotation ids are not unique')
        ann_img, ann_cat = ann_img[keep], ann_cat[keep]

        return cls(
            source=source,
            img_ids=img_ids,
            img_sizes=img_sizes,
            cat_ids=cat_ids_array,
            cat_frequency=cat_frequency,
            ann_ids=ann_ids,
            ann_img=ann_img,
            ann_cat=ann_cat,
            ann_area=ann_area[keep],
            ann_ignore=np.array([bool(ann.get('ignore', 0)) for ann in kept_anns], dtype=bool),
            annotations=kept_anns,
            neg_keys=_listed_pair_keys(images, 'neg_category_ids', cat_ids_array, source),
            not_exhaustive_keys=_listed_pair_keys(images, 'not_exhaustive_category_ids',
                                                  cat_ids_array, source),
            present_keys=np.unique(ann_img * num_cats + ann_cat))

    def image_sizes(self, img: np.ndarray) -> List[Tuple[int, int]]:
        """(height, width) of the images at indices ``img`` (shape (M, )); raises when one has
        none."""
        sizes = self.img_sizes[img]
        missing = (sizes < 0).any(axis=1)
        if missing.any():
            raise ValueError(f'{self.source}: image {self.img_ids[img[missing][0]]} needs height '
                             'and width for mask evaluation')
        return [tuple(size) for size in sizes.tolist()]

    def boxes(self, indices: np.ndarray) -> np.ndarray:
        """``bbox`` of the annotations at ``indices`` (shape (M, )), shape (M, 4)."""
        where = f'{self.source}: annotations'
        return _boxes(_column([self.annotations[i] for i in indices], 'bbox', where), where)

    def rles(self, indices: np.ndarray) -> List[dict]:
        """Compressed RLE masks of the annotations at ``indices`` (shape (M, ))."""
        where = f'{self.source}: annotations'
        segmentations = _column([self.annotations[i] for i in indices], 'segmentation', where)
        return [
            segmentation_to_rle(segmentation, *size)
            for segmentation, size in zip(segmentations, self.image_sizes(self.ann_img[indices]))
        ]


def _top_per_image(img_ids: np.ndarray, scores: np.ndarray, max_dets: int) -> np.ndarray:
    """Indices, ascending, of the ``max_dets`` best-scored results of each image.

    Ties keep the earlier result, as ``sorted(..., reverse=True)`` in ``LVISResults`` does.

    Args:
        img_ids (np.ndarray): Image id of each result, shape (N, ).
        scores (np.ndarray): Score of each result, shape (N, ).
        max_dets (int): The limit per image; negative keeps all.

    Returns:
        np.ndarray: Kept indices of shape (M, ).
    """
    if max_dets < 0:
        return np.arange(len(img_ids))
    order = np.lexsort((np.arange(len(img_ids)), -scores, img_ids))
    return np.sort(order[rank_in_runs(img_ids[order]) < max_dets])


@dataclass
class LVISDetections:
    """The detections LVIS evaluates, as arrays.

    Attributes:
        img (np.ndarray): Image index (into ``LVISGroundTruth.img_ids``), shape (D, ).
        cat (np.ndarray): Category index (into ``LVISGroundTruth.cat_ids``), shape (D, ).
        scores (np.ndarray): Scores, float64 of shape (D, ).
        areas (np.ndarray): Areas, float64 of shape (D, ).
        order (np.ndarray): Position in the results, shape (D, ); breaks score ties.
        not_exhaustive (np.ndarray): Whether the category is in the image's
            ``not_exhaustive_category_ids``, bool of shape (D, ).
        records (List[dict]): The D results, for their ``bbox`` and ``segmentation``.
        source (str): The results file, or ``'<in-memory>'``; errors name it.
    """

    img: np.ndarray
    cat: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    order: np.ndarray
    not_exhaustive: np.ndarray
    records: List[dict]
    source: str

    @classmethod
    def from_results(cls,
                     results: LVISResultList,
                     gt: LVISGroundTruth,
                     max_dets: int = DEFAULT_MAX_DETS) -> 'LVISDetections':
        """Select the detections of ``results`` that LVIS evaluates against ``gt``.

        Args:
            results (str | Path | Sequence[dict]): A results file or its list: dicts with
                ``image_id``, ``category_id``, ``score`` and ``bbox`` (x, y, w, h) and/or
                ``segmentation`` (an RLE).
            gt (LVISGroundTruth): The ground truth.
            max_dets (int): Detections kept per image. Defaults to 300.

        Returns:
            LVISDetections: The selected detections, in the order of ``results``.
        """
        results, source = _load_json(results)
        if not isinstance(results, list):
            raise ValueError(f'{source}: results must be a list of dicts')
        where = f'{source}: results'
        img_ids = _id_column(results, 'image_id', where)
        scores = np.asarray(_column(results, 'score', where), dtype=np.float64)
        kept = _top_per_image(img_ids, scores, max_dets)
        if len(kept) == 0:
            return cls.empty(source)
        img, img_found = index_in_sorted(gt.img_ids, img_ids[kept])
        if not img_found.all():
            raise ValueError(f'{where}: image_id {img_ids[kept][~img_found][0]} is not in '
                             f'the images of {gt.source}')
        records = [results[i] for i in kept]
        cat, cat_found = index_in_sorted(gt.cat_ids, _id_column(records, 'category_id', where))
        if 'bbox' in records[0]:
            boxes = _boxes(_column(records, 'bbox', where), where)
            areas = boxes[:, 2] * boxes[:, 3]
        else:
            areas = np.asarray(mask_utils.area(_column(records, 'segmentation', where)),
                               dtype=np.float64).reshape(-1)
        keys = img * gt.num_cats + cat
        evaluated = (cat_found & (areas > 0) & (areas < np.inf)
                     & (np.isin(keys, gt.present_keys) | np.isin(keys, gt.neg_keys)))
        chosen = np.flatnonzero(evaluated)
        return cls(
            img=img[chosen],
            cat=cat[chosen],
            scores=scores[kept][chosen],
            areas=areas[chosen],
            order=kept[chosen],
            not_exhaustive=np.isin(keys[chosen], gt.not_exhaustive_keys),
            records=[records[i] for i in chosen],
            source=source)

    @classmethod
    def empty(cls, source: str) -> 'LVISDetections':
        """No detections."""
        none = np.zeros(0, np.int64)
        return cls(img=none, cat=none, scores=none.astype(np.float64),
                   areas=none.astype(np.float64), order=none,
                   not_exhaustive=none.astype(bool), records=[], source=source)

    def __len__(self) -> int:
        return len(self.img)

    def reorder(self, order: np.ndarray) -> 'LVISDetections':
        """The detections at ``order`` (shape (D', )), in that order."""
        return LVISDetections(
            img=self.img[order],
            cat=self.cat[order],
            scores=self.scores[order],
            areas=self.areas[order],
            order=self.order[order],
            not_exhaustive=self.not_exhaustive[order],
            records=[self.records[i] for i in order],
            source=self.source)

    def boxes(self, indices: np.ndarray) -> np.ndarray:
        """Boxes (x, y, w, h) of the detections at ``indices`` (shape (M, )), shape (M, 4)."""
        boxes = [
            record['bbox'] if 'bbox' in record else mask_utils.toBbox(record['segmentation'])
            for record in (self.records[i] for i in indices)
        ]
        return _boxes(boxes, f'{self.source}: results')

    def rles(self, indices: np.ndarray, gt: LVISGroundTruth) -> List[dict]:
        """Compressed RLE masks of the detections at ``indices`` (shape (M, ))."""
        rles = []
        for i, size in zip(indices, gt.image_sizes(self.img[indices])):
            record = self.records[i]
            segmentation = (record['segmentation']
                            if 'segmentation' in record else box_polygon(record['bbox']))
            rles.append(segmentation_to_rle(segmentation, *size))
        return rles
