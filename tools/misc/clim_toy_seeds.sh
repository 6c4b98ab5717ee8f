#!/usr/bin/env bash
# The demo's region classification table as mean and spread over training seeds: runs
# tools/demo.sh with SEED=0, 1, 2 (same generated data; seeds of the baseline, the image-level
# and the CLIM training) into WORK_ROOT/seed<N>, then prints each cell as mean +- sample std.
# Usage: tools/misc/clim_toy_seeds.sh [WORK_ROOT]   (about 3 x the demo's time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK_ROOT=${1:-work_dirs/demo_seeds}
SEEDS=${SEEDS:-0 1 2}
PY=${PYTHON:-python}
cd "$ROOT"
dirs=()
for seed in $SEEDS; do
    SEED=$seed bash tools/demo.sh "$WORK_ROOT/seed$seed"
    dirs+=("$WORK_ROOT/seed$seed")
done
"$PY" tools/misc/region_cls_table.py "${dirs[@]}" | tee "$WORK_ROOT/results.txt"
