# Copyright (c) mmclim contributors. All rights reserved.
"""A plugin config that inherits mmdet bases and imports mmclim loads and builds."""
from pathlib import Path

from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

PLUGIN_CONFIG = """
_base_ = ['mmdet::_base_/default_runtime.py', 'mmdet::_base_/models/retinanet_r50_fpn.py']
custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)
model = dict(
    backbone=dict(depth=18, base_channels=8, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(num_classes=3, in_channels=16, feat_channels=16, stacked_convs=1))
"""


def test_plugin_config_loads_and_builds(tmp_path: Path) -> None:
    config_file = tmp_path / 'plugin_config.py'
    config_file.write_text(PLUGIN_CONFIG)
    cfg = Config.fromfile(str(config_file))
    assert cfg.custom_imports.imports == ['mmclim']
    assert cfg.default_scope == 'mmdet'  # inherited from mmdet's default_runtime
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'RetinaNet'
    assert model.bbox_head.num_classes == 3
    assert model.backbone.depth == 18


def test_shipped_toy_config_builds() -> None:
    from conftest import TOY_CONFIG
    cfg = Config.fromfile(str(TOY_CONFIG))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert model.bbox_head.num_classes == len(cfg.classes) == 16
