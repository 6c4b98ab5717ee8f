# Copyright (c) mmclim contributors. All rights reserved.
"""Print box AP50 (base, novel, all) over seeds: mean, sample standard deviation and range.

Reads the metrics json that ``tools/test.py`` writes with ``OVCocoSplitMetric``
(``<run>/test/<timestamp>/<timestamp>.json``) for ``WORK_DIR/<ROW>/seed*/``.

Usage: python tools/misc/ap50_seed_table.py WORK_DIR ROW [ROW ...] [--title TITLE]
"""
import argparse
import json
import statistics
from pathlib import Path
from typing import List, Optional

SPLITS = ('base', 'novel', 'all')
METRIC = 'coco/bbox_AP50_{}'


def seed_table(work_dir: Path, rows: List[str], title: str = 'run') -> str:
    """The table of the rows that have results, one line per row, then one per seed.

    Args:
        work_dir (Path): Folder holding ``<row>/seed<N>/test/*/*.json``.
        rows (List[str]): Row folders, in print order.
        title (str): Header of the first column. Defaults to ``'run'``.

    Returns:
        str: The table, AP50 in %.
    """
    width = max([len(title)] + [len(row) for row in rows])
    lines = [f'{title:<{width}} {"seeds":>5} ' + ' '.join(f'{"AP50 " + s:>26}' for s in SPLITS)]
    for row in rows:
        runs = sorted((work_dir / row).glob('seed*/test/*/*.json'))
        if not runs:
            continue
        metrics = [json.loads(run.read_text()) for run in runs]
        cells = []
        for split in SPLITS:
            values = [100 * m[METRIC.format(split)] for m in metrics]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f'{statistics.mean(values):5.1f} +- {spread:4.1f} '
                         f'[{min(values):4.1f}, {max(values):4.1f}]')
        lines.append(f'{row:<{width}} {len(runs):>5} ' + ' '.join(f'{c:>26}' for c in cells))
        for run, m in zip(runs, metrics):
            seed = run.relative_to(work_dir / row).parts[0]
            lines.append(f'  {seed}: ' + ' '.join(f'{100 * m[METRIC.format(s)]:.1f}'
                                                  for s in SPLITS))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', type=Path)
    parser.add_argument('rows', nargs='+', help='row folders under WORK_DIR')
    parser.add_argument('--title', default='run', help='header of the first column')
    args = parser.parse_args(argv)
    print(seed_table(args.work_dir, args.rows, args.title))


if __name__ == '__main__':
    main()
