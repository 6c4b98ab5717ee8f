# Copyright (c) mmclim contributors. All rights reserved.
"""Image-caption datasets: the shared validation and reporting of bad entries."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.dataset import BaseDataset
from mmengine.fileio import exists, get_local_path, load
from mmengine.logging import print_log

# How many offending image ids the start-up report names.
NUM_REPORTED_IDS = 5
BAD_ENTRY_POLICIES = ('skip', 'raise')

# The fields of a caption file with image tags (Detic's ``captions_train2017_tags_allcaps.json``
# and CC3M ``train_image_info_tags.json``, or ``tools/dataset_converters/add_caption_tags.py``):
# ``{"images": [{"id", "file_name", "captions": [...], "pos_category_ids": [...]}],
# "categories": [{"id", "name"}]}``. Read here, written by that tool.
IMAGES_FIELD = 'images'
INLINE_CAPTIONS_FIELD = 'captions'
TAGS_FIELD = 'pos_category_ids'
CATEGORIES_FIELD = 'categories'
# Image fields an entry of :meth:`CaptionDataset.parse_entries` carries over when present.
OPTIONAL_IMAGE_FIELDS = ('height', 'width', TAGS_FIELD)
TAGS_TOOL = 'tools/dataset_converters/add_caption_tags.py'


class CaptionDataset(BaseDataset):
    """Base class of image-caption datasets.

    Subclasses parse their annotation file in :meth:`parse_entries` into dicts with ``img_id``,
    ``file_name`` and ``captions`` (list of str). This class joins the image paths, checks every
    entry and reports the bad ones at start-up: an entry whose image file is missing (when
    ``check_images``) or that has no non-empty caption is counted, logged with the first few ids,
    and then skipped or fatal as ``on_bad_entry`` says. Nothing is dropped silently; the counts
    stay in ``self.bad_entries``.

    Each data info has ``img_path``, ``img_id``, ``captions`` (the stripped non-empty captions)
    and, when the annotation has them, ``height`` and ``width``.

    With ``with_tags=True`` it also has ``tags`` (list[int], sorted, no repeats): the image's
    ``pos_category_ids`` (Detic's image tags: the categories whose names its captions mention)
    as label indices ``0 .. C - 1`` in the order of ``metainfo['classes']``. The annotation's
    ``categories`` list gives each id its name, which must be one of the classes. An image
    without ``pos_category_ids``, or with an empty list, gets ``[]``; a file where no image has
    them is an error (make them with ``tools/dataset_converters/add_caption_tags.py``).

    Args:
        ann_file (str): Annotation file, relative to ``data_root``.
        data_root (str): Root of ``ann_file`` and ``data_prefix``. Defaults to ``''``.
        data_prefix (dict): ``dict(img='folder/')``, the image folder. Defaults to
            ``dict(img='')``.
        on_bad_entry (str): ``'skip'`` (log and skip bad entries) or ``'raise'`` (fail naming
            them). Defaults to ``'skip'``.
        check_images (bool): Check at start-up that every image file exists. Defaults to True.
        with_tags (bool): Add ``tags`` from the images' ``pos_category_ids``; needs
            ``metainfo=dict(classes=...)`` and a ``categories`` list in the file. Defaults to
            False.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
        **kwargs: Other arguments of ``mmengine.dataset.BaseDataset`` (``pipeline``,
            ``test_mode``, ``indices``, ``serialize_data``, ``lazy_init``, ...).
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: Optional[dict] = None,
                 on_bad_entry: str = 'skip',
                 check_images: bool = True,
                 with_tags: bool = False,
                 backend_args: Optional[dict] = None,
                 **kwargs) -> None:
        if on_bad_entry not in BAD_ENTRY_POLICIES:
            raise ValueError(f'{type(self).__name__}: on_bad_entry must be one of '
                             f'{BAD_ENTRY_POLICIES}, got {on_bad_entry!r}')
        self.on_bad_entry = on_bad_entry
        self.check_images = check_images
        self.with_tags = with_tags
        # Category id -> label index, set when the annotation is loaded with ``with_tags``.
        self.cat2label: Dict[object, int] = {}
        self.categories_outside_classes: Dict[object, str] = {}
        self.backend_args = backend_args
        self.bad_entries: dict = {}
        super().__init__(ann_file=ann_file, data_root=data_root,
                         data_prefix=data_prefix or dict(img=''), **kwargs)

    def parse_entries(self, annotation: dict) -> List[dict]:
        """Turn the loaded annotation file into entries.

        Args:
            annotation (dict): The loaded json.

        Returns:
            list[dict]: Entries with ``img_id``, ``file_name``, ``captions`` and optionally the
            image's :data:`OPTIONAL_IMAGE_FIELDS` (``height``, ``width``, ``pos_category_ids``).
        """
        raise NotImplementedError

    def _load_annotation(self) -> dict:
        if not exists(self.ann_file, backend_args=self.backend_args):
            raise FileNotFoundError(f'{type(self).__name__}: annotation file {self.ann_file} '
                                    f'does not exist')
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            annotation = load(local_path)
        if not isinstance(annotation, dict):
            raise ValueError(f'{type(self).__name__}: {self.ann_file} must hold a json object, '
                             f'got {type(annotation).__name__}')
        return annotation

    def _category_labels(self, annotation: dict) -> Dict[object, int]:
        """Map the annotation's category ids to label indices of ``metainfo['classes']``.

        Args:
            annotation (dict): The loaded json, with ``categories`` (``[{"id", "name"}]``).

        Returns:
            dict: Category id -> label index in ``0 .. C - 1``.
        """
        name = type(self).__name__
        classes: Sequence[str] = self.metainfo.get('classes') or ()
        if not classes:
            raise ValueError(f"{name}: with_tags=True needs the class names, "
                             f"metainfo=dict(classes=...), to turn {self.ann_file}'s "
                             f'"{TAGS_FIELD}" into label indices')
        categories = annotation.get(CATEGORIES_FIELD)
        if not isinstance(categories, list) or not categories:
            raise KeyError(f'{name}: with_tags=True needs a "{CATEGORIES_FIELD}" list '
                           f'([{{"id", "name"}}]) in {self.ann_file} to name its '
                           f'"{TAGS_FIELD}"; add it with {TAGS_TOOL}')
        label_of = {class_name: label for label, class_name in enumerate(classes)}
        cat2label, outside = {}, {}
        for index, category in enumerate(categories):
            if not isinstance(category, dict) or 'id' not in category or 'name' not in category:
                raise KeyError(f'{name}: {self.ann_file} {CATEGORIES_FIELD}[{index}] must have '
                               f'"id" and "name", got {category!r}')
            if category['name'] in label_of:
                cat2label[category['id']] = label_of[category['name']]
            else:
                outside[category['id']] = category['name']
        if not cat2label:
            raise ValueError(f'{name}: no category of {self.ann_file} is one of the '
                             f'{len(classes)} metainfo["classes"] (first categories: '
                             f'{[c.get("name") for c in categories[:NUM_REPORTED_IDS]]})')
        if outside:
            # e.g. Detic's COCO tag file names all 80 COCO classes; OV-COCO trains 65 of them.
            print_log(f'{name}: {len(outside)} categories of {self.ann_file} are not among the '
                      f'{len(classes)} metainfo["classes"] (first: '
                      f'{list(outside.values())[:NUM_REPORTED_IDS]}); their tags are not used',
                      logger='current', level=30)
        self.categories_outside_classes = outside
        return cat2label

    def _tags(self, entry: dict) -> List[int]:
        """The sorted label indices of ``entry``'s ``pos_category_ids``."""
        cat_ids = entry.get(TAGS_FIELD) or []
        known = {**self.cat2label, **self.categories_outside_classes}
        unknown = [cat_id for cat_id in cat_ids if cat_id not in known]
        if unknown:
            raise ValueError(f'{type(self).__name__}: image {entry["img_id"]} of {self.ann_file} '
                             f'has "{TAGS_FIELD}" {unknown} that are not ids of its '
                             f'"{CATEGORIES_FIELD}"')
        return sorted({self.cat2label[c] for c in cat_ids if c in self.cat2label})

    def _report(self, problems: List[Tuple[str, object]]) -> None:
        """Count, log and skip or raise for ``(reason, img_id)`` pairs."""
        by_reason: dict = {}
        for reason, img_id in problems:
            by_reason.setdefault(reason, []).append(img_id)
        self.bad_entries = {reason: len(ids) for reason, ids in by_reason.items()}
        if not problems:
            return
        summary = '; '.join(f'{len(ids)} {reason} (first ids: {ids[:NUM_REPORTED_IDS]})'
                            for reason, ids in by_reason.items())
        message = f'{type(self).__name__} {self.ann_file}: {summary}'
        if self.on_bad_entry == 'raise':
            raise ValueError(f"{message}; set on_bad_entry='skip' to train without them")
        print_log(f'{message}; skipped (on_bad_entry=skip)', logger='current', level=30)

    def load_data_list(self) -> List[dict]:
        """Parse, check and report the entries.

        Returns:
            list[dict]: The good entries as data infos.
        """
        annotation = self._load_annotation()
        entries = self.parse_entries(annotation)
        if self.with_tags:
            self.cat2label = self._category_labels(annotation)
            if entries and not any(TAGS_FIELD in entry for entry in entries):
                raise KeyError(f'{type(self).__name__}: with_tags=True but no image of '
                               f'{self.ann_file} has "{TAGS_FIELD}"; add them with {TAGS_TOOL}')
        img_root = self.data_prefix.get('img', '')
        data_list, problems = [], []
        for entry in entries:
            captions = [c.strip() for c in entry['captions'] if isinstance(c, str) and c.strip()]
            img_path = osp.join(img_root, entry['file_name'])
            if not captions:
                problems.append(('entries without a caption', entry['img_id']))
            elif self.check_images and not exists(img_path, backend_args=self.backend_args):
                problems.append(('missing image files', entry['img_id']))
            else:
                info = dict(img_path=img_path, img_id=entry['img_id'], captions=captions)
                info.update({k: entry[k] for k in ('height', 'width') if k in entry})
                if self.with_tags:
                    info['tags'] = self._tags(entry)
                data_list.append(info)
        self._report(problems)
        if not data_list:
            raise ValueError(f'{type(self).__name__}: no usable entry in {self.ann_file}')
        return data_list
