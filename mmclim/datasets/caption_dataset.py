# Copyright (c) mmclim contributors. All rights reserved.
"""Image-caption datasets: the shared validation and reporting of bad entries."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
from mmcv.transforms import LoadImageFromFile
from mmengine.dataset import BaseDataset
from mmengine.fileio import exists, get_local_path, load
from mmengine.logging import print_log
from PIL import Image

from .bad_image import TOO_SMALL_IMAGE, BadImageError, load_failure_reason
from .skip_counter import NUM_REPORTED_IDS, SkipCounter

BAD_ENTRY_POLICIES = ('skip', 'raise')
# The shorter side, in pixels, below which a decoded image is a bad entry (``min_image_size``):
# under one patch of the smallest tower here (``mmclim-toy-vit``, patch 8), such an image (the
# 1x1 spacers of web-crawled caption sets) only becomes a pseudo region or a training image by
# being blown up into a flat patch of colour.
DEFAULT_MIN_IMAGE_SIZE = 8
# What a loading transform (``LoadImageFromFile``) raises on a file it cannot read or decode:
# ``FileNotFoundError`` and Pillow's errors are ``OSError``; mmcv asserts when cv2 returns None;
# cv2 raises ``cv2.error`` on a 0-byte buffer; Pillow refuses decompression bombs (over twice
# ``Image.MAX_IMAGE_PIXELS``).
LOAD_ERRORS = (OSError, AssertionError, ValueError, cv2.error, Image.DecompressionBombError)

# The fields of a caption file with image tags (Detic's ``captions_train2017_tags_allcaps.json``
# and CC3M ``train_image_info_tags.json``, or ``tools/dataset_converters/add_caption_tags.py``):
# ``{"images": [{"id", "file_name", "captions": [...], "pos_category_ids": [...]}],
# "categories": [{"id", "name"}]}``. Read here, written by that tool.
IMAGES_FIELD = 'images'
INLINE_CAPTIONS_FIELD = 'captions'
TAGS_FIELD = 'pos_category_ids'
CATEGORIES_FIELD = 'categories'
# Bad entries of a caption file counted at start-up (``CaptionDataset.bad_entries`` keys).
NO_CAPTION = 'entries without a caption'
MISSING_FILE = 'missing image files'
WRONG_CAPTIONS = f'entries whose "{INLINE_CAPTIONS_FIELD}" is not a list of strings'
NON_STRING_CAPTIONS = 'entries with captions that are not strings (those captions dropped)'
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

    **The file's shape.** A file whose structure is wrong (``images`` missing or not a list, an
    image that is not an object or lacks ``id`` or ``file_name``, an annotation without
    ``image_id``) is an error naming the file and the entry (``images[3]``), whatever
    ``on_bad_entry``. Wrong values inside an entry are bad entries, counted in
    ``bad_entries``: ``captions`` that is neither a list nor a string (``42``, ``null``) makes its
    entry bad; a caption that is not a string is dropped and its entry counted.

    **Images that fail at load time.** The pipeline runs transform by transform. When its image
    loader (an mmcv ``LoadImageFromFile``, as in the shipped configs) cannot read or decode the
    file (missing, 0 bytes, truncated, not an image, a Pillow decompression bomb), when the
    decoded image's shorter side is under ``min_image_size``, or when a later transform raises
    :class:`~mmclim.datasets.bad_image.BadImageError` (a mosaic given an image too small for its
    cell), the sample is a bad image: with ``on_bad_entry='raise'`` (and always in
    ``test_mode``) a :class:`BadImageError` names the dataset, the annotation file, the image id,
    the file and the reason; with ``'skip'`` :meth:`prepare_data` returns None and mmengine's
    ``BaseDataset.__getitem__`` draws another index (at most ``max_refetch`` times, 1000 by
    default). Skips are counted per reason in ``bad_images`` and the first files in
    ``bad_image_files``, logged at the first skip and at every ``BAD_IMAGE_LOG_INTERVAL``-th,
    and summarised by :meth:`summarize_bad_images`, which also runs when the process ends (or
    the dataset is collected). The counts live in the process that loads: with dataloader
    workers each worker counts, logs and summarises its own skips (its pid in the lines) and the
    main process's ``bad_images`` stays empty.

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
        min_image_size (int): Shorter side, in pixels, below which a loaded image is a bad
            image; 1 accepts every image. Defaults to :data:`DEFAULT_MIN_IMAGE_SIZE` (8).
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
                 min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
                 backend_args: Optional[dict] = None,
                 **kwargs) -> None:
        if on_bad_entry not in BAD_ENTRY_POLICIES:
            raise ValueError(f'{type(self).__name__}: on_bad_entry must be one of '
                             f'{BAD_ENTRY_POLICIES}, got {on_bad_entry!r}')
        if isinstance(min_image_size, bool) or not (isinstance(min_image_size, int)
                                                    and min_image_size >= 1):
            raise ValueError(f'{type(self).__name__}: min_image_size must be an int >= 1, got '
                             f'{min_image_size!r}')
        self.min_image_size = min_image_size
        # Images skipped at load time by this process (see the class docstring).
        self._skips = SkipCounter('images skipped at load time', 'files')
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
            ``captions`` is the list as found (a single string made a list); a value that is not
            a list (``42``, None) is passed on as it is, to be counted as a bad entry.
        """
        raise NotImplementedError

    def _images(self, annotation: dict, expected: str) -> List[dict]:
        """The annotation's ``images`` list, its structure checked.

        Args:
            annotation (dict): The loaded json.
            expected (str): The format the errors say is expected.

        Returns:
            list[dict]: The images, each a dict with an int or str ``id`` and a str
            ``file_name``.

        Raises:
            KeyError: When ``images`` or an image's ``id`` or ``file_name`` is missing, naming
                the file and the image (``images[i]``).
            TypeError: When ``images`` is not a list, an image not an object, or its ``id`` or
                ``file_name`` of the wrong type, naming the same.
        """
        name = type(self).__name__
        images = annotation.get(IMAGES_FIELD)
        if images is None:
            raise KeyError(f'{name}: {self.ann_file} has no "{IMAGES_FIELD}" list; expected '
                           f'{expected}')
        if not isinstance(images, list):
            raise TypeError(f'{name}: {self.ann_file} "{IMAGES_FIELD}" must be a list, got '
                            f'{type(images).__name__}; expected {expected}')
        for index, img in enumerate(images):
            where = f'{self.ann_file} {IMAGES_FIELD}[{index}]'
            if not isinstance(img, dict):
                raise TypeError(f'{name}: {where} must be an object, got {img!r:.80}')
            missing = [k for k in ('id', 'file_name') if k not in img]
            if missing:
                raise KeyError(f'{name}: {where} lacks {missing}')
            if isinstance(img['id'], bool) or not isinstance(img['id'], (int, str)):
                raise TypeError(f'{name}: {where} "id" must be an int or a str, got '
                                f'{img["id"]!r:.80}')
            if not isinstance(img['file_name'], str):
                raise TypeError(f'{name}: {where} "file_name" must be a str, got '
                                f'{img["file_name"]!r:.80}')
        return images

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
        if not isinstance(cat_ids, list) or not all(
                isinstance(c, (int, str)) and not isinstance(c, bool) for c in cat_ids):
            raise TypeError(f'{type(self).__name__}: image {entry["img_id"]} of {self.ann_file} '
                            f'has "{TAGS_FIELD}" {cat_ids!r:.80}; expected a list of category '
                            'ids')
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
            raw = entry['captions']
            if not isinstance(raw, list):
                problems.append((WRONG_CAPTIONS, entry['img_id']))
                continue
            if not all(isinstance(c, str) for c in raw):
                problems.append((NON_STRING_CAPTIONS, entry['img_id']))
            captions = [c.strip() for c in raw if isinstance(c, str) and c.strip()]
            img_path = osp.join(img_root, entry['file_name'])
            if not captions:
                problems.append((NO_CAPTION, entry['img_id']))
            elif self.check_images and not exists(img_path, backend_args=self.backend_args):
                problems.append((MISSING_FILE, entry['img_id']))
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

    def prepare_data(self, idx: int) -> Optional[dict]:
        """The ``idx``-th sample through the pipeline, or None for a skipped bad image.

        Args:
            idx (int): Index of the data info.

        Returns:
            dict | None: The pipeline's output; None when the image is bad and
            ``on_bad_entry='skip'`` (``BaseDataset.__getitem__`` then draws another index) or
            when a transform returned None.

        Raises:
            BadImageError: For a bad image with ``on_bad_entry='raise'`` or in ``test_mode``.
        """
        data_info = self.get_data_info(idx)
        img_id = data_info.get('img_id')
        try:
            return self._run_pipeline(data_info)
        except BadImageError as error:
            if self.on_bad_entry == 'raise' or self.test_mode:
                raise BadImageError(
                    error.path, error.reason,
                    f'{type(self).__name__} {self.ann_file}: image {img_id}: {error}'
                    + ('' if self.test_mode else "; set on_bad_entry='skip' to train without "
                       'it')) from error
            self._skip_bad_image(error, img_id)
            return None

    def _run_pipeline(self, data: dict) -> Optional[dict]:
        """``self.pipeline`` transform by transform, what its loader fails on as a
        :class:`BadImageError` (see the class docstring)."""
        path = str(data.get('img_path', data.get('img_id')))
        for transform in self.pipeline.transforms:
            loader = isinstance(transform, LoadImageFromFile)
            try:
                data = transform(data)
            except LOAD_ERRORS as error:
                if not loader or isinstance(error, BadImageError):
                    raise
                detail = f'{type(error).__name__}: {error}'.splitlines()[0]
                raise BadImageError(path, load_failure_reason(path, error),
                                    f'{type(transform).__name__} cannot load {path} '
                                    f'({detail})') from error
            if data is None:
                if loader:
                    raise BadImageError(path, load_failure_reason(path, None),
                                        f'{type(transform).__name__} cannot load {path} '
                                        '(it returned None)')
                return None
            if loader:
                self._check_loaded(data, path)
        return data

    def _check_loaded(self, data: dict, path: str) -> None:
        """Raise :class:`BadImageError` when the loaded image is under ``min_image_size``."""
        img = data.get('img')
        if img is not None and min(img.shape[:2]) < self.min_image_size:
            raise BadImageError(
                path, TOO_SMALL_IMAGE,
                f'image {path} is {img.shape[0]}x{img.shape[1]} pixels, its shorter side under '
                f'min_image_size={self.min_image_size}')

    @property
    def bad_images(self) -> Dict[str, int]:
        """Reason -> images this process skipped at load time."""
        return self._skips.counts

    @property
    def bad_image_files(self) -> List[str]:
        """The first files this process skipped at load time."""
        return self._skips.first

    def _skip_bad_image(self, error: BadImageError, img_id: object) -> None:
        """Count and (the first, then every ``BAD_IMAGE_LOG_INTERVAL``-th) log a skip."""
        self._skips.count(self._report_name(), error.reason, error.path,
                          f'{self._report_name()}: skipped image {img_id} '
                          f'(on_bad_entry=skip): {error}')

    def _report_name(self) -> str:
        return f'{type(self).__name__} {self.ann_file}'

    def summarize_bad_images(self) -> Dict[str, int]:
        """Log the images this process skipped at load time, and return their counts.

        Returns:
            dict: Reason -> number of skips (a copy of ``bad_images``); empty when none.
        """
        return self._skips.summarize(self._report_name())
