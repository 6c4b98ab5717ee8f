# Copyright (c) mmclim contributors. All rights reserved.
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest

from mmclim.datasets import generate_shape_scenes

REPO_ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = REPO_ROOT / 'configs' / 'toy' / 'retinanet_tiny_toy-shapes.py'


@pytest.fixture(scope='session')
def toy_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``data/toy_shapes`` (8 train and 4 val scenes of 64 pixels), laid out as
    the toy configs expect relative to the working directory."""
    root = tmp_path_factory.mktemp('toy_workspace')
    generate_shape_scenes(str(root / 'data' / 'toy_shapes'), 'train', 8, image_size=64, seed=0)
    generate_shape_scenes(str(root / 'data' / 'toy_shapes'), 'val', 4, image_size=64, seed=1)
    return root


def run_tool(args: Sequence[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command (a tool of this repo) in ``cwd``; fail the test with its output if it fails."""
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited {proc.returncode}\n'
                    f'--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}')
    return proc


def python_tool(name: str, *args: str) -> List[str]:
    """Command line for ``tools/<name>`` with the interpreter running the tests."""
    return [sys.executable, str(REPO_ROOT / 'tools' / name), *args]
