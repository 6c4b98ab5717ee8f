#!/usr/bin/env bash
# Sets up a virtual environment with torch, mmcv (ops built once and cached), mmengine, mmdet,
# open_clip and mmclim itself.
#
# Usage: tools/setup_env.sh            (environment in ./.venv)
# Environment overrides:
#   MMCLIM_VENV           where the virtual environment lives     (default: <repo>/.venv)
#   MMCLIM_CACHE          where built mmcv wheels are kept         (default: ~/.cache/mmclim)
#   MMCLIM_PYTHON         interpreter that creates the venv        (default: python3)
#   TORCH_VERSION         torch to install                         (default: 2.11.0)
#   TORCHVISION_VERSION   torchvision to install                   (default: 0.26.0)
#   MMCV_VERSION          mmcv to build                            (default: 2.1.0)
#   MMCV_FORCE_CUDA       1 builds CUDA ops, 0 CPU ops only        (default: 1 when nvcc and a GPU are seen)
#
# A second run with nothing to do finishes in seconds; a failing step stops the script with its name.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMCLIM_VENV:-$ROOT/.venv}
CACHE=${MMCLIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmclim}
PYTHON=${MMCLIM_PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.26.0}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}

STEP="start"
START_TIME=$SECONDS
step() {
    STEP=$1
    echo "[setup] ($((SECONDS - START_TIME))s) $STEP"
}
on_error() {
    echo "[setup] FAILED in step '$STEP' (exit code $1); see the output above." >&2
    echo "[setup] Fix the cause and re-run $0: finished steps are skipped." >&2
}
trap 'on_error $?' ERR

# Everything the environment depends on; a change to any of these re-runs the set-up.
stamp_inputs() {
    cat "$ROOT/tools/setup_env.sh" "$ROOT"/requirements/*.txt "$ROOT/setup.cfg" "$ROOT/setup.py"
    echo "$TORCH_VERSION $TORCHVISION_VERSION $MMCV_VERSION ${MMCV_FORCE_CUDA:-auto}"
}
STAMP_FILE=$VENV/.mmclim-setup-stamp
STAMP=$(stamp_inputs | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP_FILE && $(cat "$STAMP_FILE") == "$STAMP" ]] \
    && "$VENV/bin/python" -c "import mmclim" 2>/dev/null; then
    echo "[setup] environment in $VENV is up to date"
    exit 0
fi

step "create virtual environment $VENV"
if [[ ! -x $VENV/bin/python ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
PIP=("$PY" -m pip install --quiet)
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), f"Python >= 3.10 needed, got {sys.version}"'

step "build tools (requirements/build.txt)"
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -r "$ROOT/requirements/build.txt"

installed_version() {  # prints the installed version of a distribution, or nothing
    "$PY" -c "import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    pass" "$1"
}

step "torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
if [[ $(installed_version torch) != "$TORCH_VERSION"* \
    || $(installed_version torchvision) != "$TORCHVISION_VERSION"* ]]; then
    "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
"$PY" -c "import torch, torchvision; print('[setup] torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"

# mmcv's ops are compiled against one torch build: the wheel cache is keyed by torch, python and CUDA.
if [[ -z ${MMCV_FORCE_CUDA:-} ]]; then
    if command -v nvcc >/dev/null && "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        MMCV_FORCE_CUDA=1
    else
        MMCV_FORCE_CUDA=0
    fi
fi
# torch's version names its CUDA build too (2.11.0+cu130; a CPU-only build is +cpu).
TORCH_TAG=$("$PY" -c "import sys, torch
print(f'torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}')")

mmcv_ok() {
    "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null
}

install_mmcv() {  # install_mmcv 1|0 [pip flags]: mmcv with CUDA and CPU ops, or CPU ops only
    local force_cuda=$1 ops_tag wheel_dir
    shift
    ops_tag=$([[ $force_cuda == 1 ]] && echo cudaops || echo cpuops)
    wheel_dir=$CACHE/mmcv-$MMCV_VERSION-$TORCH_TAG-$ops_tag
    step "mmcv==$MMCV_VERSION with ops ($ops_tag), wheel cache $wheel_dir"
    if ! compgen -G "$wheel_dir/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
        echo "[setup] no cached wheel: building mmcv $MMCV_VERSION from source (about 8 minutes on 2 CPU cores)"
        local build_dir
        build_dir=$(mktemp -d)
        # Without CUDA ops, no GPU may be visible either: mmcv's setup.py builds them when it sees one.
        local visible=()
        [[ $force_cuda == 1 ]] || visible=(CUDA_VISIBLE_DEVICES=)
        env "${visible[@]}" MMCV_WITH_OPS=1 FORCE_CUDA=$force_cuda MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            "$PY" -m pip wheel --no-deps --no-build-isolation --no-binary mmcv \
            "mmcv==$MMCV_VERSION" -w "$build_dir"
        mkdir -p "$wheel_dir"
        # Move into place only when complete, so an interrupted build never leaves a broken cache entry.
        mv "$build_dir"/mmcv-*.whl "$wheel_dir"/
        rm -rf "$build_dir"
    else
        echo "[setup] reusing cached wheel $(ls "$wheel_dir"/mmcv-*.whl)"
    fi
    "${PIP[@]}" "$@" "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl
}

# mmcv's ops are compiled against one torch build: the wheel cache is keyed by torch, python and CUDA.
if ! mmcv_ok; then
    install_mmcv "$MMCV_FORCE_CUDA"
fi
mmcv_ok

step "mmengine, mmdet, open_clip and test requirements"
"${PIP[@]}" -r "$ROOT/requirements/mminstall.txt" -r "$ROOT/requirements/runtime.txt" \
    -r "$ROOT/requirements/tests.txt" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    "mmcv==$MMCV_VERSION"

# A CUDA build that compiles can still fail on the GPU (mmcv 2.1.0 under CUDA 13 and torch 2.11 did:
# docs/gpu.md); its ops are tried in a process of their own, and CPU ops replace it if they fail.
if [[ $MMCV_FORCE_CUDA == 1 ]]; then
    step "try mmcv's CUDA ops on the GPU"
    if ! "$PY" "$ROOT/tools/misc/check_mmcv_ops.py" --device cuda; then
        echo "[setup] mmcv's CUDA ops failed on this GPU (above): installing its CPU ops; mmclim runs" \
            "RoIAlign, NMS and the focal loss on the GPU through torchvision (docs/gpu.md)"
        install_mmcv 0 --force-reinstall --no-deps
    fi
fi

step "mmclim (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

step "check imports"
"$PY" - <<'PYEOF'
import mmcv
import mmdet
import mmengine
import open_clip
import torch

import mmclim

print(f'[setup] mmclim {mmclim.__version__}: torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, open_clip {open_clip.__version__}')
PYEOF

echo "$STAMP" >"$STAMP_FILE"
echo "[setup] done in $((SECONDS - START_TIME))s: environment $VENV"
