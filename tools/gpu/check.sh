#!/usr/bin/env bash
# The GPU check (docs/gpu.md): run on a GPU machine that has no package registry (Python 3.12,
# torch 2.11+cu130, nvcc 13.0), over a copy of this repository that carries .gpu_bundle
# (python tools/gpu/prepare.py, run beforehand where PyPI is reachable).
#
# Usage: tools/gpu/check.sh [--dry-run] STAGE...     STAGE: setup, test, bench (run in that order)
#   setup  install the bundled wheels; build mmcv 2.1.0's ops with CUDA for sm_90 only (all cores,
#          at most MMCLIM_CUDA_BUILD_TIMEOUT seconds) and try them on the GPU in a process of their
#          own (tools/misc/check_mmcv_ops.py); if the build or the try fails, say so and build its
#          CPU ops, so that mmclim's torchvision fallback runs RoIAlign, NMS and the focal loss on
#          the GPU. Done once per machine: a later call on the same machine reuses it.
#   test   the GPU tests (pytest -m gpu) and the fallback's tests.
#   bench  benchmarks/clim_step.py --gpu (ViT-B/16, bf16, canvases of 1024: images/s and MFU),
#          benchmarks/mosaic.py --gpu (the batch mosaic), and tools/gpu/fvlm_step.py (F-VLM
#          ViT-B/16 training iterations under --amp and one predict at 1024, random weights).
#   --dry-run  checks every step but the GPU ones, here: the bundle (hashes, wheel tags for
#          CPython 3.12, requirements, size), mmcv's source and the commands; the GPU tests are
#          collected; the F-VLM step runs on CPU on the toy config.
#
# Every step is timed; the output goes to $OUT (default work_dirs/gpu_check/out): check.log, the
# mmcv build logs, timings.tsv and the GPU tests' junit xml. Exit status: 0 when every stage passed, else 1 (a failed mmcv CUDA
# build alone does not fail the check: the fallback is what runs then, and the summary says so).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUNDLE=${MMCLIM_GPU_BUNDLE:-$ROOT/.gpu_bundle}
STATE=${MMCLIM_GPU_STATE:-$ROOT/work_dirs/gpu_check}
OUT=${OUT:-$STATE/out}
CUDA_BUILD_TIMEOUT=${MMCLIM_CUDA_BUILD_TIMEOUT:-400}
CPU_BUILD_TIMEOUT=${MMCLIM_CPU_BUILD_TIMEOUT:-150}
CUDA_ARCH=${MMCLIM_CUDA_ARCH:-9.0}
PY=${PYTHON:-python3}
JOBS=$(nproc)
SITE=$STATE/site
BUILDENV=$STATE/buildenv
SRC=$STATE/src

DRY_RUN=0
STAGES=()
for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        setup|test|bench) STAGES+=("$arg") ;;
        *) echo "check: unknown argument '$arg' (stages: setup test bench; --dry-run)" >&2; exit 2 ;;
    esac
done
[[ ${#STAGES[@]} -gt 0 ]] || { echo "check: name at least one stage: setup test bench" >&2; exit 2; }
mkdir -p "$OUT" "$STATE"
TIMINGS=$OUT/timings.tsv
[[ -f $TIMINGS ]] || printf 'stage\tseconds\tstatus\n' >"$TIMINGS"
FAILED=0

say() { echo "[check] $*"; }
# run NAME COMMAND...: time one step; its output goes to $OUT/check.log and stdout (a build's to
# $OUT/NAME.log, its last lines to both: the lease returns few files and the end of stdout only).
run() {
    local name=$1 start=$SECONDS status
    shift
    say "$name: $*" | tee -a "$OUT/check.log"
    if [[ $name == *_build ]]; then
        "$@" >"$OUT/$name.log" 2>&1
        status=$?
        tail -n 25 "$OUT/$name.log" | tee -a "$OUT/check.log"
    else
        "$@" 2>&1 | tee -a "$OUT/check.log"
        status=${PIPESTATUS[0]}
    fi
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$status" >>"$TIMINGS"
    say "$name: exit $status after $((SECONDS - start)) s" | tee -a "$OUT/check.log"
    return "$status"
}
step() { run "$@" || { FAILED=1; return 1; }; }

# Where setup left mmcv and the bundled packages (read by the later stages of this and later calls).
ENV_FILE=$STATE/env.sh
load_env() {
    # shellcheck disable=SC1090
    [[ -f $ENV_FILE ]] && source "$ENV_FILE"
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
}

mmcv_source() { echo "$SRC/$(basename "$(ls "$BUNDLE"/src/mmcv-*.tar.gz)" .tar.gz)"; }

build_mmcv() {  # build_mmcv cuda|cpu: mmcv's ops in place in its source tree
    local kind=$1 dir
    dir=$(mmcv_source)
    if [[ $kind == cuda ]]; then
        (cd "$dir" && PYTHONPATH=$BUILDENV:$SITE MMCV_WITH_OPS=1 FORCE_CUDA=1 \
            TORCH_CUDA_ARCH_LIST=$CUDA_ARCH MAX_JOBS=$JOBS \
            timeout "$CUDA_BUILD_TIMEOUT" "$PY" setup.py build_ext --inplace)
    else
        # No visible GPU and FORCE_CUDA=0: mmcv's setup.py then compiles its CPU ops only.
        (cd "$dir" && rm -rf build mmcv/_ext*.so && PYTHONPATH=$BUILDENV:$SITE MMCV_WITH_OPS=1 \
            FORCE_CUDA=0 CUDA_VISIBLE_DEVICES='' MAX_JOBS=$JOBS \
            timeout "$CPU_BUILD_TIMEOUT" "$PY" setup.py build_ext --inplace)
    fi
}

stage_setup() {
    if [[ $DRY_RUN == 0 && -f $STATE/setup.done ]]; then
        say "setup: done earlier on this machine ($(cat "$STATE/setup.done")); reused"
        return
    fi
    local size_check=()
    [[ $DRY_RUN == 1 ]] || size_check=(--no-size-check)  # the size matters where it is sent from
    step setup_bundle_check "$PY" tools/gpu/prepare.py --out "$BUNDLE" --check "${size_check[@]}" \
        || return
    local dir
    dir=$(mmcv_source)
    if [[ $DRY_RUN == 1 ]]; then
        local tmp
        tmp=$(mktemp -d)
        step setup_mmcv_source bash -c "tar xzf '$BUNDLE'/src/mmcv-*.tar.gz -C '$tmp' && \
            ls '$tmp/$(basename "$dir")'/setup.py \
               '$tmp/$(basename "$dir")'/mmcv/ops/csrc/pytorch/cuda/roi_align_cuda.cu \
               '$tmp/$(basename "$dir")'/mmcv/ops/csrc/pytorch/cuda/nms_cuda.cu"
        rm -rf "$tmp"
        say "setup (dry run): would install $BUNDLE/wheels/*.whl into $SITE, $BUNDLE/build/*.whl" \
            "into $BUILDENV, and build mmcv in $dir with FORCE_CUDA=1" \
            "TORCH_CUDA_ARCH_LIST=$CUDA_ARCH MAX_JOBS=$JOBS (at most $CUDA_BUILD_TIMEOUT s)"
        return
    fi
    local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
    rm -rf "$SITE" "$BUILDENV" "$SRC"
    mkdir -p "$SRC"
    step setup_install "${pip[@]}" --target "$SITE" "$BUNDLE"/wheels/*.whl || return
    step setup_install_build "${pip[@]}" --target "$BUILDENV" "$BUNDLE"/build/*.whl || return
    tar xzf "$BUNDLE"/src/mmcv-*.tar.gz -C "$SRC"
    local ops=cuda
    if ! run setup_mmcv_cuda_build build_mmcv cuda; then
        pkill -f ninja; pkill -f nvcc  # what a timed-out build left running
        say "setup: mmcv's CUDA build FAILED or ran over $CUDA_BUILD_TIMEOUT s (the end of" \
            "$OUT/setup_mmcv_cuda_build.log says why)."
        ops=cpu
    # A build that compiles can still crash or disagree: its ops are tried in a process of their own.
    elif ! run setup_mmcv_cuda_verify env PYTHONPATH="$dir:$SITE" "$PY" \
            tools/misc/check_mmcv_ops.py --device cuda; then
        say "setup: mmcv's CUDA build compiled but its ops FAILED on the GPU (exit status above)."
        ops=cpu
    fi
    if [[ $ops == cpu ]]; then
        say "setup: building mmcv's CPU ops instead: RoIAlign, NMS and the focal loss then run" \
            "through torchvision's CUDA kernels (mmclim's fallback)."
        step setup_mmcv_cpu_build build_mmcv cpu || return
    fi
    # mmengine resolves `mmdet::` configs through pkg_resources, which setuptools>=81 dropped.
    local runtime_path=$dir:$SITE
    if ! "$PY" -c 'import pkg_resources' 2>/dev/null; then
        say "setup: the image's setuptools has no pkg_resources; the bundled setuptools is used"
        runtime_path=$runtime_path:$BUILDENV
    fi
    cat >"$ENV_FILE" <<EOF
export PYTHONPATH=$runtime_path\${PYTHONPATH:+:\$PYTHONPATH}
export MMCLIM_GPU_MMCV_OPS=$ops
EOF
    load_env
    step setup_import "$PY" -c "
import mmcv, mmdet, mmengine, open_clip, torch
import mmclim
from mmclim.models.utils import mmcv_has_kernels
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
print('mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmengine', mmengine.__version__,
      '| open_clip', open_clip.__version__, '| mmclim', mmclim.__version__)
print('RoIAlign/NMS on CUDA:', 'mmcv kernels' if mmcv_has_kernels('cuda') else 'torchvision fallback')
" || return
    echo "mmcv ops: $ops, $(date -u +%FT%TZ)" >"$STATE/setup.done"
}

stage_test() {
    load_env
    local tests=(tests/test_models/test_utils/test_ops_fallback.py)
    if [[ $DRY_RUN == 1 ]]; then
        local gpu_files
        mapfile -t gpu_files < <(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests | sort)
        step test_collect "$PY" -m pytest -q -p no:cacheprovider --collect-only -m gpu \
            "${gpu_files[@]}"
        return
    fi
    step test_gpu "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests --junitxml "$OUT/junit_gpu.xml"
    step test_fallback "$PY" -m pytest -q -rs -p no:cacheprovider "${tests[@]}"
}

stage_bench() {
    load_env
    if [[ $DRY_RUN == 1 ]]; then
        step bench_fvlm_step_cpu "$PY" tools/gpu/fvlm_step.py --device cpu \
            --config configs/fvlm/fvlm_toy-vit_toy-shapes.py --image-size 64 --batch 2 --iters 1
        step bench_compile "$PY" -m py_compile benchmarks/clim_step.py benchmarks/mosaic.py \
            tools/gpu/fvlm_step.py
        return
    fi
    step bench_clim_step "$PY" benchmarks/clim_step.py --gpu --steps 10
    step bench_batch_mosaic "$PY" benchmarks/mosaic.py --gpu --seconds 3 --repeats 3
    step bench_fvlm_step "$PY" tools/gpu/fvlm_step.py --amp --iters 3
}

say "stages: ${STAGES[*]}$([[ $DRY_RUN == 1 ]] && echo ' (dry run)'); output in $OUT; $JOBS cores"
for stage in "${STAGES[@]}"; do
    start=$SECONDS
    "stage_$stage"
    say "stage $stage: $((SECONDS - start)) s"
done
say "timings (seconds, exit status):"
column -t "$TIMINGS" 2>/dev/null || cat "$TIMINGS"
[[ -f $ENV_FILE ]] && grep -h MMCLIM_GPU_MMCV_OPS "$ENV_FILE" | sed 's/^export /[check] /'
exit $FAILED
