# Copyright (c) mmclim contributors. All rights reserved.
"""Print the zero-shot region classification results of several runs side by side.

Each run is ``NAME=WORK_DIR``; the last record with ``region_cls/top1`` in the run's json logs
(``tools/test.py``'s ``<timestamp>.json`` or the training run's ``vis_data/scalars.json``) is used.

Usage: python tools/misc/region_cls_table.py baseline=work_dirs/demo/baseline_eval \
    image-level=work_dirs/demo/image clim=work_dirs/demo/clim
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List

KEYS = ('region_cls/top1', 'region_cls/top5', 'region_cls/mean_top1', 'region_cls/mean_top5')


def last_record(work_dir: Path) -> Dict[str, float]:
    """The newest json record of ``work_dir`` holding region classification metrics."""
    records: List[Dict[str, float]] = []
    for path in sorted(work_dir.rglob('*.json'), key=lambda p: p.stat().st_mtime):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and KEYS[0] in record:
                records.append(record)
    if not records:
        raise FileNotFoundError(f'no json record with {KEYS[0]} under {work_dir}')
    return records[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', help='NAME=WORK_DIR')
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        name, _, work_dir = run.partition('=')
        if not work_dir:
            raise ValueError(f'expected NAME=WORK_DIR, got {run!r}')
        rows.append((name, last_record(Path(work_dir))))
    header = f'{"run":14s}' + ''.join(f'{key.split("/")[1]:>11s}' for key in KEYS)
    print(header)
    print('-' * len(header))
    for name, record in rows:
        print(f'{name:14s}' + ''.join(f'{record.get(key, float("nan")):11.2f}' for key in KEYS))


if __name__ == '__main__':
    main()
