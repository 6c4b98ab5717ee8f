# Copyright (c) mmclim contributors. All rights reserved.
"""Open-vocabulary splits of COCO and LVIS: which categories are base (trained), which novel.

The split and conversion functions are pure: they take a parsed COCO/LVIS-format annotation dict
and return new dicts, leaving the input untouched (lists are rebuilt, untouched records are
shared). ``tools/dataset_converters/prepare_ov_{coco,lvis}.py`` read and write the files with
:func:`load_annotation_file` and :func:`dump_json`.

Categories and category ids are kept in ascending id order, as COCO and LVIS list them: the order
of mmdet's labels for these files, of the rows of ``tools/generate_text_embeddings.py`` and of
the novel-class mask of the split file (:mod:`mmclim.structures.vocabulary`, which writes and
reads it).

- **OV-COCO** (:data:`OV_COCO_BASE_CLASSES`, :data:`OV_COCO_NOVEL_CLASSES`): the 48/17 split of
  the 80 COCO 2017 classes by name; the remaining 15 classes are unused.
- **OV-LVIS**: base = LVIS frequency 'f' and 'c', novel = 'r', read from each category's
  ``frequency`` field of the annotation file itself.
"""
import json
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from mmdet.datasets import CocoDataset

# The OV-COCO split of Zareian et al., "Open-Vocabulary Object Detection Using Captions"
# (OV-RCNN, CVPR 2021), used since by ViLD, RegionCLIP, Detic, CLIM and others: 48 base and 17
# novel classes of COCO 2017. The other 15 COCO classes are neither trained nor evaluated. Both
# lists are in COCO category-id order, with COCO 2017's names.
OV_COCO_BASE_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat', 'bench', 'bird', 'horse',
    'sheep', 'bear', 'zebra', 'giraffe', 'backpack', 'handbag', 'suitcase', 'frisbee', 'skis',
    'kite', 'surfboard', 'bottle', 'fork', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed', 'toilet', 'tv', 'laptop',
    'mouse', 'remote', 'microwave', 'oven', 'toaster', 'refrigerator', 'book', 'clock', 'vase',
    'toothbrush')
OV_COCO_NOVEL_CLASSES = (
    'airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella', 'tie', 'snowboard',
    'skateboard', 'cup', 'knife', 'cake', 'couch', 'keyboard', 'sink', 'scissors')
# The 65 classes of OV-COCO (base and novel) in COCO category-id order, which is the label order
# mmdet's CocoDataset gives the split files of ``prepare_ov_coco.py``: use it as
# ``metainfo=dict(classes=OV_COCO_CLASSES)``.
OV_COCO_CLASSES = tuple(name for name in CocoDataset.METAINFO['classes']
                        if name in OV_COCO_BASE_CLASSES or name in OV_COCO_NOVEL_CLASSES)

# LVIS frequency groups (Gupta et al., "LVIS", CVPR 2019), by the number of training images a
# category appears in: 'r' rare (1-10), 'c' common (11-100), 'f' frequent (>100). OV-LVIS (Gu et
# al., ViLD, ICLR 2022) trains on the frequent and common categories and holds out the rare ones.
LVIS_FREQUENCY_FIELD = 'frequency'
LVIS_BASE_FREQUENCIES = ('f', 'c')
LVIS_NOVEL_FREQUENCIES = ('r', )
# LVIS v1 has 1203 categories: 405 frequent + 461 common = 866 base, and 337 rare = novel.
LVIS_V1_NUM_BASE_CLASSES = 866
LVIS_V1_NUM_NOVEL_CLASSES = 337
# Per-image LVIS fields listing category ids (federated annotation): verified absent, and
# possibly incompletely annotated.
LVIS_IMAGE_CATEGORY_FIELDS = ('neg_category_ids', 'not_exhaustive_category_ids')
# Per-category LVIS statistics of the training set, recounted on the base-only file.
LVIS_IMAGE_COUNT_FIELD = 'image_count'
LVIS_INSTANCE_COUNT_FIELD = 'instance_count'

# The top-level fields of a COCO-style instances file.
INSTANCES_FIELDS = ('images', 'annotations', 'categories')


class CategorySplit(NamedTuple):
    """The base and novel categories of an annotation file, each in ascending id order.

    Attributes:
        base_ids (tuple[int]): Ids of the base (training) categories.
        novel_ids (tuple[int]): Ids of the novel (held-out) categories.
    """
    base_ids: Tuple[int, ...]
    novel_ids: Tuple[int, ...]

    @property
    def ids(self) -> Set[int]:
        """The ids of the base and the novel categories together."""
        return set(self.base_ids) | set(self.novel_ids)


def load_annotation_file(path: str) -> Dict[str, Any]:
    """Read a COCO/LVIS-style annotation json.

    Args:
        path (str): The json file.

    Returns:
        dict: Its content.

    Raises:
        ValueError: If the file is not JSON, or not a JSON object.
    """
    with open(path, encoding='utf-8') as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}: not a valid JSON file ({err})') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object with the fields {INSTANCES_FIELDS}, '
                         f'got a {type(data).__name__}')
    return data


def dump_json(data: Any, path: str) -> None:
    """Write ``data`` to ``path`` as compact UTF-8 JSON."""
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, separators=(',', ':'))


def check_instances(data: Dict[str, Any], source: str) -> None:
    """Check that ``data`` has the top-level lists of an instances file, and that every
    annotation's ``category_id`` is one of its categories.

    Args:
        data (dict): A parsed annotation file.
        source (str): How errors name the file.

    Raises:
        ValueError: Naming the missing or non-list fields of :data:`INSTANCES_FIELDS`, or the
            unknown category ids of annotations.
    """
    bad = [field for field in INSTANCES_FIELDS if not isinstance(data.get(field), list)]
    if bad:
        raise ValueError(f'{source}: not a COCO/LVIS instances file: the fields {bad} are missing '
                         f'or not lists (expected lists {list(INSTANCES_FIELDS)})')
    category_ids = {category['id'] for category in data['categories']}
    unknown = {ann['category_id'] for ann in data['annotations']} - category_ids
    if unknown:
        raise ValueError(f'{source}: annotations have the category_id values {sorted(unknown)}, '
                         'which are not ids of its categories')


def lvis_category_split(data: Dict[str, Any], source: str) -> CategorySplit:
    """The OV-LVIS split of an LVIS file: base = frequency 'f' or 'c', novel = 'r'.

    Args:
        data (dict): A parsed LVIS annotation file.
        source (str): How errors name the file.

    Returns:
        CategorySplit: Base and novel category ids.

    Raises:
        ValueError: If ``data`` lacks the fields of an instances file, or a category has no
            ``frequency`` (not an LVIS file) or an unknown one.
    """
    check_instances(data, source)
    known = LVIS_BASE_FREQUENCIES + LVIS_NOVEL_FREQUENCIES
    base_ids, novel_ids = [], []
    for index, category in enumerate(data['categories']):
        where = f'{source}: categories[{index}] (id {category.get("id")!r})'
        if LVIS_FREQUENCY_FIELD not in category:
            raise ValueError(f'{where} has no {LVIS_FREQUENCY_FIELD!r} field: not an LVIS '
                             f'annotation file (LVIS categories have a frequency in {known})')
        frequency = category[LVIS_FREQUENCY_FIELD]
        if frequency not in known:
            raise ValueError(f'{where}: {LVIS_FREQUENCY_FIELD} is {frequency!r}, expected one of '
                             f'{known}')
        (base_ids if frequency in LVIS_BASE_FREQUENCIES else novel_ids).append(category['id'])
    return CategorySplit(tuple(sorted(base_ids)), tuple(sorted(novel_ids)))


def coco_category_split(data: Dict[str, Any],
                        source: str,
                        base_classes: Sequence[str] = OV_COCO_BASE_CLASSES,
                        novel_classes: Sequence[str] = OV_COCO_NOVEL_CLASSES) -> CategorySplit:
    """The ids of the base and novel classes of a COCO file, found by name.

    Args:
        data (dict): A parsed COCO instances file.
        source (str): How errors name the file.
        base_classes (Sequence[str]): Base class names. Defaults to
            :data:`OV_COCO_BASE_CLASSES`.
        novel_classes (Sequence[str]): Novel class names. Defaults to
            :data:`OV_COCO_NOVEL_CLASSES`.

    Returns:
        CategorySplit: Base and novel category ids.

    Raises:
        ValueError: If ``data`` lacks the fields of an instances file, a class name is missing
            from its categories or names two of them, or a name is both base and novel.
    """
    check_instances(data, source)
    both = sorted(set(base_classes) & set(novel_classes))
    if both:
        raise ValueError(f'the classes {both} are both base and novel')
    wanted = set(base_classes) | set(novel_classes)
    ids_by_name: Dict[str, List[int]] = {}
    for category in data['categories']:
        if category.get('name') in wanted:
            ids_by_name.setdefault(category['name'], []).append(category['id'])
    missing = [name for name in (*base_classes, *novel_classes) if name not in ids_by_name]
    if missing:
        raise ValueError(f'{source}: the categories lack the class names {missing} (expected '
                         f'all {len(base_classes)} base and {len(novel_classes)} novel names, '
                         'as COCO 2017 spells them)')
    repeated = sorted(name for name, ids in ids_by_name.items() if len(ids) > 1)
    if repeated:
        raise ValueError(f'{source}: several categories are named each of {repeated}, '
                         'expected one per name')
    base_names = set(base_classes)
    base_ids, novel_ids = [], []
    for category in data['categories']:
        if category.get('name') in wanted:
            (base_ids if category['name'] in base_names else novel_ids).append(category['id'])
    return CategorySplit(tuple(sorted(base_ids)), tuple(sorted(novel_ids)))


def annotated_image_ids(data: Dict[str, Any], category_ids: Iterable[int]) -> Set[int]:
    """The ids of the images of ``data`` with an annotation of one of ``category_ids``."""
    category_ids = set(category_ids)
    return {ann['image_id'] for ann in data['annotations'] if ann['category_id'] in category_ids}


def subset_instances(data: Dict[str, Any],
                     annotation_category_ids: Iterable[int],
                     category_ids: Iterable[int],
                     image_ids: Optional[Iterable[int]] = None) -> Dict[str, Any]:
    """An instances file restricted to some categories and images, with the ids of all it keeps.

    Args:
        data (dict): A parsed COCO/LVIS instances file.
        annotation_category_ids (Iterable[int]): Annotations of these categories are kept, the
            others dropped.
        category_ids (Iterable[int]): The categories listed in the output, by ascending id.
        image_ids (Iterable[int], optional): The images to keep (with their annotations), in the
            input's order; None keeps every image. Defaults to None.

    Returns:
        dict: ``data`` with filtered ``images``, ``annotations`` and ``categories``; other
        top-level fields are kept as they are.
    """
    annotation_category_ids = set(annotation_category_ids)
    category_ids = set(category_ids)
    images = data['images']
    annotations = [ann for ann in data['annotations']
                   if ann['category_id'] in annotation_category_ids]
    if image_ids is not None:
        image_ids = set(image_ids)
        images = [image for image in images if image['id'] in image_ids]
        annotations = [ann for ann in annotations if ann['image_id'] in image_ids]
    categories = sorted((cat for cat in data['categories'] if cat['id'] in category_ids),
                        key=lambda cat: cat['id'])
    return dict(data, images=images, annotations=annotations, categories=categories)


def ov_lvis_train(data: Dict[str, Any], split: CategorySplit) -> Dict[str, Any]:
    """The OV-LVIS training file: every image and category, only the base annotations.

    The output carries no label of a novel category: the novel ids are also dropped from each
    image's ``neg_category_ids`` and ``not_exhaustive_category_ids``, and the ``image_count``
    and ``instance_count`` of every category are recounted on the kept annotations (0 for the
    novel ones), so statistics derived from the file (e.g. federated-loss class frequencies) do
    not see the novel classes. Category ids, names and ``frequency`` are unchanged, so LVIS tools
    and mmdet's ``LVISV1Dataset`` read the file as any LVIS v1 file.

    Args:
        data (dict): A parsed LVIS training file.
        split (CategorySplit): Its split, from :func:`lvis_category_split`.

    Returns:
        dict: The base-only training file.
    """
    all_ids = [category['id'] for category in data['categories']]
    out = subset_instances(data, split.base_ids, all_ids)
    base_ids = set(split.base_ids)
    images = []
    for image in out['images']:
        fields = {field: [cat_id for cat_id in image[field] if cat_id in base_ids]
                  for field in LVIS_IMAGE_CATEGORY_FIELDS if field in image}
        images.append(dict(image, **fields))
    image_ids: Dict[int, Set[int]] = {cat_id: set() for cat_id in all_ids}
    instances = dict.fromkeys(all_ids, 0)
    for ann in out['annotations']:
        image_ids[ann['category_id']].add(ann['image_id'])
        instances[ann['category_id']] += 1
    categories = [
        dict(category, **{LVIS_IMAGE_COUNT_FIELD: len(image_ids[category['id']]),
                          LVIS_INSTANCE_COUNT_FIELD: instances[category['id']]})
        for category in out['categories']
    ]
    return dict(out, images=images, categories=categories)


def category_names(data: Dict[str, Any]) -> Dict[int, str]:
    """The name of each category of an annotation file, by id (for
    :func:`mmclim.structures.split_record`)."""
    return {category['id']: category['name'] for category in data['categories']}


def count_annotations(data: Dict[str, Any], category_ids: Iterable[int]) -> int:
    """The number of annotations of ``data`` whose category is one of ``category_ids``."""
    category_ids = set(category_ids)
    return sum(ann['category_id'] in category_ids for ann in data['annotations'])
