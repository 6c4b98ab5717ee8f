# Copyright (c) mmclim contributors. All rights reserved.
from collections import defaultdict
from typing import List

from mmdet.registry import DATASETS

from .caption_dataset import CaptionDataset


@DATASETS.register_module()
class CocoCaptionPairDataset(CaptionDataset):
    """COCO Captions (``captions_train2017.json``) as image-caption pairs for CLIM training.

    (mmdet's own ``CocoCaptionDataset`` serves caption *evaluation* in another format.)

    The file has ``images`` (``id``, ``file_name``, ``height``, ``width``) and ``annotations``
    (``image_id``, ``caption``). An image without any caption annotation is a bad entry (see
    :class:`CaptionDataset`).

    Example:
        >>> dataset = CocoCaptionPairDataset(
        ...     data_root='data/coco/', ann_file='annotations/captions_train2017.json',
        ...     data_prefix=dict(img='train2017/'))
    """

    def parse_entries(self, annotation: dict) -> List[dict]:
        for key in ('images', 'annotations'):
            if key not in annotation:
                raise KeyError(f'{type(self).__name__}: {self.ann_file} has no "{key}" list; '
                               f'expected COCO Captions format')
        captions = defaultdict(list)
        for ann in annotation['annotations']:
            captions[ann['image_id']].append(ann.get('caption', ''))
        return [
            dict(img_id=img['id'], file_name=img['file_name'], captions=captions[img['id']],
                 **{k: img[k] for k in ('height', 'width') if k in img})
            for img in annotation['images']
        ]
