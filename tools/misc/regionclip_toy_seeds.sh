#!/usr/bin/env bash
# The toy comparison of RegionCLIP-style and CLIM-style pre-training, over training seeds. For each
# seed N, in the tools/demo.sh folder WORK_ROOT/seed<N> (made first, as tools/misc/clim_toy_seeds.sh
# makes it, when it has no CLIM run yet), from the image-level baseline that CLIM continued:
#   1. train the toy class-agnostic RPN on the base boxes of the toy scenes (seed N), unless the
#      folder has one;
#   2. build the concept pool from the toy captions: for each POOL, the nouns ('nouns',
#      RegionCLIP's rule) or the nouns with their adjectives ('phrases'), seen >= 100 times, embedded
#      by the baseline's (frozen) text tower in the caption wording, as the class names are;
#   3. continue the baseline RegionCLIP-style for the CLIM continuation's steps (same data,
#      batch, optimiser, ensembling);
#   4. classify the scenes' ground-truth boxes zero-shot, with the seen vocabulary (at the end of
#      training) and the unseen one (tools/test.py);
# then print the region classification table of all seeds, RegionCLIP's rows included.
# Usage: tools/misc/regionclip_toy_seeds.sh [WORK_ROOT]   (SEEDS="0 1 2", POOLS="nouns phrases")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK_ROOT=${1:-work_dirs/demo_seeds}
SEEDS=${SEEDS:-0 1 2}
POOLS=${POOLS:-nouns phrases}
PY=${PYTHON:-python}
DATA=data/toy_shapes
CONFIGS=configs/regionclip/toy
cd "$ROOT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
dirs=()
for seed in $SEEDS; do
    dir=$WORK_ROOT/seed$seed
    [ -f "$dir/clim/last_checkpoint" ] || SEED=$seed bash tools/demo.sh "$dir"
    baseline=$dir/baseline/clip_openclip.pt
    [ -f "$dir/rpn/last_checkpoint" ] || "$PY" tools/train.py \
        $CONFIGS/rpn_r18-fpn_toy-shapes-base.py --work-dir "$dir/rpn" --cfg-options randomness.seed="$seed"
    for pool in $POOLS; do
        concepts=$dir/embeddings/toy_concepts_$pool
        flags=()
        [ "$pool" = nouns ] || flags=(--with-adjectives)
        "$PY" tools/dataset_converters/extract_concepts.py \
            $DATA/annotations/captions_caption_train.json --out "$concepts.txt" "${flags[@]}"
        "$PY" tools/generate_text_embeddings.py "$concepts.txt" --model mmclim-toy-vit \
            --checkpoint "$baseline" --templates single --out "${concepts}_embeddings.npy"
        options=(model.clip.pretrained="$baseline" model.concept_pool="${concepts}_embeddings.npy"
                 model.rpn.checkpoint="$(cat "$dir/rpn/last_checkpoint")")
        "$PY" tools/train.py $CONFIGS/regionclip_toy-vit_toy-shapes.py \
            --work-dir "$dir/regionclip-$pool" --cfg-options "${options[@]}" \
            model.class_embeddings="$dir/embeddings/toy_classes_seen.npy" randomness.seed="$seed"
        "$PY" tools/test.py $CONFIGS/regionclip_toy-vit_toy-shapes.py \
            "$(cat "$dir/regionclip-$pool/last_checkpoint")" \
            --work-dir "$dir/eval/regionclip-$pool-unseen" --cfg-options "${options[@]}" \
            model.class_embeddings="$dir/embeddings/toy_classes_unseen.npy" > /dev/null
    done
    dirs+=("$dir")
done
"$PY" tools/misc/region_cls_table.py "${dirs[@]}" | tee "$WORK_ROOT/results_regionclip.txt"
