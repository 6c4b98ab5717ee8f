# Copyright (c) mmclim contributors. All rights reserved.
"""``tools/misc/region_cls_table.py`` reads each demo run's evaluations, prints mean and spread."""
import json
from pathlib import Path

from conftest import python_tool, run_tool

METRICS = ('top1', 'top5', 'mean_top1', 'mean_top5')


def _write_record(work_dir: Path, top1: float) -> None:
    """A training/test log record of ``RegionClassificationMetric`` under ``work_dir``."""
    path = work_dir / '20261129_000000' / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [dict(loss=1.0, step=1),  # a training record: no region metric, skipped
               {f'region_cls/{m}': top1 + i for i, m in enumerate(METRICS)}]
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def _demo_dir(root: Path, offset: float) -> Path:
    """A demo folder whose six evaluations have Top-1 10/20/30 (baseline/image/clim) for the seen
    vocabulary and 40/50/60 for the unseen one, plus ``offset``."""
    for vocabulary, base in (('seen', 10), ('unseen', 40)):
        for i, run in enumerate(('baseline', 'image', 'clim')):
            evaluated_in_training = run != 'baseline' and vocabulary == 'seen'
            _write_record(root / run if evaluated_in_training else
                          root / 'eval' / f'{run}-{vocabulary}', base + 10 * i + offset)
    return root


def test_one_run_prints_its_values(tmp_path: Path) -> None:
    demo = _demo_dir(tmp_path / 'demo', 0.0)
    out = run_tool(python_tool('misc/region_cls_table.py', str(demo)), cwd=tmp_path).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(('baseline', '+'))]
    # seen: baseline, +image-level, +CLIM; then unseen in the same order
    assert [row[1:] for row in rows] == [
        [f'{v + i:.2f}' for i in range(4)] for v in (10, 20, 30, 40, 50, 60)]
    gains = [line.split()[3:] for line in out.splitlines() if line.startswith('CLIM - image')]
    assert gains == [['10.00'] * 4] * 2  # 30 - 20 (seen) and 60 - 50 (unseen) for each metric


def test_three_seeds_print_mean_and_sample_std(tmp_path: Path) -> None:
    # Top-1 of the seen baseline over three seeds: 10, 12, 17 -> mean 13, sample std
    # sqrt((9 + 1 + 16) / 2) = sqrt(13) = 3.61
    demos = [str(_demo_dir(tmp_path / f'seed{i}', offset)) for i, offset in enumerate((0, 2, 7))]
    out = run_tool(python_tool('misc/region_cls_table.py', *demos), cwd=tmp_path).stdout
    rows = [line for line in out.splitlines() if line.startswith(('baseline', '+'))]
    assert len(rows) == 6
    assert rows[0].split()[1:4] == ['13.00', '+-', '3.61']
    assert rows[5].split()[1:4] == ['63.00', '+-', '3.61']  # the unseen +CLIM row


def test_gain_is_paired_within_each_run(tmp_path: Path) -> None:
    # Seen Top-1 of three seeds: image-level 20, 25, 30 and CLIM 30, 38, 39: the gains 10, 13, 9
    # have mean 10.67 and sample std sqrt((0.444 + 5.444 + 2.778) / 2) = 2.08, while the
    # unpaired difference of the means would carry each run's spread.
    demos = []
    for i, (image, clim) in enumerate(((20, 30), (25, 38), (30, 39))):
        demo = _demo_dir(tmp_path / f'seed{i}', 0.0)
        _write_record(demo / 'image', image)
        _write_record(demo / 'clim', clim)
        demos.append(str(demo))
    out = run_tool(python_tool('misc/region_cls_table.py', *demos), cwd=tmp_path).stdout
    gain = next(line for line in out.splitlines() if line.startswith('CLIM - image'))
    assert gain.split()[3:6] == ['10.67', '+-', '2.08']


def test_regionclip_rows_join_when_every_run_has_them(tmp_path: Path) -> None:
    # RegionCLIP-style Top-1 25 (seen) and 55 (unseen) beside CLIM's 30 and 60: gains of 5.
    demos = [_demo_dir(tmp_path / f'seed{i}', 0.0) for i in range(2)]
    for demo in demos:
        _write_record(demo / 'regionclip-nouns', 25)
        _write_record(demo / 'eval' / 'regionclip-nouns-unseen', 55)
    out = run_tool(python_tool('misc/region_cls_table.py', *map(str, demos)),
                   cwd=tmp_path).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith('+RegionCLIP')]
    assert [row[1] for row in rows] == ['25.00', '55.00']
    gains = [line.split()[3] for line in out.splitlines() if line.startswith('CLIM - RC ')]
    assert gains == ['5.00', '5.00']
    # One run without it: the rows are left out rather than averaged over fewer runs.
    third = _demo_dir(tmp_path / 'seed2', 0.0)
    out = run_tool(python_tool('misc/region_cls_table.py', *map(str, demos + [third])),
                   cwd=tmp_path).stdout
    assert 'RegionCLIP' not in out and 'CLIM - RC' not in out
