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
res=/tmp/genmojo_results
case " $* " in
    *" --resume "*) ;;  # continue an interrupted run of the same name (its checkpoint is kept)
    *) rm -rf "$res/$name" "$res/.$name.checkpoint" ;;
esac
start=$(date +%s.%N)
python3 -m backend --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" --out_dir "$res" \
    --save_name "$name" --lite --disable_guidance --device cuda "$@" \
    >> "$out/${name}_events.jsonl" 2>> "$out/${name}_log.txt" || { tail -30 "$out/${name}_log.txt"; exit 1; }
end=$(date +%s.%N)
echo "$name wall time: $(python3 -c "print(round($end - $start, 1))") s"
grep -v "^\[genmojo.*stage " "$out/${name}_log.txt" | tail -12
python3 - "$out/${name}_events.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["type"] == "stage" and e["status"] == "end":
        print(f"  stage {e['stage']:9s} {e['duration_s']:8.2f} s")
PY
python3 -m backend.evaluate --bundle "$res/$name" --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" \
    --device cuda --out "$out/${name}_eval.json"
cp "$res/$name/manifest.json" "$out/${name}_manifest.json"
for f in "$res/$name"/preview/*.mp4; do cp "$f" "$out/${name}_$(basename "$f")"; done
