# Copyright (c) mmclim contributors. All rights reserved.
"""Write a caption json and its image folder as WebDataset tar shards, with their index.

Reads COCO Captions (``{"images": [{"id", "file_name"}], "annotations": [{"image_id",
"caption"}]}``) or a CC3M json (``{"images": [{"id", "file_name", "captions": [...]}]}``; an image
may have both: its inline captions come first, exact repeats dropped) and writes, in the order
of ``images``, shards ``00000.tar, 00001.tar, ...`` of ``--samples-per-shard`` samples, each
sample (keys ``000000000``, ``000000001``, ... as img2dataset's) holding

- ``<key>.<ext>``: the image file's bytes unchanged (``ext`` its lower-case extension, one of
  those :class:`mmclim.datasets.WebDatasetCaptions` reads),
- ``<key>.txt``: the first caption,
- ``<key>.json``: ``{"id": image id, "captions": [all captions]}``,

and ``index.json``, the per-shard sample counts (:func:`mmclim.datasets.webdataset_captions.
write_shard_index`). An image without a caption or whose file is missing is left out and
counted.

Example::

    python tools/dataset_converters/captions_to_webdataset.py \\
        data/cc3m/annotations/cc3m_train.json data/cc3m/train/ data/cc3m/train_wds/ \\
        --samples-per-shard 10000
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

from webdataset import TarWriter

from mmclim.datasets.caption_dataset import IMAGES_FIELD, INLINE_CAPTIONS_FIELD
from mmclim.datasets.coco_caption_pair import ANNOTATIONS_FIELD
from mmclim.datasets.webdataset_captions import (CAPTION_EXTENSION, IMAGE_EXTENSIONS,
                                                 INDEX_FILE_NAME, METADATA_CAPTIONS_FIELD,
                                                 METADATA_EXTENSION, METADATA_ID_FIELD,
                                                 write_shard_index)

# img2dataset's default: 10000 samples per shard.
DEFAULT_SAMPLES_PER_SHARD = 10000
SHARD_NAME = '{:05d}.tar'
KEY_DIGITS = 9  # img2dataset's keys: 000000000, 000000001, ...
# What an annotation's caption field is called (COCO Captions).
ANNOTATION_CAPTION_FIELD = 'caption'
ANNOTATION_IMAGE_FIELD = 'image_id'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('ann_file', help='COCO Captions or CC3M caption json')
    parser.add_argument('img_dir', help='the folder the file names are relative to')
    parser.add_argument('out_dir', help='where the shards and index.json are written')
    parser.add_argument('--samples-per-shard', type=int, default=DEFAULT_SAMPLES_PER_SHARD,
                        help=f'samples per shard (default {DEFAULT_SAMPLES_PER_SHARD})')
    return parser.parse_args(argv)


def image_captions(data: dict, ann_file: str) -> List[Tuple[object, str, List[str]]]:
    """Every image of a caption json with its captions.

    Args:
        data (dict): The loaded json.
        ann_file (str): Its path, for the errors.

    Returns:
        list[tuple]: ``(id, file_name, captions)`` in the order of ``images``; ``captions`` the
        stripped non-empty captions, inline ones first, exact repeats dropped.

    Raises:
        ValueError: When ``images`` is not a list of objects with ``id`` and ``file_name``, or
            an annotation lacks ``image_id``.
    """
    images = data.get(IMAGES_FIELD)
    if not isinstance(images, list):
        raise ValueError(f'{ann_file}: expected an "{IMAGES_FIELD}" list')
    captions: Dict[object, List[str]] = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict) or 'id' not in image or 'file_name' not in image:
            raise ValueError(f'{ann_file}: {IMAGES_FIELD}[{index}] must be an object with "id" '
                             'and "file_name"')
        inline = image.get(INLINE_CAPTIONS_FIELD) or []
        captions[image['id']] = [inline] if isinstance(inline, str) else list(inline)
    for index, annotation in enumerate(data.get(ANNOTATIONS_FIELD) or []):
        if not isinstance(annotation, dict) or ANNOTATION_IMAGE_FIELD not in annotation:
            raise ValueError(f'{ann_file}: {ANNOTATIONS_FIELD}[{index}] must be an object with '
                             f'"{ANNOTATION_IMAGE_FIELD}"')
        captions.setdefault(annotation[ANNOTATION_IMAGE_FIELD], []).append(
            annotation.get(ANNOTATION_CAPTION_FIELD))
    result = []
    for image in images:
        cleaned = [c.strip() for c in captions[image['id']] if isinstance(c, str) and c.strip()]
        result.append((image['id'], image['file_name'], list(dict.fromkeys(cleaned))))
    return result


def convert(ann_file: str, img_dir: str, out_dir: str,
            samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD) -> Dict[str, int]:
    """Write the shards and their index (see the module docstring).

    Args:
        ann_file (str): COCO Captions or CC3M caption json.
        img_dir (str): The folder its file names are relative to.
        out_dir (str): Where the shards and ``index.json`` go (made if missing).
        samples_per_shard (int): Samples per shard. Defaults to
            :data:`DEFAULT_SAMPLES_PER_SHARD`.

    Returns:
        dict[str, int]: What was left out: ``'without caption'`` and ``'missing file'`` counts,
        and ``'written'``, the samples written.

    Raises:
        ValueError: For a malformed json or an image whose extension is not one of
            :data:`~mmclim.datasets.webdataset_captions.IMAGE_EXTENSIONS`.
    """
    if samples_per_shard < 1:
        raise ValueError(f'--samples-per-shard must be >= 1, got {samples_per_shard}')
    with open(ann_file, encoding='utf-8') as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError(f'{ann_file}: expected a json object')
    os.makedirs(out_dir, exist_ok=True)
    counts: Dict[str, int] = {}
    skipped = {'without caption': 0, 'missing file': 0}
    writer: Optional[TarWriter] = None
    written = 0
    for img_id, file_name, captions in image_captions(data, ann_file):
        extension = osp.splitext(file_name)[1][1:].lower()
        if extension not in IMAGE_EXTENSIONS:
            raise ValueError(f'{ann_file}: image {img_id} ({file_name}) is not one of '
                             f'{IMAGE_EXTENSIONS}')
        path = osp.join(img_dir, file_name)
        if not captions or not osp.isfile(path):
            skipped['without caption' if not captions else 'missing file'] += 1
            continue
        if written % samples_per_shard == 0:
            if writer is not None:
                writer.close()
            shard = SHARD_NAME.format(written // samples_per_shard)
            writer = TarWriter(osp.join(out_dir, shard))
            counts[shard] = 0
        with open(path, 'rb') as file:
            image = file.read()
        writer.write({'__key__': f'{written:0{KEY_DIGITS}d}', extension: image,
                      CAPTION_EXTENSION: captions[0],
                      METADATA_EXTENSION: json.dumps({METADATA_ID_FIELD: img_id,
                                                      METADATA_CAPTIONS_FIELD: captions})})
        counts[shard] += 1
        written += 1
    if writer is not None:
        writer.close()
    write_shard_index(osp.join(out_dir, INDEX_FILE_NAME), counts)
    return dict(skipped, written=written)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        report = convert(args.ann_file, args.img_dir, args.out_dir, args.samples_per_shard)
    except (OSError, ValueError) as error:
        sys.exit(f'error: {error}')
    print(f'{args.out_dir}: {report["written"]} samples in '
          f'{-(-report["written"] // args.samples_per_shard)} shards; left out '
          f'{report["without caption"]} images without a caption and {report["missing file"]} '
          'whose file is missing')


if __name__ == '__main__':
    main()
