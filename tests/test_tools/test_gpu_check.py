# Copyright (c) mmclim contributors. All rights reserved.
"""The prepared GPU check: its bundle and its dry run (tools/gpu/, docs/gpu.md)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, python_tool

CHECK = REPO_ROOT / 'tools' / 'gpu' / 'check.sh'


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle, downloaded from the package registry as docs/gpu.md says."""
    out = tmp_path_factory.mktemp('gpu_bundle')
    proc = subprocess.run(python_tool('gpu/prepare.py', '--out', str(out)), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith(': ok')
    return out


def _check(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(python_tool('gpu/prepare.py', '--out', str(bundle), '--check'),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_dry_run_passes_every_step(bundle: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable, MMCLIM_GPU_BUNDLE=str(bundle),
               MMCLIM_GPU_STATE=str(tmp_path / 'state'), OUT=str(tmp_path / 'out'),
               OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', str(CHECK), '--dry-run', 'setup', 'test', 'bench'],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = [line.split('\t') for line in
            (tmp_path / 'out' / 'timings.tsv').read_text().splitlines()[1:]]
    assert [name for name, _, _ in rows] == [
        'setup_bundle_check', 'setup_mmcv_source', 'test_collect', 'bench_fvlm_step_cpu',
        'bench_compile']
    assert all(status == '0' for _, _, status in rows)
    log = (tmp_path / 'out' / 'check.log').read_text()
    assert 'test_cuda_ops_equal_the_cpu_kernels' in log  # the GPU tests were collected
    (figures, ) = [json.loads(line) for line in log.splitlines() if line.startswith('{"config"')]
    assert figures['first_iteration_s'] > 0 and figures['batch'] == 2


def test_check_names_a_corrupt_file_and_a_missing_requirement(bundle: Path,
                                                              tmp_path: Path) -> None:
    broken = tmp_path / 'bundle'
    shutil.copytree(bundle, broken)
    manifest = json.loads((broken / 'MANIFEST.json').read_text())
    (addict, ) = [e for e in manifest['files'] if e['path'].startswith('wheels/addict-')]
    with open(broken / addict['path'], 'ab') as file:
        file.write(b'x')
    proc = _check(broken)
    assert proc.returncode != 0 and f'{addict["path"]}: sha256 differs' in proc.stderr

    # Without the addict wheel, mmengine's requirement on it is met by nothing.
    (broken / addict['path']).unlink()
    manifest['files'].remove(addict)
    (broken / 'MANIFEST.json').write_text(json.dumps(manifest))
    proc = _check(broken)
    assert proc.returncode != 0
    assert 'requires addict: neither bundled nor on the image' in proc.stderr


def test_check_refuses_unknown_stages() -> None:
    proc = subprocess.run(['bash', str(CHECK), 'deploy'], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument 'deploy'" in proc.stderr
