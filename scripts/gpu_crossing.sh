#!/usr/bin/env bash
# On the GPU machine: the backend on the crossing clip with CUDA/gsplat, then its evaluation.
# Expects the clip in .carry/crossing and wheels installed by scripts/gpu_check.sh (PYTHONPATH set).
# Usage: NAME=run1 bash scripts/gpu_crossing.sh [extra backend flags]
#   e.g. NAME=method bash scripts/gpu_crossing.sh --holdout 4
#        NAME=skeleton bash scripts/gpu_crossing.sh --holdout 4 --method skeleton
# Results under $OUT (default /tmp/out), prefixed with $NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
name=${NAME:-crossing}
mkdir -p "$out"
clip=.carry/crossing
. scripts/gpu_fit.sh
gpu_fit "$name" "$out" --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" --lite --disable_guidance "$@"
python3 -m backend.evaluate --bundle "$GPU_RESULTS/$name" --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" \
    --device cuda --out "$out/${name}_eval.json"
