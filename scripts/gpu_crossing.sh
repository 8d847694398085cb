#!/usr/bin/env bash
# On the GPU machine: the backend on the crossing clip with CUDA/gsplat, then its evaluation.
# Expects the clip in .carry/crossing and wheels installed by scripts/gpu_check.sh (PYTHONPATH set).
# Usage: bash scripts/gpu_crossing.sh [extra backend flags]   (results under $OUT, default /tmp/out)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
mkdir -p "$out"
clip=.carry/crossing
res=/tmp/genmojo_results
rm -rf "$res"
start=$(date +%s.%N)
python3 -m backend --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" --out_dir "$res" \
    --save_name crossing --lite --disable_guidance --device cuda "$@" \
    > "$out/crossing_events.jsonl" 2> "$out/crossing_log.txt" || { tail -30 "$out/crossing_log.txt"; exit 1; }
end=$(date +%s.%N)
echo "crossing wall time: $(python3 -c "print(round($end - $start, 1))") s"
tail -3 "$out/crossing_log.txt"
python3 - "$out/crossing_events.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["type"] == "stage" and e["status"] == "end":
        print(f"  stage {e['stage']:9s} {e['duration_s']:8.2f} s")
PY
python3 -m backend.evaluate --bundle "$res/crossing" --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" \
    --device cuda --out "$out/crossing_eval.json"
cp "$res/crossing/manifest.json" "$out/crossing_manifest.json"
cp "$res/crossing/preview/input_view.mp4" "$out/crossing_preview.mp4"
