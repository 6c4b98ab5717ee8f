# Copyright (c) mmclim contributors. All rights reserved.
"""Gather what the GPU machine lacks into one folder, or check a gathered one (docs/gpu.md).

The GPU machine (Python 3.12, torch 2.11+cu130, nvcc 13.0, 16 cores) has no package registry.
This script, run where pip reaches PyPI, downloads into ``--out`` (default ``.gpu_bundle``,
git-ignored):

- ``wheels/``: cp312 manylinux (or pure-Python) wheels of mmclim's dependencies the machine's
  image lacks (:data:`RUNTIME`), pinned to the versions the test suite runs with;
- ``build/``: setuptools 69 (:data:`BUILD`): mmcv 2.1.0's ``setup.py`` imports ``pkg_resources``;
- ``src/``: mmcv 2.1.0's source distribution (:data:`SOURCE`), whose ops are built there;
- ``MANIFEST.json``: each file's role, size and sha256.

Then (and with ``--check`` alone, without downloading) it checks the folder: every file of the
manifest present with its hash; every wheel installable by pip on CPython 3.12 manylinux x86_64;
every requirement of every wheel met by the bundle or the image (``device_image_packages.txt``);
bundle and working tree together under the 64 MiB a call carries.

Usage: python tools/gpu/prepare.py [--out .gpu_bundle] [--check [--no-size-check]]
"""
import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Dict, List

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_PACKAGES = Path(__file__).with_name('device_image_packages.txt')
#: Runtime wheels the image lacks: mmclim's requirements and theirs.
RUNTIME = ('mmengine==0.10.7', 'mmdet==3.3.0', 'open_clip_torch==3.3.0', 'ftfy==6.3.1',
           'wcwidth==0.9.4', 'lvis==0.5.3', 'pycocotools==2.0.11', 'shapely==2.2.0',
           'terminaltables==3.1.10', 'addict==2.4.0', 'yapf==0.43.0', 'termcolor==3.3.0',
           'platformdirs==4.14.8')
#: Wheels needed to build mmcv only (kept off the runtime path).
BUILD = ('setuptools==69.5.1', )
#: Source distributions built there.
SOURCE = ('mmcv==2.1.0', )
#: The GPU machine's interpreter and platforms, as pip's --python-version/--platform name them.
PYTHON_VERSION = '3.12'
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64',
             'manylinux2014_x86_64', 'manylinux1_x86_64')
#: Requirement names the image satisfies under another distribution name.
ALIASES = {'opencv-python': 'opencv-python-headless'}
#: What one call to the GPU machine carries: working tree and carried folders together.
CARRY_LIMIT_BYTES = 64 * 2**20
PYPI_SIMPLE = 'https://pypi.org/simple/{}/'
#: Markers as on the GPU machine, for requirements of the wheels.
TARGET_ENVIRONMENT = dict(python_version=PYTHON_VERSION, python_full_version=PYTHON_VERSION + '.3',
                          sys_platform='linux', platform_system='Linux',
                          platform_machine='x86_64', implementation_name='cpython',
                          platform_python_implementation='CPython', os_name='posix')


def pip_target_args() -> List[str]:
    """pip's options selecting wheels for the GPU machine."""
    args = ['--only-binary=:all:', '--python-version', PYTHON_VERSION, '--implementation', 'cp',
            '--abi', 'cp' + PYTHON_VERSION.replace('.', ''), '--abi', 'abi3', '--abi', 'none']
    for platform in PLATFORMS:
        args += ['--platform', platform]
    return args


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(pins: tuple, folder: Path) -> List[Path]:
    """Download the wheels of ``pins`` (no dependencies) into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob('*.whl'))
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '-d',
                    str(folder), *pip_target_args(), *pins], check=True)
    wheels = sorted(folder.glob('*.whl'))
    names = {canonicalize_name(Requirement(pin).name) for pin in pins}
    stray = [w for w in set(wheels) - before if wheel_name(w) not in names]
    if stray:
        raise RuntimeError(f'pip downloaded wheels not asked for: {stray}')
    return [w for w in wheels if wheel_name(w) in names]


def download_sdist(pin: str, folder: Path) -> Path:
    """Download the source distribution of ``pin`` (name==version) from PyPI, hash-checked."""
    requirement = Requirement(pin)
    (version, ) = [spec.version for spec in requirement.specifier]
    filename = f'{requirement.name}-{version}.tar.gz'
    request = urllib.request.Request(PYPI_SIMPLE.format(requirement.name),
                                     headers={'Accept': 'application/vnd.pypi.simple.v1+json'})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)['files']
    (entry, ) = [f for f in files if f['filename'] == filename]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if not path.exists() or sha256(path) != entry['hashes']['sha256']:
        with urllib.request.urlopen(entry['url'], timeout=120) as response:
            path.write_bytes(response.read())
    if sha256(path) != entry['hashes']['sha256']:
        raise RuntimeError(f'{filename}: sha256 differs from PyPI\'s')
    return path


def wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split('-')[0])


def wheel_requirements(path: Path) -> List[Requirement]:
    """The wheel's ``Requires-Dist`` that apply on the GPU machine (no extras)."""
    with zipfile.ZipFile(path) as archive:
        (metadata, ) = [n for n in archive.namelist() if n.endswith('.dist-info/METADATA')]
        message = Parser().parsestr(archive.read(metadata).decode('utf-8'))
    environment = dict(default_environment(), **TARGET_ENVIRONMENT, extra='')
    requirements = [Requirement(line) for line in message.get_all('Requires-Dist') or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]


def image_packages() -> set:
    lines = IMAGE_PACKAGES.read_text().splitlines()
    return {canonicalize_name(line) for line in lines if line and not line.startswith('#')}


def tree_bytes() -> int:
    """Bytes of the working tree a call carries (tracked and untracked, not ignored, files)."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout
    paths = [REPO_ROOT / p for p in listed.decode().split('\0') if p]
    return sum(p.stat().st_size for p in paths if p.is_file())


def check(out: Path, size: bool = True) -> List[str]:
    """Every check of the module docstring on the folder ``out`` (the size of what a call carries
    only with ``size``: it needs the git checkout); returns the problems found."""
    manifest_path = out / 'MANIFEST.json'
    if not manifest_path.is_file():
        return [f'{manifest_path} is missing: run python tools/gpu/prepare.py first']
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for entry in manifest['files']:
        path = out / entry['path']
        if not path.is_file():
            problems.append(f'{path}: missing')
        elif sha256(path) != entry['sha256']:
            problems.append(f'{path}: sha256 differs from the manifest')
    if problems:
        return problems
    wheels = [out / e['path'] for e in manifest['files'] if e['role'] in ('runtime', 'build')]
    with tempfile.TemporaryDirectory() as target:
        proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet',
                               '--no-index', '--no-deps', '--ignore-installed', '--target', target,
                               *pip_target_args(), *map(str, wheels)],
                              capture_output=True, text=True)
    if proc.returncode:
        problems.append(f'pip refuses the wheels for CPython {PYTHON_VERSION} manylinux x86_64:\n'
                        f'{proc.stderr.strip()}')
    available = image_packages() | {wheel_name(w) for w in wheels}
    for entry in manifest['files']:
        if entry['role'] != 'runtime':
            continue
        for requirement in wheel_requirements(out / entry['path']):
            name = canonicalize_name(requirement.name)
            if name not in available and ALIASES.get(name) not in available:
                problems.append(f'{entry["path"]} requires {requirement}: neither bundled nor on '
                                f'the image ({IMAGE_PACKAGES.name})')
    total = (tree_bytes() if size else 0) + sum(e['size'] for e in manifest['files'])
    if total > CARRY_LIMIT_BYTES:
        problems.append(f'working tree and bundle are {total / 2**20:.1f} MiB, over the '
                        f'{CARRY_LIMIT_BYTES / 2**20:.0f} MiB a call carries')
    return problems


def prepare(out: Path) -> None:
    files: Dict[str, str] = {}
    for path in download_wheels(RUNTIME, out / 'wheels'):
        files[str(path.relative_to(out))] = 'runtime'
    for path in download_wheels(BUILD, out / 'build'):
        files[str(path.relative_to(out))] = 'build'
    for pin in SOURCE:
        files[str(download_sdist(pin, out / 'src').relative_to(out))] = 'source'
    entries = [dict(path=p, role=role, size=(out / p).stat().st_size, sha256=sha256(out / p))
               for p, role in sorted(files.items())]
    manifest = dict(python=PYTHON_VERSION, platforms=list(PLATFORMS), files=entries)
    (out / 'MANIFEST.json').write_text(json.dumps(manifest, indent=1) + '\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=REPO_ROOT / '.gpu_bundle',
                        help='the bundle folder (default: .gpu_bundle in the repository)')
    parser.add_argument('--check', action='store_true', help='check the folder, download nothing')
    parser.add_argument('--no-size-check', dest='size', action='store_false',
                        help='skip the size check (on the GPU machine, whose copy has no git)')
    args = parser.parse_args()
    if not args.check:
        prepare(args.out)
    problems = check(args.out, args.size)
    if problems:
        sys.exit('prepare: ' + '\nprepare: '.join(problems))
    manifest = json.loads((args.out / 'MANIFEST.json').read_text())
    size = sum(e['size'] for e in manifest['files'])
    with_tree = (f'; with the working tree {(size + tree_bytes()) / 2**20:.1f} MiB of the '
                 f'{CARRY_LIMIT_BYTES / 2**20:.0f} MiB a call carries' if args.size else '')
    print(f'prepare: {args.out} holds {len(manifest["files"])} files, {size / 2**20:.1f} '
          f'MiB{with_tree}: ok')


if __name__ == '__main__':
    main()
