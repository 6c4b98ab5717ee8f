#!/usr/bin/env bash
# The main job on the embedded default data (run by `make demo` after set-up), on CPU:
#   1. generate the toy shapes (captioned images for training, scenes with boxes for evaluation);
#   2. train a tiny CLIP from scratch, image-level, both towers (the baseline); export it;
#   3. embed the 16 class names with its (from now on frozen) text tower, twice: with the
#      caption wording the tower was trained on, and with prompt templates it never saw;
#   4. continue the baseline for the same number of steps once image-level and once with CLIM
#      (the paper recipe: fixed 2x2 + 3x3 + 4x4 mosaics, warm-up cosine, 0.7/0.3 ensembling);
#   5. classify the scenes' ground-truth boxes zero-shot with each model and each vocabulary;
#   6. draw where the baseline's and CLIM's dense features respond to class names, on a 2x2
#      mosaic of caption images and on a scene (with the pointing game on its objects).
# Usage: tools/demo.sh [WORK_DIR]; SEED=N seeds the three trainings (default 0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK_DIR=${1:-work_dirs/demo}
SEED=${SEED:-0}
PY=${PYTHON:-python}
DATA=data/toy_shapes
CONFIGS=configs/clim
BASELINE_CLIP=$WORK_DIR/baseline/clip_openclip.pt
SEEN=$WORK_DIR/embeddings/toy_classes_seen.npy
UNSEEN=$WORK_DIR/embeddings/toy_classes_unseen.npy
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
step() { echo; echo "=== [demo $((SECONDS / 60))m$((SECONDS % 60))s] $1"; }
SEEDING=(randomness.seed="$SEED")

step "1/6 generate the toy data in $DATA"
"$PY" tools/misc/generate_toy_data.py --out "$DATA"

step "2/6 train the image-level CLIP baseline from scratch (seed $SEED)"
"$PY" tools/train.py $CONFIGS/clip-baseline_toy-vit_toy-shapes.py --work-dir "$WORK_DIR/baseline" \
    --cfg-options "${SEEDING[@]}"
"$PY" tools/model_converters/clim_to_openclip.py "$(cat "$WORK_DIR/baseline/last_checkpoint")" \
    "$BASELINE_CLIP"

step "3/6 class-name embeddings from the baseline's text tower (seen and unseen prompts)"
"$PY" tools/generate_text_embeddings.py $DATA/annotations/instances_val.json \
    --model mmclim-toy-vit --checkpoint "$BASELINE_CLIP" --templates single --out "$SEEN"
"$PY" tools/generate_text_embeddings.py $DATA/annotations/instances_val.json \
    --model mmclim-toy-vit --checkpoint "$BASELINE_CLIP" --templates toy-unseen --out "$UNSEEN"

step "4/6 continue the baseline image-level, then with CLIM (same steps, same data)"
# Each ends with the zero-shot region classification with the seen vocabulary.
OPTIONS=(model.clip.pretrained="$BASELINE_CLIP" model.class_embeddings="$SEEN")
"$PY" tools/train.py $CONFIGS/clip-image_toy-vit_toy-shapes.py --work-dir "$WORK_DIR/image" \
    --cfg-options "${OPTIONS[@]}" "${SEEDING[@]}"
"$PY" tools/train.py $CONFIGS/clim_toy-vit_toy-shapes.py --work-dir "$WORK_DIR/clim" \
    --cfg-options "${OPTIONS[@]}" "${SEEDING[@]}"

step "5/6 zero-shot region classification of the scenes' ground-truth boxes"
evaluate() {  # RUN VOCABULARY [cfg-options...]: tools/test.py into eval/RUN-VOCABULARY
    local run=$1 vocabulary=$2 checkpoint
    checkpoint=$(cat "$WORK_DIR/$1/last_checkpoint")
    shift 2
    "$PY" tools/test.py $CONFIGS/clim_toy-vit_toy-shapes.py "$checkpoint" \
        --work-dir "$WORK_DIR/eval/$run-$vocabulary" --cfg-options \
        model.clip.pretrained="$BASELINE_CLIP" \
        model.class_embeddings="$WORK_DIR/embeddings/toy_classes_$vocabulary.npy" "$@" > /dev/null
}
# The baseline is what the continuations start from: its own weights, no ensembling.
for vocabulary in seen unseen; do
    evaluate baseline $vocabulary model.weight_ensemble=None custom_hooks=[]
done
for run in image clim; do
    evaluate $run unseen
done
"$PY" tools/misc/region_cls_table.py "$WORK_DIR" | tee "$WORK_DIR/results.txt"

step "6/6 text response maps of the baseline and CLIM: $WORK_DIR/response_maps"
MODELS=(--model "baseline=mmclim-toy-vit:$BASELINE_CLIP"
        --model "CLIM=$CONFIGS/clim_toy-vit_toy-shapes.py:$(cat "$WORK_DIR/clim/last_checkpoint")"
        --cfg-options model.clip.pretrained="$BASELINE_CLIP" model.class_embeddings="$SEEN")
"$PY" tools/analysis_tools/response_maps.py "${MODELS[@]}" --mosaic 2x2 \
    --images $DATA/caption_train/00000{2,3,6,7}.png \
    --texts "yellow diamond" "green diamond" "red square" "blue square" \
    --out-dir "$WORK_DIR/response_maps"
"$PY" tools/analysis_tools/response_maps.py "${MODELS[@]}" --size 128 \
    --images $DATA/val/000001.png --ann-file $DATA/annotations/instances_val.json \
    --out-dir "$WORK_DIR/response_maps"
echo "demo finished in $((SECONDS / 60))m$((SECONDS % 60))s; table in $WORK_DIR/results.txt"
