#!/usr/bin/env bash
# The toy caption-supervision experiments, Detic + CLIM (configs/detic/toy/) and BARON + CLIM
# (configs/baron/toy/), on CPU: one stage-1 detector trained from scratch on the base-class boxes
# of the toy shapes, then four arms continued from it for the same iterations, each over several
# seeds:
#   det-only          detection only
#   caption           + the method's caption loss on single caption images, object-centric ones
#                     (captions_caption_centric.json; README: why): Detic 4 boxed + 8 captioned
#                     images per iteration, BARON 4 + 4
#   caption-matched   + captions on as many single images as the CLIM arm consumes (Detic 4 + 43,
#                     BARON 4 + 21)
#   clim              + CLIM: half of the caption images replaced by random 2x2/3x3/4x4 mosaics
#                     (Detic 4 + 4 + 4, BARON 4 + 2 + 2)
# Each run is evaluated on the 100 validation scenes with tools/test.py (box AP50 of the 12 base
# and 4 novel classes, OVCocoSplitMetric); the script ends with the table of mean, sample
# standard deviation and range over the seeds.
#
# Needs `make demo` first: data/toy_shapes (with the object-centric caption images of
# tools/misc/generate_toy_data.py), and in DEMO_DIR the class embeddings and the baseline toy
# CLIP, whose frozen text tower embeds the captions (and, for BARON, reads the pseudo words in
# every arm). A run whose metrics are already in WORK_DIR is skipped (rerun the script to finish
# an interrupted sweep).
# Usage: tools/misc/caption_toy_arms.sh METHOD [WORK_DIR] [SEED ...]
#   METHOD: detic or baron; default WORK_DIR work_dirs/METHOD_toy, seeds 0 1 2.
# Environment: PYTHON (interpreter), DEMO_DIR (default work_dirs/demo), ARMS (default all four).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
METHOD=${1:?usage: caption_toy_arms.sh detic|baron [WORK_DIR] [SEED ...]}
[[ $METHOD == detic || $METHOD == baron ]] || { echo "METHOD: detic or baron, got $METHOD" >&2; exit 2; }
WORK_DIR=${2:-work_dirs/${METHOD}_toy}
if [[ $# -gt 2 ]]; then SEEDS=("${@:3}"); else SEEDS=(0 1 2); fi
PY=${PYTHON:-python}
DEMO_DIR=${DEMO_DIR:-work_dirs/demo}
ARMS=(${ARMS:-det-only caption caption-matched clim})
CONFIGS=configs/$METHOD/toy
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
declare -A CONFIG=(
    [det-only]=$CONFIGS/${METHOD}_r18-fpn_toy-shapes-det-only.py
    [caption]=$CONFIGS/${METHOD}_r18-fpn_toy-shapes-caption.py
    [caption-matched]=$CONFIGS/${METHOD}_r18-fpn_toy-shapes-caption-matched.py
    [clim]=$CONFIGS/${METHOD}-clim_r18-fpn_toy-shapes-caption.py
)
EMBEDDINGS=$DEMO_DIR/embeddings/toy_classes_seen.npy
CLIP=$DEMO_DIR/baseline/clip_openclip.pt
for needed in "$EMBEDDINGS" "$CLIP" data/toy_shapes/annotations/captions_caption_centric.json; do
    [[ -f $needed ]] || { echo "missing $needed: run make demo (or tools/misc/generate_toy_data.py) first" >&2; exit 1; }
done
MODEL=(model.roi_head.bbox_head.class_embeddings="$EMBEDDINGS")
# BARON's box head reads its pseudo words with the text tower in every run, stage 1 included.
[[ $METHOD == baron ]] && MODEL+=(model.text_encoder.pretrained="$CLIP")
START=$SECONDS
elapsed() { echo "$(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s"; }

BASE=$WORK_DIR/base
if [[ ! -f $BASE/last_checkpoint ]]; then
    echo "=== [$(elapsed)] stage 1: the base-class detector"
    mkdir -p "$WORK_DIR"
    "$PY" tools/train.py $CONFIGS/faster-rcnn_r18-fpn_toy-shapes-base.py --work-dir "$BASE" \
        --cfg-options "${MODEL[@]}" > "$BASE.log" 2>&1 || { tail -20 "$BASE.log" >&2; exit 1; }
fi
BASE_CHECKPOINT=$(cat "$BASE/last_checkpoint")

for seed in "${SEEDS[@]}"; do
    for arm in "${ARMS[@]}"; do
        run=$WORK_DIR/$arm/seed$seed
        if compgen -G "$run/test/*/*.json" > /dev/null; then
            echo "=== $arm seed $seed: done before, $run/test"
            continue
        fi
        echo "=== [$(elapsed)] $arm seed $seed"
        mkdir -p "$WORK_DIR/$arm"
        options=("${MODEL[@]}" randomness.seed="$seed")
        [[ $arm == det-only || $METHOD == baron ]] || options+=(model.text_encoder.pretrained="$CLIP")
        # No validation during training: the test below evaluates the last checkpoint once.
        "$PY" tools/train.py "${CONFIG[$arm]}" --work-dir "$run/train" --cfg-options \
            "${options[@]}" load_from="$BASE_CHECKPOINT" train_cfg.val_interval=100000 \
            > "$run.train.log" 2>&1 || { tail -20 "$run.train.log" >&2; exit 1; }
        "$PY" tools/test.py "${CONFIG[$arm]}" "$(cat "$run/train/last_checkpoint")" \
            --work-dir "$run/test" --cfg-options "${options[@]}" > "$run.test.log" 2>&1 \
            || { tail -20 "$run.test.log" >&2; exit 1; }
    done
done
echo "=== all runs in $(elapsed)"
"$PY" tools/misc/ap50_seed_table.py "$WORK_DIR" "${ARMS[@]}" --title arm
