#!/usr/bin/env bash
# The toy F-VLM (configs/fvlm/fvlm_toy-vit_toy-shapes.py) over several seeds, for each frozen toy
# CLIP of `make demo`: its image-level baseline and its CLIM continuation (exported here with
# tools/model_converters/clim_to_openclip.py when the export is missing). Each run trains with
# tools/dist_train.sh (NPROC processes x 4 images, 200 steps), then evaluates the last checkpoint
# with tools/test.py on the 100 validation scenes; the script prints, per CLIP, the mean, the
# sample standard deviation and the range of box AP50 on the base, novel and all classes.
#
# Needs `make demo` first (data/toy_shapes, and in DEMO_DIR the class embeddings and the baseline
# and clim runs); a CLIP whose weights are missing is skipped, and so is a run whose metrics
# are already in WORK_DIR (rerun the script to finish an interrupted sweep).
# Usage: tools/misc/fvlm_toy_seeds.sh [WORK_DIR] [SEED ...]   (default: work_dirs/fvlm_toy 0 1 2)
# Environment: PYTHON (interpreter), NPROC (training processes, default 2), DEMO_DIR (default
# work_dirs/demo), CLIPS (default "baseline clim").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK_DIR=${1:-work_dirs/fvlm_toy}
if [[ $# -gt 1 ]]; then SEEDS=("${@:2}"); else SEEDS=(0 1 2); fi
PY=${PYTHON:-python}
NPROC=${NPROC:-2}
DEMO_DIR=${DEMO_DIR:-work_dirs/demo}
CLIPS=(${CLIPS:-baseline clim})
CONFIG=configs/fvlm/fvlm_toy-vit_toy-shapes.py
cd "$ROOT"
export PYTHON=$PY OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"
export PORT=${PORT:-$((29500 + RANDOM % 500))}  # torchrun's rendezvous port

clip_weights() {  # the open_clip export of a demo run, made from its last checkpoint if missing
    local run=$DEMO_DIR/$1 export=$DEMO_DIR/$1/clip_openclip.pt
    if [[ ! -f $export && -f $run/last_checkpoint ]]; then
        "$PY" tools/model_converters/clim_to_openclip.py "$(cat "$run/last_checkpoint")" \
            "$export" >&2
    fi
    [[ -f $export ]] && echo "$export"
}

START=$SECONDS
for clip in "${CLIPS[@]}"; do
    if ! weights=$(clip_weights "$clip"); then
        echo "skipping $clip: no $DEMO_DIR/$clip/clip_openclip.pt nor a checkpoint to export" >&2
        continue
    fi
    mkdir -p "$WORK_DIR/$clip"
    for seed in "${SEEDS[@]}"; do
        run=$WORK_DIR/$clip/seed$seed
        if compgen -G "$run/test/*/*.json" > /dev/null; then
            echo "=== $clip seed $seed: done before, $run/test"
            continue
        fi
        echo "=== [$(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s] $clip seed $seed"
        options=(model.backbone.pretrained="$weights" randomness.seed="$seed"
                 model.roi_head.bbox_head.class_embeddings="$DEMO_DIR/embeddings/toy_classes_seen.npy")
        # No validation during training: the test below evaluates the last checkpoint once.
        tools/dist_train.sh "$CONFIG" "$NPROC" --work-dir "$run/train" \
            --cfg-options "${options[@]}" train_cfg.val_interval=100000 > "$run.train.log" 2>&1 \
            || { tail -20 "$run.train.log" >&2; exit 1; }
        "$PY" tools/test.py "$CONFIG" "$(cat "$run/train/last_checkpoint")" \
            --work-dir "$run/test" --cfg-options "${options[@]}" > "$run.test.log" 2>&1 \
            || { tail -20 "$run.test.log" >&2; exit 1; }
    done
done
echo "=== all runs in $(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s"

"$PY" tools/misc/ap50_seed_table.py "$WORK_DIR" "${CLIPS[@]}" --title "frozen CLIP"
