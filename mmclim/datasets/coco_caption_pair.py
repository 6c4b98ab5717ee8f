# Copyright (c) mmclim contributors. All rights reserved.
import logging
from collections import defaultdict
from typing import List

from mmdet.registry import DATASETS
from mmengine.logging import print_log

from .caption_dataset import (INLINE_CAPTIONS_FIELD, NUM_REPORTED_IDS, OPTIONAL_IMAGE_FIELDS,
                              CaptionDataset)

ANNOTATIONS_FIELD = 'annotations'


@DATASETS.register_module()
class CocoCaptionPairDataset(CaptionDataset):
    """COCO Captions (``captions_train2017.json``) as image-caption pairs for CLIM training.

    (mmdet's own ``CocoCaptionDataset`` serves caption *evaluation* in another format.)

    The file has ``images`` (``id``, ``file_name``, ``height``, ``width``) and ``annotations``
    (``image_id``, ``caption``). Images may also carry their captions inline, as a ``captions``
    list (or string) on the image entry: Detic's ``captions_train2017_tags_allcaps.json`` does,
    with its ``pos_category_ids`` tags (see ``with_tags`` of :class:`CaptionDataset`); then
    ``annotations`` may be empty or absent. An image's captions are its inline ones followed by
    those of its annotations, exact repeats dropped. An image without any caption is a bad entry
    (see :class:`CaptionDataset`), and so is one whose inline ``captions`` is neither a list nor
    a string; ``annotations`` that is not a list, or an annotation that is not an object or has
    no ``image_id``, is an error naming the file and the annotation. Annotations of image ids
    absent from ``images`` are ignored with a warning naming their count and the first ids
    (``orphan_caption_ids`` holds the count).

    Example:
        >>> dataset = CocoCaptionPairDataset(
        ...     data_root='data/coco/', ann_file='annotations/captions_train2017.json',
        ...     data_prefix=dict(img='train2017/'))
    """

    def parse_entries(self, annotation: dict) -> List[dict]:
        name = type(self).__name__
        images = self._images(annotation, 'COCO Captions format')
        inline = any(INLINE_CAPTIONS_FIELD in img for img in images)
        if ANNOTATIONS_FIELD not in annotation and not inline:
            raise KeyError(f'{name}: {self.ann_file} has no "{ANNOTATIONS_FIELD}" list '
                           f'and no image has "{INLINE_CAPTIONS_FIELD}"; expected COCO Captions '
                           f'format')
        annotations = annotation.get(ANNOTATIONS_FIELD, [])
        if not isinstance(annotations, list):
            raise TypeError(f'{name}: {self.ann_file} "{ANNOTATIONS_FIELD}" must be a list, got '
                            f'{type(annotations).__name__}')
        captions = defaultdict(list)
        wrong = {}  # image id -> its inline captions that are neither a list nor a str
        for img in images:
            own = img.get(INLINE_CAPTIONS_FIELD, [])
            if isinstance(own, (str, list)):
                captions[img['id']].extend([own] if isinstance(own, str) else own)
            else:
                wrong[img['id']] = own
        for index, ann in enumerate(annotations):
            where = f'{self.ann_file} {ANNOTATIONS_FIELD}[{index}]'
            if not isinstance(ann, dict):
                raise TypeError(f'{name}: {where} must be an object, got {ann!r:.80}')
            if 'image_id' not in ann:
                raise KeyError(f'{name}: {where} lacks "image_id" (got keys {sorted(ann)})')
            if isinstance(ann['image_id'], (dict, list)):
                raise TypeError(f'{name}: {where} "image_id" must be an image id, got '
                                f'{ann["image_id"]!r:.80}')
            captions[ann['image_id']].append(ann.get('caption', ''))
        known = {img['id'] for img in images}
        orphans = sorted((i for i in captions if i not in known), key=str)
        self.orphan_caption_ids = len(orphans)
        if orphans:  # captions of no listed image: counted and named, never dropped silently
            print_log(f'{name}: {self.ann_file}: the captions of {len(orphans)} image ids absent '
                      f'from "images" are ignored (first ids: {orphans[:NUM_REPORTED_IDS]})',
                      logger='current', level=logging.WARNING)
        return [
            dict(img_id=img['id'], file_name=img['file_name'],
                 captions=wrong[img['id']] if img['id'] in wrong else _unique(captions[img['id']]),
                 **{k: img[k] for k in OPTIONAL_IMAGE_FIELDS if k in img})
            for img in images
        ]


def _unique(captions: list) -> list:
    """``captions`` without exact repeats of a string, in order (other values kept, to be
    counted as bad captions)."""
    seen, out = set(), []
    for caption in captions:
        if isinstance(caption, str):
            if caption in seen:
                continue
            seen.add(caption)
        out.append(caption)
    return out
