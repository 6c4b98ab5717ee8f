# Copyright (c) mmclim contributors. All rights reserved.
"""Package metadata lives in setup.cfg; this file reads the version and requirements."""
from pathlib import Path
from typing import List

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def get_version() -> str:
    namespace: dict = {}
    exec((ROOT / 'mmclim' / 'version.py').read_text(), namespace)
    return namespace['__version__']


def parse_requirements(name: str) -> List[str]:
    """Read ``requirements/<name>.txt`` without comments and blank lines."""
    lines = (ROOT / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setup(
    version=get_version(),
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    # open_clip model configs (tiny models for tests and the toy runs)
    package_data={'mmclim.models.backbones': ['model_configs/*.json']},
    install_requires=parse_requirements('runtime') + parse_requirements('mminstall'),
    extras_require={
        'tests': parse_requirements('tests'),
        'build': parse_requirements('build'),
    },
)
