#!/usr/bin/env bash
# The main job on the embedded default data (run by `make demo` after set-up), on CPU:
#   1. generate the toy shapes (captioned images for training, scenes with boxes for evaluation);
#   2. train a tiny CLIP from scratch, image-level (the baseline), and export it to open_clip format;
#   3. embed the 16 class names with its (from now on frozen) text tower;
#   4. continue the baseline for the same number of steps once image-level and once with CLIM;
#   5. classify the scenes' ground-truth boxes zero-shot with each model and print the table.
# Usage: tools/demo.sh [WORK_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK_DIR=${1:-work_dirs/demo}
PY=${PYTHON:-python}
DATA=data/toy_shapes
CONFIGS=configs/clim
BASELINE_CLIP=$WORK_DIR/baseline/clip_openclip.pt
EMBEDDINGS=$DATA/embeddings/toy_classes.npy
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
step() { echo; echo "=== [demo $((SECONDS / 60))m$((SECONDS % 60))s] $1"; }

step "1/5 generate the toy data in $DATA"
"$PY" tools/misc/generate_toy_data.py --out "$DATA"

step "2/5 train the image-level CLIP baseline from scratch"
"$PY" tools/train.py $CONFIGS/clip-baseline_toy-vit_toy-shapes.py --work-dir "$WORK_DIR/baseline"
"$PY" tools/model_converters/clim_to_openclip.py "$(cat "$WORK_DIR/baseline/last_checkpoint")" \
    "$BASELINE_CLIP"

step "3/5 class-name embeddings from the baseline's text tower"
"$PY" tools/generate_text_embeddings.py $DATA/annotations/instances_val.json \
    --model mmclim-toy-vit --checkpoint "$BASELINE_CLIP" --templates single --out "$EMBEDDINGS"
OPTIONS=(model.clip.pretrained="$BASELINE_CLIP" model.class_embeddings="$EMBEDDINGS")
"$PY" tools/test.py $CONFIGS/clim_toy-vit_toy-shapes.py "$(cat "$WORK_DIR/baseline/last_checkpoint")" \
    --work-dir "$WORK_DIR/baseline_eval" --cfg-options "${OPTIONS[@]}"

step "4/5 continue the baseline image-level, then with CLIM (same steps, same data)"
"$PY" tools/train.py $CONFIGS/clip-image_toy-vit_toy-shapes.py --work-dir "$WORK_DIR/image" \
    --cfg-options "${OPTIONS[@]}"
"$PY" tools/train.py $CONFIGS/clim_toy-vit_toy-shapes.py --work-dir "$WORK_DIR/clim" \
    --cfg-options "${OPTIONS[@]}"

step "5/5 zero-shot region classification of the scenes' ground-truth boxes"
"$PY" tools/misc/region_cls_table.py baseline="$WORK_DIR/baseline_eval" \
    image-level="$WORK_DIR/image" clim="$WORK_DIR/clim" | tee "$WORK_DIR/results.txt"
echo "demo finished in $((SECONDS / 60))m$((SECONDS % 60))s; table in $WORK_DIR/results.txt"
