#!/usr/bin/env bash
# On the GPU machine: several crossing runs side by side on one GPU (scripts/gpu_crossing.sh each),
# then their logs and evaluations packed into one archive, $OUT/sweep.tgz (videos left out).
# A run still going after $LIMIT seconds is stopped with SIGTERM, which saves its checkpoint; call
# again with RESUME=1 and the same specs to finish it.
# Usage: LIMIT=540 bash scripts/gpu_sweep.sh "name1 --holdout 4 --seed 1" "name2 --holdout 4 --set a.b=c"
set -uo pipefail
cd "$(dirname "$0")/.."
limit=${LIMIT:-540}
work=/tmp/sweep
mkdir -p "$work"
for spec in "$@"; do
    name=${spec%% *}
    flags=${spec#"$name"}
    [ "${RESUME:-0}" = 1 ] && flags="$flags --resume"
    # shellcheck disable=SC2086
    NAME=$name OUT=$work timeout "$limit" bash scripts/gpu_crossing.sh $flags > "$work/$name.txt" 2>&1 &
done
wait
for spec in "$@"; do name=${spec%% *}; echo "== $name"; tail -4 "$work/$name.txt"; done
tar czf "${OUT:-/tmp/out}/sweep.tgz" -C "$work" --exclude='*.mp4' .
