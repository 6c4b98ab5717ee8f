# Copyright (c) mmclim contributors. All rights reserved.
"""WebDatasetCaptions and tools/dataset_converters/captions_to_webdataset.py: the converter's
round trip, the shard split over ranks and workers, bad samples and shards, resuming, and a
two-process gloo run."""
import copy
import json
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, fork_process, free_port, join_process, load_tool
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader
from webdataset import TarWriter

import mmclim.datasets.webdataset_captions as wds_module
from mmclim.datasets import BadImageError, WebDatasetCaptions, generate_shape_captions
from mmclim.datasets.webdataset_captions import write_shard_index

CONFIGS = REPO_ROOT / 'configs' / 'clim'
# The image loader of the CLIM configs (configs/clim/clim_vitb16_coco-caption.py, load_image).
CLIM_LOADER = dict(type='LoadImageFromFile', imdecode_backend='pillow',
                   color_type='color_ignore_orientation')
SIDE = 16  # the toy images' side
NUM_IMAGES = 24
PER_SHARD = 3  # 8 shards of 3
NUM_SHARDS = NUM_IMAGES // PER_SHARD
SHARDS = '{00000..00007}.tar'
RUN_BATCH = 3  # the runner test: 8 iterations an epoch
RUN_ITERS = 6
RESUME_AT = 4


converter = load_tool('dataset_converters/captions_to_webdataset.py')


@pytest.fixture(autouse=True)
def mmdet_scope() -> None:
    init_default_scope('mmdet')  # as the Runner does: the pipeline's transforms from mmdet


@pytest.fixture(scope='module')
def toy(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Toy caption images (COCO Captions json) converted to 8 shards of 3 samples."""
    root = tmp_path_factory.mktemp('wds')
    ann_file = generate_shape_captions(str(root), 'caption', NUM_IMAGES, image_size=SIDE, seed=0)
    converter.main([str(ann_file), str(root / 'caption'), str(root / 'shards'),
                    '--samples-per-shard', str(PER_SHARD)])
    return dict(root=root, ann_file=Path(ann_file), images=root / 'caption',
                shards=root / 'shards')


def _dataset(shards_dir: Path, **kwargs) -> WebDatasetCaptions:
    args = dict(data_root=str(shards_dir), shards=SHARDS, index_file='index.json',
                pipeline=[CLIM_LOADER])
    args.update(kwargs)
    return WebDatasetCaptions(**args)


def _read(dataset: WebDatasetCaptions, rank: int = 0, world_size: int = 1,
          worker: Optional[int] = None, num_workers: int = 0) -> List[str]:
    """The keys (``img_path``) the next epoch of ``dataset`` yields as worker ``worker`` of
    ``num_workers`` on rank ``rank`` of ``world_size``, read by a copy of it (as a process
    would), so that ``dataset`` stays at the same epoch."""
    info = None if worker is None else mock.Mock(id=worker, num_workers=num_workers)
    with mock.patch.object(wds_module, 'get_dist_info', return_value=(rank, world_size)), \
            mock.patch.object(wds_module, 'get_worker_info', return_value=info):
        return [sample['img_path'] for sample in copy.copy(dataset)]


def _png(value: int) -> bytes:
    ok, encoded = cv2.imencode('.png', np.full((SIDE, SIDE, 3), value, np.uint8))
    assert ok
    return encoded.tobytes()


def _write_tar(path: Path, samples: Sequence[dict]) -> None:
    with TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)


def test_converter_round_trip(toy: Dict[str, Path]) -> None:
    coco = json.loads(toy['ann_file'].read_text())
    captions: Dict[int, List[str]] = {}
    for ann in coco['annotations']:
        captions.setdefault(ann['image_id'], []).append(ann['caption'])
    files = {image['id']: image['file_name'] for image in coco['images']}
    # Read back with tarfile, independently of webdataset and of the dataset.
    seen: Dict[int, Tuple[bytes, List[str], str]] = {}
    index = json.loads((toy['shards'] / 'index.json').read_text())
    for shard in range(NUM_SHARDS):
        name = f'{shard:05d}.tar'
        with tarfile.open(toy['shards'] / name) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        keys = sorted({member.split('.')[0] for member in members})
        assert index['shards'][name] == len(keys) == PER_SHARD
        for key in keys:
            meta = json.loads(members[f'{key}.json'])
            seen[meta['id']] = (members[f'{key}.png'], meta['captions'],
                                members[f'{key}.txt'].decode())
    assert sorted(seen) == sorted(files)
    for img_id, (image, caps, txt) in seen.items():
        assert image == (toy['images'] / files[img_id]).read_bytes()
        assert caps == captions[img_id] and txt == captions[img_id][0]
    # And through the dataset: every image once, its pixels and captions.
    samples = list(_dataset(toy['shards'], shuffle=False))
    assert sorted(s['img_id'] for s in samples) == sorted(files)
    for sample in samples:
        expected = cv2.imread(str(toy['images'] / files[sample['img_id']]))
        np.testing.assert_array_equal(sample['img'], expected)
        assert sample['captions'] == captions[sample['img_id']]
        assert sample['img_shape'] == sample['ori_shape'] == (SIDE, SIDE)


def test_converter_cc3m_json_skips_and_counts(tmp_path: Path) -> None:
    (tmp_path / 'img').mkdir()
    for name in ('a.jpg', 'b.png'):
        (tmp_path / 'img' / name).write_bytes(_png(7))
    ann = dict(images=[dict(id='a', file_name='a.jpg', captions=[' one ', 'two', 'one']),
                       dict(id='b', file_name='b.png', captions='single'),
                       dict(id='c', file_name='b.png', captions=['  ']),
                       dict(id='d', file_name='gone.jpg', captions=['lost'])])
    (tmp_path / 'cc3m.json').write_text(json.dumps(ann))
    report = converter.convert(str(tmp_path / 'cc3m.json'), str(tmp_path / 'img'),
                               str(tmp_path / 'out'), samples_per_shard=1)
    assert report == {'without caption': 1, 'missing file': 1, 'written': 2}
    samples = list(WebDatasetCaptions(data_root=str(tmp_path / 'out'), shards='0000{0..1}.tar',
                                      index_file='index.json', shuffle=False,
                                      pipeline=[CLIM_LOADER]))
    pairs = [(s['img_id'], s['captions']) for s in samples]
    assert pairs == [('a', ['one', 'two']), ('b', ['single'])]


def test_split_over_ranks_and_workers_reads_each_sample_once(toy: Dict[str, Path]) -> None:
    dataset = _dataset(toy['shards'], num_workers=2, seed=3)
    all_keys = {s['img_path'] for s in _dataset(toy['shards'], shuffle=False)}
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        reads = {(rank, worker): _read(dataset, rank, 2, worker, 2)
                 for rank in range(2) for worker in range(2)}
        keys = [key for keys in reads.values() for key in keys]
        assert len(keys) == len(set(keys)) == NUM_IMAGES and set(keys) == all_keys
        # 8 shards over 4 readers: 2 shards (6 samples) each, from distinct shards.
        assert all(len(read) == 6 for read in reads.values())
        shards = [{key.split('#')[0] for key in read} for read in reads.values()]
        assert all(len(s) == 2 for s in shards) and len(set.union(*shards)) == NUM_SHARDS
        if epoch == 0:
            first = reads
    assert reads != first  # another epoch, another order
    with mock.patch.object(wds_module, 'get_dist_info', return_value=(1, 2)):
        assert len(dataset) == 12
    # Without shuffling the deal is by hand: slot 2 * rank + worker reads shards slot, slot + 4.
    plain = _dataset(toy['shards'], num_workers=2, shuffle=False)
    assert _read(plain, 1, 2, 0, 2) == [
        str(toy['shards'] / f'{shard:05d}.tar#{shard * PER_SHARD + i:09d}')
        for shard in (2, 6) for i in range(PER_SHARD)]


def test_each_iteration_reads_the_next_epoch(toy: Dict[str, Path]) -> None:
    dataset = _dataset(toy['shards'], seed=2)
    by_set_epoch = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        by_set_epoch.append(_read(dataset))
    assert len({tuple(keys) for keys in by_set_epoch}) == 3  # three different orders
    # One copy iterated three times (the main process, or a persistent worker) counts epochs.
    dataset.set_epoch(0)
    assert [[s['img_path'] for s in dataset] for _ in range(3)] == by_set_epoch
    dataset.set_epoch(1)
    assert [s['img_path'] for s in dataset] == by_set_epoch[1]


def test_uneven_shards_give_every_rank_the_same_length(tmp_path: Path) -> None:
    counts = [3, 3, 3, 3, 2]
    for shard, count in enumerate(counts):
        _write_tar(tmp_path / f'{shard}.tar', [
            {'__key__': f'{shard}-{i}', 'png': _png(10 * shard + i), 'txt': 'a caption'}
            for i in range(count)])
    write_shard_index(str(tmp_path / 'index.json'), {f'{s}.tar': n for s, n in enumerate(counts)})
    dataset = WebDatasetCaptions(data_root=str(tmp_path), shards='{0..4}.tar',
                                 index_file='index.json', pipeline=[CLIM_LOADER])
    # 5 shards over 2 ranks: one rank may get only 2, the smallest being 3 + 2 samples.
    with mock.patch.object(wds_module, 'get_dist_info', return_value=(0, 2)):
        assert len(dataset) == 5
    for epoch in range(4):
        dataset.set_epoch(epoch)
        reads = [_read(dataset, rank, 2) for rank in range(2)]
        assert [len(r) for r in reads] == [5, 5] and not set(reads[0]) & set(reads[1])
    with pytest.raises(ValueError, match='5 shards .* cannot feed 6 readers'):
        _read(dataset, 0, 6)


def test_num_samples_without_index_and_build_errors(toy: Dict[str, Path]) -> None:
    dataset = _dataset(toy['shards'], index_file=None, num_samples=NUM_IMAGES, num_workers=2)
    with mock.patch.object(wds_module, 'get_dist_info', return_value=(0, 2)):
        assert len(dataset) == 12
    with pytest.raises(ValueError, match=r'pipeline\[0\] must be an mmcv LoadImageFromFile'):
        _dataset(toy['shards'], pipeline=[dict(type='RandomResizedCrop', size=8)])
    with pytest.raises(ValueError, match=r'pipeline\[1\] is a second image loader'):
        _dataset(toy['shards'], pipeline=[CLIM_LOADER, CLIM_LOADER])
    with pytest.raises(ValueError, match='exactly one of index_file'):
        _dataset(toy['shards'], num_samples=NUM_IMAGES)
    with pytest.raises(KeyError, match='lacks 1 of the 9 shards'):
        _dataset(toy['shards'], shards='{00000..00008}.tar')
    with pytest.raises(ValueError, match='built with num_workers=2 but iterated by 3'):
        _read(dataset, 0, 1, 0, 3)


def _bad_shards(root: Path) -> Dict[str, List[str]]:
    """Four shards: bad members among good ones, a truncated tar, a missing one, a good one;
    returns the good keys and the index written."""
    good = [{'__key__': 'g0', 'png': _png(1), 'txt': 'first'},
            {'__key__': 'g1', 'jpg': _png(2), 'json': json.dumps({'caption': 'second'})}]
    truncated_png = _png(3)[:40]
    bad = [{'__key__': 'b_trunc', 'png': truncated_png, 'txt': 'cut short'},
           {'__key__': 'b_text', 'jpg': b'<html>404 not found</html>\n', 'txt': 'html'},
           {'__key__': 'b_nocap', 'png': _png(4), 'txt': '   '},
           {'__key__': 'b_noimg', 'bin': b'xyz', 'txt': 'no image'},
           {'__key__': 'b_json', 'png': _png(5), 'json': '{"caption": '}]
    _write_tar(root / 'mixed.tar', [good[0], *bad, good[1]])
    _write_tar(root / 'cut.tar', [{'__key__': f'c{i}', 'png': _png(6 + i), 'txt': f'cut {i}'}
                                  for i in range(4)])
    with tarfile.open(root / 'cut.tar') as tar:
        cut = tar.getmember('c2.png').offset_data + 10  # in the middle of c2's image
    (root / 'cut.tar').write_bytes((root / 'cut.tar').read_bytes()[:cut])
    _write_tar(root / 'good.tar', [{'__key__': 'z0', 'png': _png(9), 'txt': 'last'}])
    write_shard_index(str(root / 'index.json'),
                      {'mixed.tar': 7, 'cut.tar': 4, 'missing.tar': 2, 'good.tar': 1})
    return ['mixed.tar', 'cut.tar', 'missing.tar', 'good.tar']


def test_bad_samples_and_shards_are_counted_and_skipped(tmp_path: Path) -> None:
    shards = _bad_shards(tmp_path)
    dataset = WebDatasetCaptions(data_root=str(tmp_path), shards=shards, index_file='index.json',
                                 shuffle=False, pipeline=[CLIM_LOADER])
    keys = [sample['img_path'].split('#')[1] for sample in dataset]
    # The first pass yields the good samples (those of cut.tar before the cut: 2 of 4), then
    # the reader reads its shards again to fill its quota of 14.
    first_pass = ['g0', 'g1', 'c0', 'c1', 'z0']
    assert keys[:5] == first_pass and len(keys) == 14 and set(keys) == set(first_pass)
    counts = dataset.summarize_bad_samples()
    passes = 3  # 5 good samples a pass: two passes and the start of a third fill 14
    assert counts == {
        'undecodable image files': 2 * passes, 'samples without a caption': passes,
        'samples without an image member': passes, 'samples whose json member is unreadable':
        passes, 'truncated or corrupt shards': 2, 'shards that cannot be opened': 2}
    assert dataset.bad_sample_names[0] == f'{tmp_path}/mixed.tar#b_trunc'


@pytest.mark.parametrize('shard,match', [
    ('mixed.tar', r'shard .*mixed.tar sample b_trunc: the image of sample .*cannot be decoded'),
    ('cut.tar', r'shard .*cut.tar is truncated or corrupt at or after member c2\.png'),
    ('missing.tar', r'shard .*missing.tar cannot be opened'),
])
def test_bad_data_raises_naming_shard_and_key(tmp_path: Path, shard: str, match: str) -> None:
    _bad_shards(tmp_path)
    dataset = WebDatasetCaptions(data_root=str(tmp_path), shards=[shard], shuffle=False,
                                 index_file='index.json', on_bad_entry='raise',
                                 pipeline=[CLIM_LOADER])
    with pytest.raises((BadImageError, ValueError), match=match):
        _read(dataset)


def _loader_batches(dataset: WebDatasetCaptions, batch_size: int,
                    num_batches: Optional[int] = None) -> List[List[str]]:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=dataset.num_workers,
                        collate_fn=lambda batch: [sample['img_path'] for sample in batch])
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == num_batches:
            break
    return batches


def _round_robin(streams: Sequence[List[str]], batch_size: int) -> List[List[str]]:
    """The batches a DataLoader makes of its workers' streams: batch ``b`` from worker
    ``b % num_workers`` while every worker has batches left."""
    chunks = [[s[i:i + batch_size] for i in range(0, len(s), batch_size)] for s in streams]
    return [chunk[r] for r in range(max(map(len, chunks))) for chunk in chunks if r < len(chunk)]


def test_skip_samples_resumes_after_the_consumed_samples(toy: Dict[str, Path]) -> None:
    batch_size = 4
    dataset = _dataset(toy['shards'], num_workers=2, seed=1)
    # Reference: each worker's full stream of epochs 0 and 1, read in-process.
    streams = {}
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        streams[epoch] = [_read(dataset, 0, 1, worker, 2) for worker in range(2)]
    # A real DataLoader takes its batches round-robin from the workers.
    epoch_batches = _round_robin(streams[0], batch_size)
    dataset.set_epoch(0)
    assert _loader_batches(dataset, batch_size) == epoch_batches
    assert len(epoch_batches) == 6  # 2 workers x ceil(12 / 4)
    for consumed in (0, 3, 6 + 5):
        resumed = _dataset(toy['shards'], num_workers=2, seed=1)
        resumed.skip_samples(consumed * batch_size, batch_size)
        epoch, rest = divmod(consumed, len(epoch_batches))
        expected = _round_robin(streams[epoch], batch_size)[rest:]
        assert _loader_batches(resumed, batch_size, len(expected)) == expected
    # In-process, with a spy: in epoch 1 worker 1 had consumed its first 2 batches (8 samples):
    # its first shard (3 samples) and second (3) wholly, 2 of its third. Batches 0-3 were
    # taken, so the next came from worker 0: worker 1 now continues worker 1's stream.
    opened: List[str] = []
    real_open = WebDatasetCaptions._open_shard

    def spy(self: WebDatasetCaptions, path: str):
        opened.append(os.path.basename(path))
        return real_open(self, path)

    resumed = _dataset(toy['shards'], num_workers=2, seed=1)
    resumed.skip_samples((6 + 4) * batch_size, batch_size)
    with mock.patch.object(WebDatasetCaptions, '_open_shard', spy):
        tail = _read(resumed, 0, 1, 1, 2)
    assert tail == streams[1][1][8:]
    worker_shards = list(dict.fromkeys(key.split('#')[0] for key in streams[1][1]))
    assert opened == [os.path.basename(s) for s in worker_shards[2:]]
    # drop_last drops each worker's short last batch: an epoch has 2 x 2 batches of 5, so 6
    # batches are 2 into epoch 1, one from each worker.
    resumed = _dataset(toy['shards'], num_workers=2, seed=1)
    resumed.skip_samples(6 * 5, 5, drop_last=True)
    assert _read(resumed, 0, 1, 0, 2) == streams[1][0][5:]
    with pytest.raises(ValueError, match='a multiple >= 0 of batch_size'):
        resumed.skip_samples(7, batch_size)


@pytest.mark.parametrize('config, side', [('clim_vitb16_cc3m-wds.py', 224),
                                          ('clim_rn50x64_cc3m-wds.py', 448)])
def test_shipped_config_builds_with_shrunk_data(toy: Dict[str, Path], config: str,
                                                side: int) -> None:
    cfg = Config.fromfile(str(CONFIGS / config)).train_dataloader
    assert cfg.sampler is None and cfg.dataset.num_workers == cfg.num_workers
    dataset_cfg = cfg.dataset
    dataset_cfg.update(data_root=str(toy['shards']), shards=SHARDS, index_file='index.json',
                       num_workers=0)
    dataset = DATASETS.build(dataset_cfg)
    assert isinstance(dataset, WebDatasetCaptions) and len(dataset) == NUM_IMAGES
    sample = next(iter(dataset))
    assert sample['inputs'].shape == (3, side, side)  # the recipe's crop size
    assert '#' in sample['data_samples'].img_path and sample['data_samples'].captions


def _rank_main(shards: str, out: str, rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    try:
        dataset = _dataset(Path(shards), num_workers=1, seed=5)
        keys = [key for batch in _loader_batches(dataset, 2) for key in batch]
        assert len(keys) == len(dataset) == NUM_IMAGES // 2
        Path(out).write_text(json.dumps(keys))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_read_disjoint_shards(toy: Dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    outs = [tmp_path / f'rank{rank}.json' for rank in range(2)]
    processes = [fork_process(_rank_main, str(toy['shards']), str(outs[rank]), rank, port)
                 for rank in range(2)]
    assert [join_process(p) for p in processes] == [0, 0]
    keys = [json.loads(out.read_text()) for out in outs]
    counts = Counter(keys[0] + keys[1])
    assert len(counts) == NUM_IMAGES and set(counts.values()) == {1}
    assert len(keys[0]) == len(keys[1])


@MODELS.register_module(force=True)
class _BatchRecorder(BaseModel):
    """Records the keys of every training batch; its loss is a parameter's square."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.batches: List[List[str]] = []

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = 'tensor') -> Any:
        self.batches.append([sample.img_path for sample in data_samples])
        return dict(loss=(self.weight**2).sum())


def _train_on_shards(shards_dir: Path, work_dir: Path, resume_from: Optional[Path]) -> Runner:
    pipeline = [CLIM_LOADER, dict(type='PackDetInputs', meta_keys=('img_path', ))]
    cfg = Config(dict(
        work_dir=str(work_dir),
        experiment_name=f'wds_{work_dir.name}',
        default_scope='mmdet',
        model=dict(type='_BatchRecorder'),
        train_dataloader=dict(
            dataset=dict(type='WebDatasetCaptions', data_root=str(shards_dir), shards=SHARDS,
                         index_file='index.json', pipeline=pipeline),
            sampler=None, batch_size=RUN_BATCH, num_workers=0, collate_fn=dict(
                type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=RUN_ITERS),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=RESUME_AT)),
        resume=resume_from is not None,
        load_from=None if resume_from is None else str(resume_from),
        randomness=dict(seed=0)))
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_a_resumed_run_opens_no_consumed_shard_and_sees_the_same_batches(
        toy: Dict[str, Path], tmp_path: Path) -> None:
    """tools/train.py --resume through the exact-resume hook: the dataset is positioned after
    the consumed samples, mmengine's replay reads nothing, and the batches go on as before."""
    full = _train_on_shards(toy['shards'], tmp_path / 'full', None).model.batches
    assert len(full) == RUN_ITERS  # all in epoch 0: no key twice
    assert len({key for batch in full for key in batch}) == RUN_ITERS * RUN_BATCH
    split = tmp_path / 'split'
    split.mkdir()
    for name in (f'iter_{RESUME_AT}.pth', f'iter_{RESUME_AT}.pth.sha256'):
        shutil.copy(tmp_path / 'full' / name, split / name)
    opened: List[str] = []
    real_open = WebDatasetCaptions._open_shard

    def spy(self: WebDatasetCaptions, path: str):
        opened.append(os.path.basename(path))
        return real_open(self, path)

    with mock.patch.object(WebDatasetCaptions, '_open_shard', spy):
        resumed = _train_on_shards(toy['shards'], split,
                                   split / f'iter_{RESUME_AT}.pth').model.batches
    assert resumed == full[RESUME_AT:]
    consumed = {key.split('#')[0] for batch in full[:RESUME_AT] for key in batch}
    still_read = {key.split('#')[0] for batch in full[RESUME_AT:] for key in batch}
    assert set(opened) == {os.path.basename(shard) for shard in still_read}
    assert consumed - still_read  # some shards were wholly consumed, and never opened again
