# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path

import pytest
from mmengine.config import Config

from mmclim.engine import load_config, setup_cpu_distributed


def test_load_config_work_dir_priority(tmp_path: Path) -> None:
    config = tmp_path / 'my_config.py'
    config.write_text("a = 1\nwork_dir = 'from_config'\n")
    assert load_config(str(config)).work_dir == 'from_config'
    assert load_config(str(config), work_dir='cli').work_dir == 'cli'
    config.write_text('a = 1\n')
    cfg = load_config(str(config), cfg_options={'a': 2}, launcher='pytorch')
    assert cfg.work_dir.endswith('work_dirs/my_config')
    assert cfg.a == 2 and cfg.launcher == 'pytorch'


def test_load_config_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_config(str(tmp_path / 'nope.py'))


def test_setup_cpu_distributed_leaves_single_process_alone() -> None:
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg
