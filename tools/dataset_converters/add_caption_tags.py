# Copyright (c) mmclim contributors. All rights reserved.
"""Tag caption images with the categories their captions name (Detic's image tags).

Reads a caption json, in COCO Captions format (``annotations`` with ``image_id`` and
``caption``) or with the captions inline (``images[*].captions``, a list or a string), and a
category list, and writes the same json with

- ``images[*].pos_category_ids``: the sorted ids of the categories whose name (or one of its
  LVIS ``synonyms``) any of the image's captions contains, and
- ``categories``: the category list (``id`` and ``name``),

the format Detic's ``tools/get_cc_tags.py`` writes and that ``CocoCaptionPairDataset`` /
``CC3MCaptionDataset`` read with ``with_tags=True``.

Matching: names and captions are lower-cased and split into words (runs of letters and digits,
so matches fall on word boundaries: ``cat`` is found in "a cat." but not in "a catalog"); a
parenthesised qualifier of a name is dropped (LVIS ``bow_(weapon)`` is "bow"); a name also
matches with its last word in the plural, ``+s`` or ``+es`` ("two dogs", "three buses").

The category list is a COCO or LVIS instances json (its ``categories``), a json list of
``{"id", "name"}`` or of names, or a text file with one name per line; names get the ids
1, 2, ... in order when the list has none.

Example::

    python tools/dataset_converters/add_caption_tags.py \\
        data/coco/annotations/captions_train2017.json \\
        --categories data/coco/annotations/instances_val2017.json
    # -> data/coco/annotations/captions_train2017_tags.json
"""
import argparse
import json
import os.path as osp
import re
import sys
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from mmclim.datasets.caption_dataset import (CATEGORIES_FIELD, IMAGES_FIELD, INLINE_CAPTIONS_FIELD,
                                             TAGS_FIELD)

# Words: runs of letters and digits (no underscore, so LVIS ``traffic_light`` is two words).
WORD = re.compile(r'[^\W_]+')
# A parenthesised qualifier of a category name, dropped before matching.
QUALIFIER = re.compile(r'\([^)]*\)')
# Plural endings tried on a name's last word.
PLURAL_SUFFIXES = ('s', 'es')
SYNONYMS_FIELD = 'synonyms'
OUTPUT_SUFFIX = '_tags'

Phrase = Tuple[str, ...]


def words(text: str) -> Phrase:
    """The lower-case words of ``text``."""
    return tuple(WORD.findall(text.lower()))


def load_categories(path: str) -> List[Dict[str, Any]]:
    """Read a category list.

    Args:
        path (str): An instances json (with ``categories``), a json list of ``{"id", "name"}``
            (extra fields such as LVIS ``synonyms`` are kept) or of names, or a text file with
            one name per line.

    Returns:
        list[dict]: Categories with ``id`` and ``name``; names without ids get 1, 2, ...
    """
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if path.endswith('.json'):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}: not a valid JSON file ({err})') from err
        if isinstance(data, dict):
            if CATEGORIES_FIELD not in data:
                raise ValueError(f'{path}: a JSON object must have a "{CATEGORIES_FIELD}" list')
            data = data[CATEGORIES_FIELD]
    else:
        data = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(data, list) or not data:
        raise ValueError(f'{path}: expected a non-empty list of categories')
    categories = []
    for index, item in enumerate(data):
        if isinstance(item, str):
            item = dict(id=index + 1, name=item)
        if not (isinstance(item, dict) and 'id' in item and isinstance(item.get('name'), str)):
            raise ValueError(f'{path}: category {index} must be a name or have "id" and "name", '
                             f'got {item!r}')
        categories.append(item)
    ids = [category['id'] for category in categories]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f'{path}: category ids {repeated} repeat; expected distinct ids')
    return categories


def phrase_index(categories: Sequence[Dict[str, Any]]) -> Dict[Phrase, FrozenSet[Any]]:
    """The word sequences that name each category: its name, its ``synonyms`` and their plurals.

    Args:
        categories (Sequence[dict]): Categories with ``id``, ``name`` and optionally
            ``synonyms``.

    Returns:
        dict: Phrase (tuple of words) -> ids of the categories it names.
    """
    index: Dict[Phrase, set] = {}
    for category in categories:
        for name in (category['name'], *category.get(SYNONYMS_FIELD, ())):
            phrase = words(QUALIFIER.sub(' ', name))
            if not phrase:
                continue
            plurals = [phrase[:-1] + (phrase[-1] + suffix, ) for suffix in PLURAL_SUFFIXES]
            for form in (phrase, *plurals):
                index.setdefault(form, set()).add(category['id'])
    return {phrase: frozenset(ids) for phrase, ids in index.items()}


def find_tags(captions: Sequence[str], index: Dict[Phrase, FrozenSet[Any]]) -> List[Any]:
    """Ids of the categories named in any of ``captions``.

    Args:
        captions (Sequence[str]): The captions of one image.
        index (dict): :func:`phrase_index` of the categories.

    Returns:
        list: The sorted category ids.
    """
    longest = max((len(phrase) for phrase in index), default=0)
    found: set = set()
    for caption in captions:
        caption_words = words(caption)
        for start in range(len(caption_words)):
            for end in range(start + 1, min(start + longest, len(caption_words)) + 1):
                found.update(index.get(caption_words[start:end], ()))
    return sorted(found)


def image_captions(data: Dict[str, Any], path: str) -> Dict[Any, List[str]]:
    """Every image's captions: inline ``captions`` first, then those of ``annotations``.

    Args:
        data (dict): The caption json.
        path (str): Its file, for error messages.

    Returns:
        dict: Image id -> captions.
    """
    images = data.get(IMAGES_FIELD)
    if not isinstance(images, list):
        raise ValueError(f'{path}: expected an "{IMAGES_FIELD}" list')
    captions: Dict[Any, List[str]] = {}
    for index, img in enumerate(images):
        if 'id' not in img:
            raise ValueError(f'{path}: {IMAGES_FIELD}[{index}] has no "id"')
        own = img.get(INLINE_CAPTIONS_FIELD, [])
        captions[img['id']] = [own] if isinstance(own, str) else list(own)
    for ann in data.get('annotations', []):
        if ann.get('image_id') in captions and isinstance(ann.get('caption'), str):
            captions[ann['image_id']].append(ann['caption'])
    return captions


def add_tags(data: Dict[str, Any], categories: Sequence[Dict[str, Any]],
             path: str) -> Tuple[Dict[str, Any], int]:
    """Return ``data`` with the images' ``pos_category_ids`` and the ``categories``.

    Args:
        data (dict): The caption json; left untouched (the images are copied).
        categories (Sequence[dict]): Categories with ``id`` and ``name``.
        path (str): The caption file, for error messages.

    Returns:
        tuple[dict, int]: The tagged json and how many images got at least one tag.
    """
    captions = image_captions(data, path)
    index = phrase_index(categories)
    images, num_tagged = [], 0
    for img in data[IMAGES_FIELD]:
        tags = find_tags(captions[img['id']], index)
        num_tagged += bool(tags)
        images.append({**img, TAGS_FIELD: tags})
    out = dict(data)
    out[IMAGES_FIELD] = images
    out[CATEGORIES_FIELD] = [dict(id=c['id'], name=c['name']) for c in categories]
    return out, num_tagged


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Add Detic image tags (pos_category_ids) to a caption json')
    parser.add_argument('caption_file',
                        help='caption json: COCO Captions or inline images[*].captions')
    parser.add_argument('--categories', required=True,
                        help='instances json (its categories), json list of categories or '
                        'names, or text file with one name per line')
    parser.add_argument('--out', help=f'output json; defaults to <caption_file stem>'
                        f'{OUTPUT_SUFFIX}.json beside caption_file')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    stem, _ = osp.splitext(args.caption_file)
    out_file = args.out or f'{stem}{OUTPUT_SUFFIX}.json'
    try:
        categories = load_categories(args.categories)
        with open(args.caption_file, encoding='utf-8') as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f'{args.caption_file}: expected a JSON object')
        tagged, num_tagged = add_tags(data, categories, args.caption_file)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    with open(out_file, 'w', encoding='utf-8') as f:
        json.dump(tagged, f, separators=(',', ':'))
    num_images = len(tagged[IMAGES_FIELD])
    print(f'{out_file}: {num_tagged} of {num_images} images got at least one tag '
          f'({len(categories)} categories)')


if __name__ == '__main__':
    main()
