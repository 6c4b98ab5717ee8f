# Copyright (c) mmclim contributors. All rights reserved.
import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import pytest
import torch
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import DefaultScope
from mmengine.visualization import Visualizer

from mmclim.datasets import generate_shape_captions, generate_shape_scenes
from mmclim.models.backbones import OpenCLIPRegion

REPO_ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = REPO_ROOT / 'configs' / 'toy' / 'retinanet_tiny_toy-shapes.py'


JOIN_TIMEOUT_S = 120  # the longest a forked test process may run

GPU_SKIP_REASON = 'needs a CUDA device: run on a GPU machine, tools/gpu/check.sh (docs/gpu.md)'


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` where CUDA is not available, saying why."""
    if torch.cuda.is_available():
        return
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(pytest.mark.skip(reason=GPU_SKIP_REASON))


@pytest.fixture(scope='session')
def toy_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``data/toy_shapes`` (8 train and 4 val scenes of 64 pixels), laid out as
    the toy configs expect relative to the working directory."""
    root = tmp_path_factory.mktemp('toy_workspace')
    generate_shape_scenes(str(root / 'data' / 'toy_shapes'), 'train', 8, image_size=64, seed=0)
    generate_shape_scenes(str(root / 'data' / 'toy_shapes'), 'val', 4, image_size=64, seed=1)
    return root


def make_caption_workspace(root: Path, num_images: int, one_caption_each: bool) -> Path:
    """``root`` holding toy captioned images (``data/toy_shapes/caption_train``, 64 pixels) and
    random toy CLIP weights (``toy_clip.pt``) standing in for the baseline the toy CLIM configs
    continue; with ``one_caption_each`` every image keeps only its first caption, so that no
    caption is drawn at random."""
    ann_file = generate_shape_captions(str(root / 'data' / 'toy_shapes'), 'caption_train',
                                       num_images, image_size=64, seed=0)
    if one_caption_each:
        coco = json.loads(ann_file.read_text())
        first = {}
        for ann in coco['annotations']:
            first.setdefault(ann['image_id'], ann)
        coco['annotations'] = list(first.values())
        ann_file.write_text(json.dumps(coco))
    torch.manual_seed(0)
    torch.save(OpenCLIPRegion('mmclim-toy-vit').clip.state_dict(), root / 'toy_clip.pt')
    return root


def toy_clim_options(max_iters: int) -> List[str]:
    """``--cfg-options`` training a toy CLIM config of ``configs/clim`` in a
    :func:`make_caption_workspace`: without validation, weight ensembling or class embeddings,
    ``max_iters`` iterations logged each, data loaded in the main process."""
    return ['--cfg-options', 'model.clip.pretrained=toy_clip.pt', 'model.class_embeddings=None',
            'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None', 'custom_hooks=[]',
            f'train_cfg.max_iters={max_iters}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1']


def assert_same_checkpoints(expected: Path, actual: Path) -> None:
    """Two checkpoints of the same iteration hold bitwise equal weights and optimizer state."""
    first, second = (torch.load(path, map_location='cpu', weights_only=True)
                     for path in (expected, actual))
    assert first['meta']['iter'] == second['meta']['iter']
    assert first['state_dict'].keys() == second['state_dict'].keys()
    for name, value in first['state_dict'].items():
        assert torch.equal(second['state_dict'][name], value), f'{actual}: {name} differs'
    states = first['optimizer']['state'], second['optimizer']['state']
    assert states[0].keys() == states[1].keys() and states[0]
    for key, state in states[0].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(states[1][key][name]), torch.as_tensor(value)), \
                f'{actual}: optimizer state {key}.{name} differs'


def single_threaded_after_fork() -> None:
    """Call first in a forked child: torch's CPU ops in one thread.

    The pip wheels use GNU OpenMP, whose thread pool does not survive ``fork``: once the parent
    has run a parallel region (any earlier test in the same pytest worker), a forked child's
    next parallel region waits forever for threads that were not copied. One thread never
    enters the pool.
    """
    torch.set_num_threads(1)


def fork_process(target: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> multiprocessing.Process:
    """Start ``target(*args, **kwargs)`` in a forked process (single-threaded, see
    :func:`single_threaded_after_fork`) that exits 0, or 1 on an exception."""

    def main() -> None:
        single_threaded_after_fork()
        code = 0
        try:
            target(*args, **kwargs)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)

    process = multiprocessing.get_context('fork').Process(target=main)
    process.start()
    return process


def join_process(process: multiprocessing.Process) -> int:
    """Wait for a forked process; fail the test if it runs longer than ``JOIN_TIMEOUT_S``.

    Returns:
        int: Its exit code (negative: killed by that signal).
    """
    process.join(JOIN_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        pytest.fail(f'process {process.pid} still ran after {JOIN_TIMEOUT_S} s')
    return process.exitcode


@contextlib.contextmanager
def isolated_runner_globals() -> Iterator[None]:
    """Forget the mmengine global instances that runners built inside create.

    A runner makes its default scope, message hub, logger and visualizer the current ones; left
    in place, the ``'mmengine'`` default scope of a toy run would make later tests build mmdet
    models from the wrong registry.
    """
    classes = (DefaultScope, MessageHub, MMLogger, Visualizer)
    before = {cls: set(cls._instance_dict) for cls in classes}
    try:
        yield
    finally:
        for cls in classes:
            for name in set(cls._instance_dict) - before[cls]:
                instance = cls._instance_dict.pop(name)
                if isinstance(instance, logging.Logger):
                    for handler in list(instance.handlers):
                        handler.close()
                        instance.removeHandler(handler)


def train_in_forks(workspace: Path, args: Sequence[str], world_size: int = 1) -> None:
    """``tools/train.py ARGS`` in ``workspace``, on ``world_size`` gloo ranks as
    ``tools/dist_train.sh`` runs it, in forked copies of this process: the tool's own steps
    (``load_config``, ``build_runner``) in one thread each, as the tools run under
    ``OMP_NUM_THREADS=1``, without new interpreters importing mmdet again (about 10 s each)."""
    from mmclim.engine import add_runner_args, build_runner, load_config
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_runner_args(parser)
    options = parser.parse_args(list(args))
    port = free_port()

    def train(rank: int) -> None:
        os.chdir(workspace)
        if world_size > 1:
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                              MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        launcher = 'pytorch' if world_size > 1 else 'none'
        with isolated_runner_globals():
            build_runner(load_config(options.config, options.cfg_options, options.work_dir,
                                     launcher)).train()

    processes = [fork_process(train, rank) for rank in range(world_size)]
    assert [join_process(process) for process in processes] == [0] * world_size


def free_port() -> int:
    """A TCP port free now on this machine, for a torchrun rendezvous of its own (tests run in
    parallel processes, so the tools' default port would be shared)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def run_subprocess(args: Sequence[str], cwd: Path, timeout: float = 600,
                   **env: str) -> subprocess.CompletedProcess:
    """Run a command (a tool of this repo) in ``cwd``, with ``env`` added to the environment, and
    return whatever its exit code."""
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()), **env)
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# Runs a Python script with ``open`` patched so that the process dies (exit code
# DIE_EXIT_CODE, no clean-up, as a kill) half-way through writing the file named in
# $DIE_WHILE_WRITING.
DIE_EXIT_CODE = 9
DIE_WHILE_WRITING = '''\
import builtins, os, runpy, sys

real_open = builtins.open


class DyingFile:
    def __init__(self, file):
        self.file = file

    def write(self, data):
        data = memoryview(data).cast('B')
        self.file.write(data[:len(data) // 2])
        self.file.flush()
        os.fsync(self.file.fileno())
        os._exit({code})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def __getattr__(self, name):
        return getattr(self.file, name)


def dying_open(file, mode='r', *args, **kwargs):
    opened = real_open(file, mode, *args, **kwargs)
    base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ''
    if 'b' in mode and set(mode) & set('wxa') and os.environ['DIE_WHILE_WRITING'] in base \\
            and not base.endswith('.sha256'):
        return DyingFile(opened)
    return opened


builtins.open = dying_open
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''.format(code=DIE_EXIT_CODE)


def run_dying_while_writing(tool: str, args: Sequence[str], cwd: Path,
                            name: str) -> subprocess.CompletedProcess:
    """Run ``tools/<tool>`` with ``args`` until it dies half-way through writing the first file
    whose name contains ``name`` (checksum files aside), as a kill inside a save."""
    wrapper = cwd / 'die_while_writing.py'
    wrapper.write_text(DIE_WHILE_WRITING)
    return run_subprocess([sys.executable, str(wrapper), str(REPO_ROOT / 'tools' / tool), *args],
                          cwd, DIE_WHILE_WRITING=name)


def assert_intact(path: Path) -> Dict[str, Any]:
    """``path`` exists, its ``.sha256`` file (sha256sum format) records its hash, it loads."""
    assert path.is_file(), f'{path} does not exist'
    recorded = (path.parent / f'{path.name}.sha256').read_text().split()
    assert recorded == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]
    return torch.load(path, map_location='cpu', weights_only=True)


def run_tool(args: Sequence[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command (a tool of this repo) in ``cwd``; fail the test with its output if it fails."""
    proc = run_subprocess(args, cwd, timeout)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited {proc.returncode}\n'
                    f'--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}')
    return proc


def load_tool(path: str) -> ModuleType:
    """A script under ``tools/`` as a module, so that a test runs its ``main`` in-process
    (a ``python tools/...`` process spends about 10 s importing mmdet).

    Args:
        path (str): The script, relative to ``tools/``.
    """
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO_ROOT / 'tools' / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_tool(name: str, *args: str) -> List[str]:
    """Command line for ``tools/<name>`` with the interpreter running the tests."""
    return [sys.executable, str(REPO_ROOT / 'tools' / name), *args]


def reference_coco_ap(ann_file: Path, predictions: list, stat: int = 0,
                      cat_ids: Optional[Iterable[int]] = None) -> float:
    """Box AP of predictions dumped by ``tools/test.py --out`` by the reference COCO API
    (pycocotools): ``stat`` 0 is mAP, 1 is AP50; ``cat_ids`` restricts the evaluation to some
    categories. Labels index the ground truth's sorted category ids, as mmdet's ``CocoMetric``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        label_to_id = sorted(gt.getCatIds())
        detections = [
            dict(image_id=p['img_id'], category_id=label_to_id[label], score=score,
                 bbox=[x1, y1, x2 - x1, y2 - y1])
            for p in predictions
            for (x1, y1, x2, y2), score, label in zip(p['pred_instances']['bboxes'].tolist(),
                                                      p['pred_instances']['scores'].tolist(),
                                                      p['pred_instances']['labels'].tolist())]
        if not detections:
            return 0.0
        evaluator = COCOeval(gt, gt.loadRes(detections), 'bbox')
        if cat_ids is not None:
            evaluator.params.catIds = list(cat_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(float(evaluator.stats[stat]), 0.0)  # COCOeval writes -1 when nothing matches
