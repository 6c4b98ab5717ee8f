#!/usr/bin/env bash
# The main job on the embedded default data: generate the toy shapes, train the tiny RetinaNet
# smoke config, and evaluate its last checkpoint (COCO bbox mAP).
# Usage: tools/demo.sh [WORK_DIR]   (run by `make demo` after set-up)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK_DIR=${1:-work_dirs/demo}
PY=${PYTHON:-python}
CONFIG=$ROOT/configs/toy/retinanet_tiny_toy-shapes.py
cd "$ROOT"

"$PY" tools/misc/generate_toy_data.py --out data/toy_shapes
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
"$PY" tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" --work-dir "$WORK_DIR/test"
