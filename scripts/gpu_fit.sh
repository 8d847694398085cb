# Sourced by the GPU run scripts (gpu_crossing.sh, gpu_gt_eval.sh): one backend fit on CUDA, timed and
# summarised, its manifest and previews copied next to its logs.
#
# gpu_fit NAME OUT [backend flags...]
#   Runs `python3 -m backend --out_dir /tmp/genmojo_results --save_name NAME --device cuda [flags]`
#   (the caller passes the clip, preset and other flags). Events go to OUT/NAME_events.jsonl and the
#   log to OUT/NAME_log.txt. A run without --resume starts clean; with --resume it continues from the
#   checkpoint of the same NAME. Prints the wall time, the log's tail and each stage's duration.
#   With FIT_LIMIT set, a fit still going after that many seconds is stopped with SIGTERM (which saves
#   its checkpoint for --resume) and gpu_fit fails; what follows the fit is not limited.
#   The bundle is left in $GPU_RESULTS/NAME for the caller's evaluation.
GPU_RESULTS=/tmp/genmojo_results

gpu_fit() {
    local name=$1 out=$2
    shift 2
    case " $* " in
        *" --resume "*) ;;  # continue an interrupted run of the same name (its checkpoint is kept)
        *) rm -rf "$GPU_RESULTS/$name" "$GPU_RESULTS/.$name.checkpoint" ;;
    esac
    local start end
    start=$(date +%s.%N)
    local limit=()
    [ -n "${FIT_LIMIT:-}" ] && limit=(timeout "$FIT_LIMIT")
    "${limit[@]}" python3 -m backend --out_dir "$GPU_RESULTS" --save_name "$name" --device cuda "$@" \
        >> "$out/${name}_events.jsonl" 2>> "$out/${name}_log.txt" || { tail -30 "$out/${name}_log.txt"; return 1; }
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
    cp "$GPU_RESULTS/$name/manifest.json" "$out/${name}_manifest.json"
    local f
    for f in "$GPU_RESULTS/$name"/preview/*.mp4; do cp "$f" "$out/${name}_$(basename "$f")"; done
}
