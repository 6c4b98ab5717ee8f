#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args]
# Runs GPUS processes with torchrun. On a machine without CUDA the processes use the gloo backend
# on CPU (see mmclim.engine.setup_cpu_distributed), so the command also runs on a laptop.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG GPUS [train.py args]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$ROOT/tools/train.py" \
    "$CONFIG" \
    --launcher pytorch "$@"
