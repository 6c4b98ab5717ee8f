# Copyright (c) mmclim contributors. All rights reserved.
from collections import defaultdict
from typing import List

from mmdet.registry import DATASETS

from .caption_dataset import (IMAGES_FIELD, INLINE_CAPTIONS_FIELD, OPTIONAL_IMAGE_FIELDS,
                              CaptionDataset)


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
    (see :class:`CaptionDataset`).

    Example:
        >>> dataset = CocoCaptionPairDataset(
        ...     data_root='data/coco/', ann_file='annotations/captions_train2017.json',
        ...     data_prefix=dict(img='train2017/'))
    """

    def parse_entries(self, annotation: dict) -> List[dict]:
        images = annotation.get(IMAGES_FIELD)
        if images is None:
            raise KeyError(f'{type(self).__name__}: {self.ann_file} has no "{IMAGES_FIELD}" list; '
                           f'expected COCO Captions format')
        inline = any(INLINE_CAPTIONS_FIELD in img for img in images)
        if 'annotations' not in annotation and not inline:
            raise KeyError(f'{type(self).__name__}: {self.ann_file} has no "annotations" list '
                           f'and no image has "{INLINE_CAPTIONS_FIELD}"; expected COCO Captions '
                           f'format')
        captions = defaultdict(list)
        for img in images:
            own = img.get(INLINE_CAPTIONS_FIELD, [])
            captions[img['id']].extend([own] if isinstance(own, str) else own)
        for ann in annotation.get('annotations', []):
            captions[ann['image_id']].append(ann.get('caption', ''))
        return [
            dict(img_id=img['id'], file_name=img['file_name'],
                 captions=list(dict.fromkeys(captions[img['id']])),
                 **{k: img[k] for k in OPTIONAL_IMAGE_FIELDS if k in img})
            for img in images
        ]
