# Copyright (c) mmclim contributors. All rights reserved.
"""Generate the embedded toy data set (coloured shapes, COCO format) used by the demo and tests."""
import argparse

from mmclim.datasets import generate_shape_scenes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate the toy shapes data set')
    parser.add_argument('--out', default='data/toy_shapes', help='output folder')
    parser.add_argument('--num-train', type=int, default=64, help='training scenes')
    parser.add_argument('--num-val', type=int, default=16, help='validation scenes')
    parser.add_argument('--image-size', type=int, default=128, help='scene side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    for split, num, seed in (('train', args.num_train, args.seed),
                             ('val', args.num_val, args.seed + 1)):
        ann_file = generate_shape_scenes(args.out, split, num, args.image_size, seed=seed)
        print(f'{split}: {num} scenes -> {ann_file}')


if __name__ == '__main__':
    main()
