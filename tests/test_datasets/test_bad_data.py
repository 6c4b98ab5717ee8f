# Copyright (c) mmclim contributors. All rights reserved.
"""Bad data in the caption datasets: images that fail at load time, and caption files of the
wrong types. Every image here is a flat colour whose blue value is ``10 * id``, so a sample
shows which image it came from."""
import json
import logging
import re
import struct
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

import mmclim.datasets.skip_counter as skip_counter_module
from mmclim.datasets import CC3MCaptionDataset, CocoCaptionPairDataset

REPO_ROOT = Path(__file__).resolve().parents[2]
SIDE = 16  # the good images' side: over the default min_image_size of 8
# The image loader of the CLIM configs (configs/clim/clim_vitb16_coco-caption.py, load_image).
CLIM_LOADER = dict(type='LoadImageFromFile', imdecode_backend='pillow',
                   color_type='color_ignore_orientation')


@pytest.fixture(autouse=True)
def mmdet_scope() -> None:
    init_default_scope('mmdet')  # as the Runner does: the pipeline's transforms from mmdet


def _good(path: Path, img_id: int) -> None:
    cv2.imwrite(str(path), np.full((SIDE, SIDE, 3), (10 * img_id, 0, 0), np.uint8))


def _truncated(path: Path, img_id: int) -> None:
    """The first half of a valid file of the same format (a download cut short)."""
    img = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    ok, encoded = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(encoded.tobytes()[:len(encoded) // 2])


# Each corrupt kind: how it is written, and the reason it is counted under.
CORRUPT = {
    'truncated.png': (_truncated, 'undecodable image files'),
    'truncated.jpg': (_truncated, 'undecodable image files'),
    'text.jpg': (lambda path, _: path.write_text('<html>404 not found</html>\n'),
                 'undecodable image files'),
    'empty.jpg': (lambda path, _: path.write_bytes(b''), 'empty image files'),
    # Deleted after the start-up check, which finds the file (as on a flaky network disk).
    'vanished.jpg': (_good, 'missing image files'),
}


def _cc3m(tmp_path: Path, files: List[str], **kwargs) -> CC3MCaptionDataset:
    """A CC3M-style dataset of ``files`` (image ``i`` is ``files[i - 1]``, id ``i``): the good
    ones written by :func:`_good`, the others by their :data:`CORRUPT` writer."""
    folder = tmp_path / 'imgs'
    folder.mkdir(exist_ok=True)
    for img_id, name in enumerate(files, start=1):
        CORRUPT.get(name, (_good, None))[0](folder / name, img_id)
    ann_file = tmp_path / 'captions.json'
    ann_file.write_text(json.dumps(dict(images=[
        dict(id=img_id, file_name=name, captions=[f'caption {img_id}'])
        for img_id, name in enumerate(files, start=1)])))
    kwargs.setdefault('pipeline', [dict(type='LoadImageFromFile')])
    dataset = CC3MCaptionDataset(ann_file=str(ann_file), data_prefix=dict(img=str(folder)),
                                 **kwargs)
    if 'vanished.jpg' in files:
        (folder / 'vanished.jpg').unlink()
    return dataset


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__()
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            self.messages.append(record.getMessage())


@pytest.fixture
def warnings() -> List[str]:
    """The warnings mmengine's current logger emits during the test."""
    handler = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
@pytest.mark.parametrize('corrupt', sorted(CORRUPT))
def test_a_corrupt_image_is_replaced_by_another_under_skip(tmp_path: Path, corrupt: str,
                                                           backend: str) -> None:
    files = ['1.png', corrupt, '3.png']
    dataset = _cc3m(tmp_path, files, pipeline=[dict(type='LoadImageFromFile',
                                                    imdecode_backend=backend)])
    np.random.seed(0)
    sample = dataset[1]  # the corrupt one: another index is drawn until a good image comes
    assert sample['img_id'] in (1, 3)
    assert sample['img'].shape == (SIDE, SIDE, 3)
    assert (sample['img'][..., 0] == 10 * sample['img_id']).all()
    reason = CORRUPT[corrupt][1]
    assert sum(dataset.bad_images.values()) >= 1 and set(dataset.bad_images) == {reason}
    assert dataset.bad_image_files[0].endswith(corrupt)


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
@pytest.mark.parametrize('corrupt', sorted(CORRUPT))
def test_a_corrupt_image_stops_the_run_naming_it_under_raise(tmp_path: Path, corrupt: str,
                                                             backend: str) -> None:
    dataset = _cc3m(tmp_path, ['1.png', corrupt], on_bad_entry='raise',
                    pipeline=[dict(type='LoadImageFromFile', imdecode_backend=backend)])
    assert dataset[0]['img_id'] == 1
    pattern = (rf'CC3MCaptionDataset .*captions\.json: image 2: .*{re.escape(corrupt)}.*'
               "on_bad_entry='skip'")
    with pytest.raises(ValueError, match=pattern) as error:
        dataset[1]
    assert error.value.reason == CORRUPT[corrupt][1]
    assert not dataset.bad_images


def test_a_dataloader_with_two_corrupt_images_among_eight_yields_full_batches(
        tmp_path: Path, warnings: List[str]) -> None:
    files = ['1.png', '2.png', 'truncated.jpg', '4.png', '5.png', 'empty.jpg', '7.png', '8.png']
    dataset = _cc3m(tmp_path, files)
    np.random.seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False, num_workers=0,
                                         collate_fn=pseudo_collate)
    batches = list(loader)
    assert [len(batch['img_id']) for batch in batches] == [4, 4]
    for batch in batches:
        for img_id, img in zip(batch['img_id'], batch['img']):
            assert img_id not in (3, 6) and (img[..., 0] == 10 * img_id).all()
    # Positions 0, 1, 3 | 4, 6, 7 hold their own images; 2 and 5 hold replacements.
    ids = batches[0]['img_id'] + batches[1]['img_id']
    assert [ids[i] for i in (0, 1, 3, 4, 6, 7)] == [1, 2, 4, 5, 7, 8]
    # Each corrupt image was met at least once (a replacement may be drawn corrupt again).
    assert dataset.bad_images['undecodable image files'] >= 1
    assert dataset.bad_images['empty image files'] >= 1
    assert set(dataset.bad_image_files) == {str(tmp_path / 'imgs' / 'truncated.jpg'),
                                            str(tmp_path / 'imgs' / 'empty.jpg')}
    assert 'skipped image 3 (on_bad_entry=skip)' in warnings[0]
    assert 'truncated.jpg' in warnings[0]
    summary = dataset.summarize_bad_images()
    assert summary == dataset.bad_images
    assert re.search(rf'{sum(summary.values())} images skipped at load time by process \d+',
                     warnings[-1])


def test_worker_processes_count_and_summarise_their_own_skips(tmp_path: Path) -> None:
    files = ['1.png', '2.png', 'text.jpg', '4.png']
    dataset = _cc3m(tmp_path, files)
    log_file = tmp_path / 'log.txt'
    handler = logging.FileHandler(log_file)  # the worker inherits it
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1,
                                             collate_fn=pseudo_collate)
        # The epoch's end shuts the worker down; it logs its summary as it exits.
        assert [len(batch['img_id']) for batch in loader] == [2, 2]
    finally:
        logger.removeHandler(handler)
        handler.close()
    logged = log_file.read_text()
    # The worker's lines (its first skip and its summary); the main process counted nothing.
    assert re.search(r'skipped image 3 \(on_bad_entry=skip\).*text\.jpg', logged)
    assert re.search(r"images skipped at load time by process \d+: "
                     r"\{'undecodable image files': \d+\} \(first files: \[.*text\.jpg'\]\)",
                     logged)
    assert dataset.bad_images == {}


def test_skips_are_logged_at_the_first_then_every_nth(tmp_path: Path, warnings: List[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skip_counter_module, 'BAD_IMAGE_LOG_INTERVAL', 3)
    dataset = _cc3m(tmp_path, ['1.png', 'text.jpg'])
    for _ in range(7):
        assert dataset.prepare_data(1) is None
    assert dataset.bad_images == {'undecodable image files': 7}
    # Skips 1, 3 and 6 are logged: the first, then every 3rd.
    counts = [re.search(r'; (\d+) images skipped', message).group(1) for message in warnings]
    assert counts == ['1', '3', '6']


@pytest.mark.parametrize('kind, shape, reason', [
    ('1x1', (1, 1, 3), 'images smaller than min_image_size'),
    ('1x100', (1, 100, 3), 'images smaller than min_image_size'),
])
def test_a_tiny_image_is_a_bad_image(tmp_path: Path, kind: str, shape: Tuple[int, ...],
                                     reason: str) -> None:
    dataset = _cc3m(tmp_path, ['1.png', 'tiny.png'])
    cv2.imwrite(str(tmp_path / 'imgs' / 'tiny.png'), np.full(shape, 20, np.uint8))
    assert dataset.prepare_data(1) is None
    assert dataset.bad_images == {reason: 1}
    strict = _cc3m(tmp_path, ['1.png', 'tiny.png'], on_bad_entry='raise')
    cv2.imwrite(str(tmp_path / 'imgs' / 'tiny.png'), np.full(shape, 20, np.uint8))
    with pytest.raises(ValueError, match=rf'tiny\.png is {shape[0]}x{shape[1]} pixels, its '
                       r'shorter side under min_image_size=8'):
        strict[1]
    lenient = _cc3m(tmp_path, ['1.png', 'tiny.png'], min_image_size=1)
    cv2.imwrite(str(tmp_path / 'imgs' / 'tiny.png'), np.full(shape, 20, np.uint8))
    assert lenient[1]['img'].shape == shape


def test_a_tiny_image_in_a_cached_mosaic_is_a_counted_skip(tmp_path: Path) -> None:
    """The mosaic's own limit (max_upscale): a 4x4 image cannot fill a 64x64 cell (8x at
    most), the dataset counts it, and it stays out of the cache."""
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='CachedMosaicPseudoRegion', grid_choices=[2], canvas_size=128,
                     max_cached_images=4)]
    dataset = _cc3m(tmp_path, ['1.png', 'small.png', '3.png'], pipeline=pipeline,
                    min_image_size=1)
    cv2.imwrite(str(tmp_path / 'imgs' / 'small.png'), np.full((4, 4, 3), 20, np.uint8))
    assert dataset.prepare_data(1) is None
    assert dataset.bad_images == {'images too small for a mosaic cell': 1}
    assert dataset.prepare_data(0)['mosaic_grid'] == (1, 1)  # warm-up: the cache holds image 1
    mosaic = dataset.pipeline.transforms[1]
    assert [entry['img_id'] for entry in mosaic.cache] == [1]


@pytest.mark.parametrize('loader', [dict(type='LoadImageFromFile'), CLIM_LOADER])
def test_grey_and_rgba_files_load_as_colour(tmp_path: Path, loader: dict) -> None:
    """``color_type='color'`` (and the CLIM configs' Pillow loader) give 3 channels: grey copied
    into all three, an opaque alpha channel dropped (Pillow blends a transparent one with a
    background colour, cv2 drops it)."""
    dataset = _cc3m(tmp_path, ['grey.png', 'rgba.png'], pipeline=[loader])
    cv2.imwrite(str(tmp_path / 'imgs' / 'grey.png'), np.full((SIDE, SIDE), 77, np.uint8))
    bgra = np.zeros((SIDE, SIDE, 4), np.uint8)
    bgra[...] = (10, 20, 30, 255)
    cv2.imwrite(str(tmp_path / 'imgs' / 'rgba.png'), bgra)
    grey, rgba = dataset[0]['img'], dataset[1]['img']
    assert grey.shape == (SIDE, SIDE, 3) and (grey == 77).all()
    assert rgba.shape == (SIDE, SIDE, 3) and (rgba == (10, 20, 30)).all()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))


def _png_header(height: int, width: int) -> bytes:
    """The signature and the IHDR chunk of an 8-bit RGB PNG."""
    return b'\x89PNG\r\n\x1a\n' + _png_chunk(
        b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))


def _flat_png(path: Path, height: int, width: int, rgb: Tuple[int, int, int]) -> None:
    """A PNG of one colour written row by row (no (H, W, 3) array in memory): 12000 x 12000
    compresses to about 2 MB."""
    row = b'\x00' + bytes(rgb) * width  # filter type 0, then the pixels
    compressor = zlib.compressobj(1)
    data = b''.join([compressor.compress(row) for _ in range(height)] + [compressor.flush()])
    path.write_bytes(_png_header(height, width) + _png_chunk(b'IDAT', data)
                     + _png_chunk(b'IEND', b''))


def test_a_12000_pixel_image_goes_through_the_clim_pipeline(tmp_path: Path) -> None:
    """144 Mpixels (432 MB decoded) with the CLIM configs' loader and crop, as shipped."""
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'clim' / 'clim_vitb16_coco-caption.py'))
    pipeline = cfg.train_pipeline[:2]  # load_image, RandomResizedCrop (no packing)
    assert pipeline[0] == CLIM_LOADER
    dataset = _cc3m(tmp_path, ['1.png'], pipeline=pipeline)
    _flat_png(tmp_path / 'imgs' / '1.png', 12000, 12000, (90, 60, 30))
    with pytest.warns(Warning, match='decompression bomb'):  # Pillow warns over 89 Mpixels
        img = dataset[0]['img']
    assert img.shape == (224, 224, 3) and (img == (30, 60, 90)).all()  # BGR
    assert not dataset.bad_images


def test_a_decompression_bomb_is_a_bad_image(tmp_path: Path) -> None:
    """Over twice Pillow's limit (179 Mpixels) Pillow refuses the file from its header."""
    dataset = _cc3m(tmp_path, ['1.png', 'bomb.png'], pipeline=[CLIM_LOADER])
    (tmp_path / 'imgs' / 'bomb.png').write_bytes(_png_header(15000, 15000))  # no pixel data
    assert dataset.prepare_data(1) is None
    assert dataset.bad_images == {'undecodable image files': 1}
    assert dataset.bad_image_files == [str(tmp_path / 'imgs' / 'bomb.png')]


# Caption files of the wrong types. Each case: the images, whether the dataset loads under
# 'skip' with the other entries (and what it counts), or fails whatever the policy.


def _write(tmp_path: Path, data: dict) -> str:
    for name in ('a.png', 'b.png'):
        _good(tmp_path / name, 1)
    ann_file = tmp_path / 'bad.json'
    ann_file.write_text(json.dumps(data))
    return str(ann_file)


GOOD_IMAGE = dict(id='a', file_name='a.png', captions=['a good caption'])
WRONG_CAPTIONS = 'entries whose "captions" is not a list of strings'
NON_STRING = 'entries with captions that are not strings (those captions dropped)'


@pytest.mark.parametrize('captions, counted, kept_captions', [
    (42, {WRONG_CAPTIONS: 1}, None),
    (None, {WRONG_CAPTIONS: 1}, None),
    ({'text': 'a dict'}, {WRONG_CAPTIONS: 1}, None),
    (['a bird', 5, None], {NON_STRING: 1}, ['a bird']),
    ([5], {NON_STRING: 1, 'entries without a caption': 1}, None),
])
def test_cc3m_captions_of_the_wrong_type_are_counted_bad_entries(
        tmp_path: Path, captions: object, counted: Dict[str, int], kept_captions: list) -> None:
    ann_file = _write(tmp_path, dict(images=[
        GOOD_IMAGE, dict(id='b', file_name='b.png', captions=captions)]))
    dataset = CC3MCaptionDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)))
    assert dataset.bad_entries == counted
    loaded = [dataset.get_data_info(i)['captions'] for i in range(len(dataset))]
    assert loaded == [['a good caption']] + ([kept_captions] if kept_captions else [])
    with pytest.raises(ValueError, match=r"bad\.json: .*\(first ids: \['b'\]\)"):
        CC3MCaptionDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)),
                           on_bad_entry='raise')


@pytest.mark.parametrize('images, annotations, counted', [
    ([dict(id=1, file_name='a.png'), dict(id=2, file_name='b.png', captions=42)],
     [dict(image_id=1, caption='a cat')], {WRONG_CAPTIONS: 1}),
    ([dict(id=1, file_name='a.png'), dict(id=2, file_name='b.png', captions=None)],
     [dict(image_id=1, caption='a cat'), dict(image_id=2, caption='a dog')], {WRONG_CAPTIONS: 1}),
    ([dict(id=1, file_name='a.png'), dict(id=2, file_name='b.png')],
     [dict(image_id=1, caption='a cat'), dict(image_id=2, caption=7)],
     {NON_STRING: 1, 'entries without a caption': 1}),
    ([dict(id=1, file_name='a.png'), dict(id=2, file_name='b.png')],
     [dict(image_id=1, caption='a cat'), dict(image_id=2, caption=['a', 'list'])],
     {NON_STRING: 1, 'entries without a caption': 1}),
])
def test_coco_captions_of_the_wrong_type_are_counted_bad_entries(
        tmp_path: Path, images: list, annotations: list, counted: Dict[str, int]) -> None:
    ann_file = _write(tmp_path, dict(images=images, annotations=annotations))
    dataset = CocoCaptionPairDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)))
    assert dataset.bad_entries == counted
    assert len(dataset) == 1 and dataset.get_data_info(0)['captions'] == ['a cat']
    with pytest.raises(ValueError, match=r'bad\.json: .*\(first ids: \[2\]\)'):
        CocoCaptionPairDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)),
                               on_bad_entry='raise')


@pytest.mark.parametrize('dataset_type, data, error, message', [
    (CocoCaptionPairDataset, dict(images=[dict(id=1, file_name='a.png')],
                                  annotations=[dict(image_id=1, caption='a cat'),
                                               dict(id=9, caption='no image id')]),
     KeyError, r'bad\.json annotations\[1\] lacks "image_id"'),
    (CocoCaptionPairDataset, dict(images=[dict(id=1, file_name='a.png')],
                                  annotations=['a cat']),
     TypeError, r'bad\.json annotations\[0\] must be an object'),
    (CocoCaptionPairDataset, dict(images=[dict(id=1, file_name='a.png')],
                                  annotations=dict(image_id=1, caption='a cat')),
     TypeError, r'bad\.json "annotations" must be a list, got dict'),
    (CocoCaptionPairDataset, dict(images=dict(id=1, file_name='a.png'), annotations=[]),
     TypeError, r'bad\.json "images" must be a list, got dict'),
    (CocoCaptionPairDataset, dict(images=[dict(file_name='a.png')], annotations=[]),
     KeyError, r"bad\.json images\[0\] lacks \['id'\]"),
    (CC3MCaptionDataset, dict(images='a.png'),
     TypeError, r'bad\.json "images" must be a list, got str'),
    (CC3MCaptionDataset, dict(images=[GOOD_IMAGE, ['b.png', 'a caption']]),
     TypeError, r'bad\.json images\[1\] must be an object'),
    (CC3MCaptionDataset, dict(images=[GOOD_IMAGE, dict(id='b', file_name=None)]),
     TypeError, r'bad\.json images\[1\] "file_name" must be a str, got None'),
    (CC3MCaptionDataset, dict(images=[GOOD_IMAGE, dict(id=[2], file_name='b.png')]),
     TypeError, r'bad\.json images\[1\] "id" must be an int or a str, got \[2\]'),
])
def test_a_caption_file_of_the_wrong_shape_is_an_error_naming_the_entry(
        tmp_path: Path, dataset_type: type, data: dict, error: type, message: str) -> None:
    ann_file = _write(tmp_path, data)
    for policy in ('skip', 'raise'):
        with pytest.raises(error, match=message):
            dataset_type(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)),
                         on_bad_entry=policy)


def test_tags_of_the_wrong_type_name_the_image(tmp_path: Path) -> None:
    ann_file = _write(tmp_path, dict(
        images=[dict(GOOD_IMAGE, pos_category_ids=42)], categories=[dict(id=1, name='cat')]))
    with pytest.raises(TypeError, match=r'image a of .*bad\.json has "pos_category_ids" 42'):
        CC3MCaptionDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)),
                           with_tags=True, metainfo=dict(classes=('cat', )))


def test_captions_of_images_absent_from_the_file_are_counted_and_named(
        tmp_path: Path, warnings: List[str]) -> None:
    ann_file = _write(tmp_path, dict(
        images=[dict(id=1, file_name='a.png')],
        annotations=[dict(image_id=1, caption='a cat'), dict(image_id=7, caption='a ghost'),
                     dict(image_id=8, caption='another ghost')]))
    dataset = CocoCaptionPairDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path)))
    assert dataset.orphan_caption_ids == 2 and len(dataset) == 1
    logged = ' '.join(warnings)
    assert 'bad.json' in logged and '2 image ids absent' in logged and '[7, 8]' in logged
