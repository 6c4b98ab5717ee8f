# Copyright (c) mmclim contributors. All rights reserved.
"""Print the zero-shot region classification table of one or more ``tools/demo.sh`` runs.

A demo folder holds, for the runs baseline, image and clim and the vocabularies seen (the
caption wording) and unseen (prompt templates the text tower never saw), the work dir of the
evaluation, whose newest json record with ``region_cls/top1`` is read: ``eval/<run>-<vocabulary>/``
(``tools/test.py``), except for the continuations with the seen vocabulary, which their own
training run evaluates at its end (``<run>/``).
The RegionCLIP-style continuations of ``tools/misc/regionclip_toy_seeds.sh``
(``regionclip-<pool>/``, ``eval/regionclip-<pool>-unseen/``) join the table when every folder
has them.
With several folders (e.g. three seeds) every cell is the mean and the sample standard
deviation over them. The last rows of each vocabulary are CLIM's gain over the image-level
continuation (and over each RegionCLIP one), taken within each folder (they start from the
same baseline) before averaging.

Usage: python tools/misc/region_cls_table.py work_dirs/demo [work_dirs/demo_seed1 ...]
"""
import argparse
import json
import math
from pathlib import Path
from typing import Dict, List

RUNS = (('baseline', 'baseline'), ('image', '+image-level'), ('clim', '+CLIM'))
# Runs shown when every folder has them: RegionCLIP-style, by concept pool.
OPTIONAL_RUNS = (('regionclip-nouns', '+RegionCLIP'), ('regionclip-phrases', '+RC phrases'))
# The runs CLIM's gain is shown over, with the row's label.
GAIN_ROWS = {'image': 'CLIM - image', 'regionclip-nouns': 'CLIM - RC',
             'regionclip-phrases': 'CLIM - RC phr.'}
VOCABULARIES = ('seen', 'unseen')
METRICS = ('top1', 'top5', 'mean_top1', 'mean_top5')
PREFIX = 'region_cls/'


def last_record(work_dir: Path) -> Dict[str, float]:
    """The newest json record of ``work_dir`` holding region classification metrics."""
    records: List[Dict[str, float]] = []
    for path in sorted(work_dir.rglob('*.json'), key=lambda p: p.stat().st_mtime):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and PREFIX + METRICS[0] in record:
                records.append(record)
    if not records:
        raise FileNotFoundError(f'no json record with {PREFIX + METRICS[0]} under {work_dir}')
    return records[-1]


def record_dir(demo_dir: Path, run: str, vocabulary: str) -> Path:
    """Where ``tools/demo.sh`` evaluated ``run`` with ``vocabulary``."""
    if run != 'baseline' and vocabulary == 'seen':
        return demo_dir / run
    return demo_dir / 'eval' / f'{run}-{vocabulary}'


def cell(values: List[float]) -> str:
    """One value, or mean +- sample standard deviation of several."""
    if len(values) == 1:
        return f'{values[0]:.2f}'
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean)**2 for v in values) / (len(values) - 1))
    return f'{mean:.2f} +- {std:.2f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('demo_dirs', nargs='+', type=Path, help='work dirs of tools/demo.sh')
    args = parser.parse_args()
    width = 11 if len(args.demo_dirs) == 1 else 16
    print(f'zero-shot region classification, %, {len(args.demo_dirs)} run(s): '
          + ', '.join(str(d) for d in args.demo_dirs))
    for vocabulary in VOCABULARIES:
        header = f'{vocabulary + " prompts":16s}' + ''.join(f'{m:>{width}s}' for m in METRICS)
        print()
        print(header)
        print('-' * len(header))
        values = {}  # run -> metric -> one value per demo folder
        runs = RUNS + tuple((run, name) for run, name in OPTIONAL_RUNS
                            if all((d / run).is_dir() for d in args.demo_dirs))
        for run, name in runs:
            records = [last_record(record_dir(d, run, vocabulary)) for d in args.demo_dirs]
            values[run] = {m: [r[PREFIX + m] for r in records] for m in METRICS}
            print(f'{name:16s}' + ''.join(f'{cell(values[run][m]):>{width}s}' for m in METRICS))
        for run, label in GAIN_ROWS.items():
            if run in values:
                gains = {m: [c - i for c, i in zip(values['clim'][m], values[run][m])]
                         for m in METRICS}
                print(f'{label:16s}' + ''.join(f'{cell(gains[m]):>{width}s}'
                                               for m in METRICS))


if __name__ == '__main__':
    main()
