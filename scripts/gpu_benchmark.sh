#!/usr/bin/env bash
# On the GPU machine: the quality benchmark of #20 over many clips, side by side, then one table.
#
# Every clip folder under $BENCH_DATA (default .carry/bench; or only those named in $CLIPS) is run:
#   a real clip      <clip>/JPEGImages + <clip>/Annotations (the dev set of ../shared/data/dev, crossing):
#                    fitted, then python -m backend.evaluate on all frames (held-out and training splits)
#   a ground-truth   <clip>/ground_truth/scene.json (scripts/make_gt_clip.py, made where bpy is installed):
#   clip             fitted through its true cameras (--cam_path), then backend.evaluate and backend.evaluate_gt
#                    (novel views, 3D tracks)
# Each fit: --lite --disable_guidance --holdout 4 and the extra flags given here. Fits run side by side,
# spread round robin over the GPUs CUDA sees, at most $JOBS_PER_GPU (default 8) at a time on each. A fit
# still going after $LIMIT seconds (default none) is stopped with SIGTERM, which saves its checkpoint:
# call again with RESUME=1 to continue those. Results go to $OUT (default /tmp/out): per clip NAME its
# events, log, evaluation and NAME_status.txt ("ok" or why not); then $OUT/benchmark.md and .json
# (scripts/benchmark_table.py) over every clip whose results are in $OUT. The bundles stay in
# /tmp/genmojo_results/<basename of OUT>/NAME.
# Expects the wheels installed by scripts/gpu_check.sh's lines (PYTHONPATH set).
#
# Usage: [CLIPS="camel parkour"] [LIMIT=540] [RESUME=1] bash scripts/gpu_benchmark.sh [extra backend flags]
set -uo pipefail
cd "$(dirname "$0")/.."
data=${BENCH_DATA:-.carry/bench}
out=${OUT:-/tmp/out}
per_gpu=${JOBS_PER_GPU:-8}
mkdir -p "$out"
if [ ! -d "$data" ]; then
    echo "error: $data: no such folder; copy the clips there (one folder per clip) or set BENCH_DATA" >&2
    exit 2
fi
clips=()
if [ -n "${CLIPS:-}" ]; then
    read -r -a clips <<< "$CLIPS"
else
    for d in "$data"/*/; do clips+=("$(basename "$d")"); done
fi
for c in "${clips[@]}"; do
    if [ ! -d "$data/$c/JPEGImages" ] || [ ! -d "$data/$c/Annotations" ]; then
        echo "error: $data/$c: not a clip (needs JPEGImages/ and Annotations/)" >&2
        exit 2
    fi
done
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -lt 1 ]; then
    echo "error: no CUDA device; the benchmark runs on the GPU machine" >&2
    exit 2
fi
. scripts/gpu_fit.sh
GPU_RESULTS=$GPU_RESULTS/$(basename "$out")  # two benchmarks side by side (other OUT, other flags) keep apart

run_clip() {  # run_clip NAME GPU [extra flags]: one clip's fit and evaluations, its status in NAME_status.txt
    local name=$1 gpu=$2
    shift 2
    local clip=$data/$name
    local flags=(--data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" --lite --disable_guidance --holdout 4)
    local gt=0
    if [ -f "$clip/ground_truth/scene.json" ]; then
        gt=1
        flags+=(--cam_path "$clip/MegaSAM_Outputs/ground_truth.npz")
    fi
    [ "${RESUME:-0}" = 1 ] && flags+=(--resume)
    export CUDA_VISIBLE_DEVICES=$gpu
    local start=$SECONDS
    if ! FIT_LIMIT=${LIMIT:-} gpu_fit "$name" "$out" "${flags[@]}" "$@" > "$out/${name}_fit.txt" 2>&1; then
        if [ -n "${LIMIT:-}" ] && [ $((SECONDS - start)) -ge "${LIMIT}" ]; then
            echo "timeout after ${LIMIT} s (RESUME=1 continues)" > "$out/${name}_status.txt"
        else
            echo "fit failed (${name}_log.txt)" > "$out/${name}_status.txt"
        fi
        return
    fi
    if ! python3 -m backend.evaluate --bundle "$GPU_RESULTS/$name" --data_dir "$clip/JPEGImages" \
            --mask_dir "$clip/Annotations" --device cuda --out "$out/${name}_eval.json" > /dev/null 2>> "$out/${name}_log.txt"; then
        echo "evaluation failed (${name}_log.txt)" > "$out/${name}_status.txt"
        return
    fi
    if [ $gt = 1 ] && ! python3 -m backend.evaluate_gt --bundle "$GPU_RESULTS/$name" --gt "$clip" \
            --out "$out/${name}_gt_eval" --device cuda > /dev/null 2>> "$out/${name}_log.txt"; then
        echo "ground-truth evaluation failed (${name}_log.txt)" > "$out/${name}_status.txt"
        return
    fi
    echo ok > "$out/${name}_status.txt"
}

nvidia-smi -L
echo "benchmark: ${#clips[@]} clips on $gpus GPU(s), at most $per_gpu at a time on each: ${clips[*]}"
i=0
for c in "${clips[@]}"; do
    rm -f "$out/${c}_status.txt" "$out/${c}_eval.json"  # a table must not show an earlier call's result
    rm -rf "$out/${c}_gt_eval"
    while [ "$(jobs -rp | wc -l)" -ge $((gpus * per_gpu)) ]; do wait -n; done
    run_clip "$c" $((i % gpus)) "$@" &
    i=$((i + 1))
done
wait
for c in "${clips[@]}"; do echo "== $c: $(cat "$out/${c}_status.txt")"; tail -3 "$out/${c}_fit.txt"; done
python3 scripts/benchmark_table.py "$out"
