# Copyright (c) mmclim contributors. All rights reserved.
from typing import List

from mmdet.registry import DATASETS

from .caption_dataset import INLINE_CAPTIONS_FIELD, OPTIONAL_IMAGE_FIELDS, CaptionDataset


@DATASETS.register_module()
class CC3MCaptionDataset(CaptionDataset):
    """A CC3M-style caption json: ``{"images": [{"id", "file_name", "captions": [...]}]}``.

    ``captions`` may also be a single string. Detic's ``train_image_info_tags.json`` adds
    ``pos_category_ids`` to the images and a ``categories`` list: read them as ``tags`` with
    ``with_tags=True``. See :class:`CaptionDataset` for the tags and the bad-entry handling.

    Example:
        >>> dataset = CC3MCaptionDataset(
        ...     data_root='data/cc3m/', ann_file='cc3m_train.json', data_prefix=dict(img='train/'))
    """

    def parse_entries(self, annotation: dict) -> List[dict]:
        images = self._images(annotation, '{"images": [{"id", "file_name", "captions"}]}')
        entries = []
        for img in images:
            captions = img.get(INLINE_CAPTIONS_FIELD, [])
            entries.append(dict(img_id=img['id'], file_name=img['file_name'],
                                captions=[captions] if isinstance(captions, str) else captions,
                                **{k: img[k] for k in OPTIONAL_IMAGE_FIELDS if k in img}))
        return entries
