# Copyright (c) mmclim contributors. All rights reserved.
"""Make the OV-COCO split files (48 base / 17 novel classes of OV-RCNN) from COCO 2017.

Every output lists the same 65 categories (base and novel, by ascending id, ids kept, so a label
means the same class in every file and one 65-row text embedding serves them all); load any of
them with ``metainfo=dict(classes=OV_COCO_CLASSES)`` (or ``OV_COCO_BASE_CLASSES`` for a training
head over the base classes only). The other 15 COCO classes and their annotations are dropped.

- ``<train>_ov_base.json``: base annotations only, for training.
- ``<val>_ov_all.json``, ``<val>_ov_base.json``, ``<val>_ov_novel.json``: base + novel, base-only
  and novel-only annotations. ``OVCocoSplitMetric`` on ``_ov_all`` reports AP50 of base, novel
  and all classes in one evaluation; the other two evaluate one subset on its own.

By default an output keeps the images with at least one annotation of its classes: the base ones
for training, the 65 for validation (the same images in the three val files, so a class's AP is
the same in every file that has it). ``--keep-all-images`` keeps every image.

Example::

    python tools/dataset_converters/prepare_ov_coco.py \\
        data/coco/annotations/instances_train2017.json \\
        data/coco/annotations/instances_val2017.json
    # -> data/coco/annotations/instances_{train,val}2017_ov_*.json and ov_coco_split.json
"""
import argparse
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

from mmclim.datasets.ov_splits import (OV_COCO_BASE_CLASSES, OV_COCO_NOVEL_CLASSES, CategorySplit,
                                       annotated_image_ids, category_names, coco_category_split,
                                       count_annotations, dump_json, load_annotation_file,
                                       subset_instances)
from mmclim.structures import split_record, write_split_file

SPLIT_FILE = 'ov_coco_split.json'
SPLIT_RULE = (f'OV-COCO (Zareian et al., OV-RCNN, CVPR 2021): {len(OV_COCO_BASE_CLASSES)} base '
              f'and {len(OV_COCO_NOVEL_CLASSES)} novel COCO 2017 classes, by name')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Make the OV-COCO split files')
    parser.add_argument('train_file', help='COCO 2017 train annotations (instances_train2017.json)')
    parser.add_argument('val_file', help='COCO 2017 val annotations (instances_val2017.json)')
    parser.add_argument(
        '--out-dir', help='output folder; defaults to the folder of train_file')
    parser.add_argument(
        '--keep-all-images', action='store_true',
        help='keep every image, also those without an annotation of the output\'s classes')
    return parser.parse_args(argv)


def _write(name: str, data: Dict[str, Any], source: Dict[str, Any], split: CategorySplit,
           out_dir: str) -> None:
    """Write ``data`` (taken from ``source``) to ``out_dir/name`` and print its counts."""
    path = osp.join(out_dir, name)
    dump_json(data, path)
    kept, total = len(data['annotations']), len(source['annotations'])
    print(f'{path}: {len(data["images"])} of {len(source["images"])} images, {kept} of {total} '
          f'annotations kept ({count_annotations(data, split.base_ids)} base, '
          f'{count_annotations(data, split.novel_ids)} novel; {total - kept} dropped), '
          f'{len(data["categories"])} categories')


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    out_dir = args.out_dir or osp.dirname(osp.abspath(args.train_file))
    try:
        train = load_annotation_file(args.train_file)
        val = load_annotation_file(args.val_file)
        split = coco_category_split(train, args.train_file)
        val_split = coco_category_split(val, args.val_file)
    except ValueError as err:
        sys.exit(f'error: {err}')
    if val_split != split:
        sys.exit(f'error: {args.train_file} and {args.val_file} give the OV-COCO classes '
                 f'different category ids (base {split.base_ids} / novel {split.novel_ids} vs '
                 f'base {val_split.base_ids} / novel {val_split.novel_ids}); expected the same')
    print(f'classes: {len(split.base_ids)} base, {len(split.novel_ids)} novel, '
          f'{len(train["categories"]) - len(split.ids)} unused in {args.train_file}')

    os.makedirs(out_dir, exist_ok=True)
    train_stem, val_stem = (osp.splitext(osp.basename(path))[0]
                            for path in (args.train_file, args.val_file))
    train_images = None if args.keep_all_images else annotated_image_ids(train, split.base_ids)
    _write(f'{train_stem}_ov_base.json',
           subset_instances(train, split.base_ids, split.ids, train_images), train, split, out_dir)
    val_images = None if args.keep_all_images else annotated_image_ids(val, split.ids)
    for subset, annotation_ids in (('all', split.ids), ('base', split.base_ids),
                                   ('novel', split.novel_ids)):
        _write(f'{val_stem}_ov_{subset}.json',
               subset_instances(val, annotation_ids, split.ids, val_images), val, split, out_dir)
    split_path = osp.join(out_dir, SPLIT_FILE)
    write_split_file(split_path, split_record(category_names(train), split.base_ids,
                                              split.novel_ids, SPLIT_RULE))
    print(f'{split_path}: base and novel category ids and names')


if __name__ == '__main__':
    main()
