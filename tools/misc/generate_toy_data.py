# Copyright (c) mmclim contributors. All rights reserved.
"""Generate the embedded toy data set (coloured shapes) used by the demo, toy configs and tests.

Writes, under ``--out``: single-object images with captions (COCO Captions format,
``annotations/captions_caption_train.json``) for CLIP/CLIM training, object-centric ones
(``captions_caption_centric.json``, the shape filling 75-95% of the side) for the toy Detic
experiment, and multi-object scenes with
boxes (COCO instances format, ``annotations/instances_{train,val}.json``) for detection and
zero-shot region classification, and ``instances_train_ov_base.json`` without the boxes of the toy
novel classes (``mmclim.datasets.TOY_NOVEL_CLASSES``) for open-vocabulary detection.
"""
import argparse

from mmclim.datasets import generate_shape_captions, generate_shape_scenes, write_base_only
from mmclim.datasets.toy_shapes import OBJECT_CENTRIC_FRACTION, OBJECT_CENTRIC_SPLIT


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate the toy shapes data set')
    parser.add_argument('--out', default='data/toy_shapes', help='output folder')
    parser.add_argument('--num-captions', type=int, default=2000, help='captioned images')
    parser.add_argument('--num-train', type=int, default=400, help='training scenes')
    parser.add_argument('--num-val', type=int, default=100, help='validation scenes')
    parser.add_argument('--caption-size', type=int, default=64, help='captioned image side')
    parser.add_argument('--scene-size', type=int, default=128, help='scene side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ann_file = generate_shape_captions(args.out, 'caption_train', args.num_captions,
                                       args.caption_size, seed=args.seed)
    print(f'caption_train: {args.num_captions} captioned images -> {ann_file}')
    ann_file = generate_shape_captions(args.out, OBJECT_CENTRIC_SPLIT, args.num_captions,
                                       args.caption_size, seed=args.seed + 3,
                                       object_fraction=OBJECT_CENTRIC_FRACTION)
    print(f'{OBJECT_CENTRIC_SPLIT}: {args.num_captions} object-centric captioned images -> '
          f'{ann_file}')
    for split, num, seed in (('train', args.num_train, args.seed + 1),
                             ('val', args.num_val, args.seed + 2)):
        ann_file = generate_shape_scenes(args.out, split, num, args.scene_size, seed=seed)
        print(f'{split}: {num} scenes -> {ann_file}')
    base_only = write_base_only(ann_file.with_name('instances_train.json'))
    print(f'train, base classes only: -> {base_only}')


if __name__ == '__main__':
    main()
