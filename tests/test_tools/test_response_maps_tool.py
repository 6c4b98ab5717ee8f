# Copyright (c) mmclim contributors. All rights reserved.
"""tools/analysis_tools/response_maps.py on toy CLIPs: an open_clip file and an mmclim run."""
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, load_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmclim.datasets import generate_shape_scenes
from mmclim.models.backbones import OpenCLIPRegion

TOY_CLIM = REPO_ROOT / 'configs' / 'clim' / 'clim_toy-vit_toy-shapes.py'


tool = load_tool('analysis_tools/response_maps.py')


@pytest.fixture(scope='module')
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random toy CLIP as an open_clip file, and a checkpoint of the toy CLIM config's model
    (its CLIP another random one)."""
    root = tmp_path_factory.mktemp('response_maps')
    torch.manual_seed(0)
    torch.save(OpenCLIPRegion('mmclim-toy-vit').clip.state_dict(), root / 'clip.pt')
    cfg = Config.fromfile(str(TOY_CLIM))
    cfg.model.clip.pretrained = str(root / 'clip.pt')
    cfg.model.class_embeddings = None
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    torch.nn.init.normal_(model.clip.clip.visual.proj, std=0.1)  # differs from clip.pt
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), root / 'clim.pth')
    return dict(root=root, clip=root / 'clip.pt', clim=root / 'clim.pth')


def test_writes_panels_and_plays_the_pointing_game(models: dict, tmp_path: Path) -> None:
    ann_file = generate_shape_scenes(str(tmp_path / 'data'), 'val', 2, image_size=64, seed=1)
    images = sorted(str(path) for path in (tmp_path / 'data' / 'val').glob('*.png'))
    coco = json.loads(Path(ann_file).read_text())
    scores = tool.main([
        '--model', f'CLIP=mmclim-toy-vit:{models["clip"]}', '--model',
        f'CLIM={TOY_CLIM}:{models["clim"]}', '--images', *images, '--ann-file', str(ann_file),
        '--out-dir', str(tmp_path / 'out'), '--cfg-options',
        f'model.clip.pretrained={models["clip"]}', 'model.class_embeddings=None'])
    assert sorted(path.name for path in (tmp_path / 'out').glob('*.png')) == \
        sorted(Path(image).name for image in images)
    assert set(scores) == {'CLIP', 'CLIM'} and scores['CLIP'] != scores['CLIM']
    for score in scores.values():
        assert score['objects'] == len(coco['annotations']) and 0 <= score['hit_rate'] <= 1
    assert json.loads((tmp_path / 'out' / 'pointing_game.json').read_text()) == scores


def test_a_mosaic_of_four_images_and_bad_arguments(models: dict, tmp_path: Path) -> None:
    generate_shape_scenes(str(tmp_path / 'data'), 'val', 4, image_size=64, seed=2)
    images = sorted(str(path) for path in (tmp_path / 'data' / 'val').glob('*.png'))
    clip = f'CLIP=mmclim-toy-vit:{models["clip"]}'
    tool.main(['--model', clip, '--images', *images, '--mosaic', '2x2', '--texts', 'red circle',
               'blue square', '--out-dir', str(tmp_path / 'out')])
    assert [path.name for path in (tmp_path / 'out').glob('*.png')] == ['mosaic.png']
    with pytest.raises(ValueError, match='--mosaic: a 3x3 grid takes 9 images, got 4'):
        tool.main(['--model', clip, '--images', *images, '--mosaic', '3x3', '--texts', 'x',
                   '--out-dir', str(tmp_path / 'out')])
    with pytest.raises(ValueError, match=r"--model 'clip.pt': expected LABEL=MODEL_NAME:FILE"):
        tool.main(['--model', 'clip.pt', '--images', *images, '--texts', 'x', '--out-dir',
                   str(tmp_path / 'out')])
    with pytest.raises(FileNotFoundError, match='--images: no file missing.png'):
        tool.main(['--model', clip, '--images', 'missing.png', '--texts', 'x', '--out-dir',
                   str(tmp_path / 'out')])
