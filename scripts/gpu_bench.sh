#!/usr/bin/env bash
# On the GPU machine: issue #9's benchmarks in one go, results packed into $OUT/bench.tgz.
#   1. the guidance step (bench_guidance.py) at the spec's 32 images per object, NCHW and NHWC layouts;
#   2. the whole pipeline on the crossing clip with guidance (random full-size Zero123) and without.
# Expects the wheels in .carry/wheels and .carry/wheels_guidance and the clip in .carry/crossing.
# Usage: bash scripts/gpu_bench.sh [extra bench_pipeline flags]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
work=/tmp/bench
mkdir -p "$work" "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/wheels/*.whl \
    .carry/wheels_guidance/*.whl
export PYTHONPATH=/tmp/site:$PWD
start=$(date +%s)
python3 -c "from gsplat.cuda._backend import _C" && echo "gsplat ready after $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
clip=.carry/crossing
python3 scripts/bench_guidance.py --device cuda --out "$work/guidance_nchw" 2>&1 | tail -14
python3 scripts/bench_guidance.py --device cuda --channels_last --out "$work/guidance_nhwc" 2>&1 | tail -14
python3 scripts/bench_pipeline.py --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" \
    --out "$work/pipeline_guidance" "$@" > "$work/pipeline_guidance.log" 2>&1
tail -40 "$work/pipeline_guidance.log"
python3 scripts/bench_pipeline.py --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" \
    --disable_guidance --out "$work/pipeline_noguidance" "$@" > "$work/pipeline_noguidance.log" 2>&1
tail -30 "$work/pipeline_noguidance.log"
tar czf "$out/bench.tgz" -C "$work" .
