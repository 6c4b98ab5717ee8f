# Copyright (c) mmclim contributors. All rights reserved.
import numpy as np
import pytest
from mmcv.transforms import Compose
from mmengine.registry import init_default_scope

from mmclim.datasets import CaptionPseudoBox

# A 40 x 60 (height x width) image.
HEIGHT, WIDTH = 40, 60


def caption_image(**extra) -> dict:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    img[:, :WIDTH // 2] = 200  # left half bright, to see a flip
    return dict(img=img, img_shape=(HEIGHT, WIDTH), ori_shape=(HEIGHT, WIDTH), img_id=5,
                img_path='five.jpg', captions=['a cat', 'a small cat', 'a kitten'], **extra)


def test_whole_image_box_and_region_fields() -> None:
    out = CaptionPseudoBox()(caption_image(tags=[3, 1]))
    assert out['gt_bboxes'].tensor.tolist() == [[0.0, 0.0, 60.0, 40.0]]
    assert out['gt_bboxes_labels'].tolist() == [0] and out['gt_bboxes_labels'].dtype == np.int64
    assert out['gt_ignore_flags'].tolist() == [False]
    assert out['region_captions'][0] in ('a cat', 'a small cat', 'a kitten')
    assert len(out['region_captions']) == 1
    assert out['image_ids'] == [5] and out['region_tags'] == [[3, 1]]
    assert out['mosaic_grid'] == (1, 1)
    assert 'captions' not in out and 'tags' not in out
    assert 'region_tags' not in CaptionPseudoBox()(caption_image())
    assert repr(CaptionPseudoBox()) == 'CaptionPseudoBox(all_captions=False)'


def test_caption_is_drawn_at_random() -> None:
    seen = set()
    for seed in range(30):
        np.random.seed(seed)
        seen.add(CaptionPseudoBox()(caption_image())['region_captions'][0])
    assert seen == {'a cat', 'a small cat', 'a kitten'}


def test_box_follows_resize_and_flip() -> None:
    init_default_scope('mmdet')
    pipeline = Compose([
        dict(type='CaptionPseudoBox'),
        # keep_ratio into 30 x 30: factor min(30/60, 30/40) = 0.5, so 20 x 30 (h x w)
        dict(type='Resize', scale=(30, 30), keep_ratio=True),
        dict(type='RandomFlip', prob=1.0, direction='horizontal'),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_shape', 'flip', 'region_captions', 'image_ids',
                        'region_tags')),
    ])
    packed = pipeline(caption_image(tags=[2]))
    sample = packed['data_samples']
    assert tuple(packed['inputs'].shape) == (3, 20, 30) and sample.flip
    assert packed['inputs'][0, 0, 0] == 0 and packed['inputs'][0, 0, -1] == 200  # flipped
    # The whole resized image: [0, 0, 30, 20], and a flipped whole image is the same box.
    assert sample.gt_instances.bboxes.tensor.tolist() == [[0.0, 0.0, 30.0, 20.0]]
    assert sample.gt_instances.labels.tolist() == [0]
    assert sample.image_ids == [5] and sample.region_tags == [[2]]


@pytest.mark.parametrize('captions', [None, [], ['  '], 'a cat'])
def test_bad_captions_name_the_image(captions) -> None:
    results = caption_image()
    if captions is None:
        del results['captions']
    else:
        results['captions'] = captions
    with pytest.raises(ValueError, match=r'CaptionPseudoBox: image five\.jpg needs a non-empty'):
        CaptionPseudoBox()(results)
    with pytest.raises(ValueError, match=r'no decoded image for five\.jpg'):
        CaptionPseudoBox()(dict(caption_image(), img=None))


def test_all_captions_for_baron() -> None:
    out = CaptionPseudoBox(all_captions=True)(caption_image())
    assert out['region_caption_lists'] == [['a cat', 'a small cat', 'a kitten']]
    assert out['region_captions'][0] in out['region_caption_lists'][0]
    assert 'region_caption_lists' not in CaptionPseudoBox()(caption_image())
    assert repr(CaptionPseudoBox(all_captions=True)) == 'CaptionPseudoBox(all_captions=True)'
