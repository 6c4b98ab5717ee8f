# Copyright (c) mmclim contributors. All rights reserved.
"""Make the OV-LVIS training file: LVIS v1 train with the annotations of rare categories removed.

Base classes are the frequent ('f') and common ('c') categories (866 in LVIS v1), novel classes the
rare ('r') ones (337), as read from the ``frequency`` field of the input file. The output keeps
every image and every category (ids unchanged, so it reads as any LVIS v1 file and evaluation
runs on the standard ``lvis_v1_val.json``) and only base annotations; novel ids are also removed
from each image's ``neg_category_ids`` / ``not_exhaustive_category_ids``, and each category's
``image_count`` / ``instance_count`` is recounted on the kept annotations. A small split file lists
the base and novel ids and names.

Example::

    python tools/dataset_converters/prepare_ov_lvis.py data/lvis/annotations/lvis_v1_train.json
    # -> data/lvis/annotations/lvis_v1_train_ov_base.json, lvis_v1_train_ov_split.json
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmclim.datasets.ov_splits import (LVIS_BASE_FREQUENCIES, LVIS_NOVEL_FREQUENCIES,
                                       LVIS_V1_NUM_BASE_CLASSES, LVIS_V1_NUM_NOVEL_CLASSES,
                                       annotated_image_ids, category_names, dump_json,
                                       load_annotation_file, lvis_category_split, ov_lvis_train)
from mmclim.structures import split_record, write_split_file

BASE_SUFFIX = '_ov_base.json'
SPLIT_SUFFIX = '_ov_split.json'
SPLIT_RULE = (f'OV-LVIS: base = LVIS frequency in {list(LVIS_BASE_FREQUENCIES)}, '
              f'novel = frequency in {list(LVIS_NOVEL_FREQUENCIES)}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Make the base-only OV-LVIS training file')
    parser.add_argument('ann_file', help='LVIS v1 training annotations (lvis_v1_train.json)')
    parser.add_argument('--out', help=f'base-only output json; defaults to <ann_file>{BASE_SUFFIX}')
    parser.add_argument(
        '--split-out', help=f'json listing the base and novel categories; defaults to '
        f'<ann_file>{SPLIT_SUFFIX}')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    stem = osp.splitext(args.ann_file)[0]
    out = args.out or stem + BASE_SUFFIX
    split_out = args.split_out or stem + SPLIT_SUFFIX
    try:
        data = load_annotation_file(args.ann_file)
        split = lvis_category_split(data, args.ann_file)
    except ValueError as err:
        sys.exit(f'error: {err}')
    num_base, num_novel = len(split.base_ids), len(split.novel_ids)
    if (num_base, num_novel) != (LVIS_V1_NUM_BASE_CLASSES, LVIS_V1_NUM_NOVEL_CLASSES):
        print(f'warning: {args.ann_file} has {num_base} base and {num_novel} novel categories; '
              f'LVIS v1 has {LVIS_V1_NUM_BASE_CLASSES} and {LVIS_V1_NUM_NOVEL_CLASSES}: is it '
              'LVIS v1?', file=sys.stderr)

    train = ov_lvis_train(data, split)
    dump_json(train, out)
    write_split_file(split_out, split_record(category_names(data), split.base_ids,
                                             split.novel_ids, SPLIT_RULE))

    kept = len(train['annotations'])
    print(f'{args.ann_file}: {len(data["images"])} images, {len(data["annotations"])} '
          f'annotations, {len(data["categories"])} categories')
    print(f'classes: {num_base} base (frequency {"/".join(LVIS_BASE_FREQUENCIES)}), {num_novel} '
          f'novel (frequency {"/".join(LVIS_NOVEL_FREQUENCIES)})')
    print(f'annotations: {kept} base kept, {len(data["annotations"]) - kept} novel dropped')
    num_annotated = len(annotated_image_ids(train, split.base_ids))
    print(f'{out}: {len(train["images"])} images ({num_annotated} with base annotations), {kept} '
          f'annotations, {len(train["categories"])} categories')
    print(f'{split_out}: base and novel category ids and names')


if __name__ == '__main__':
    main()
