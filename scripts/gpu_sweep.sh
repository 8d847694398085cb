#!/usr/bin/env bash
# On the GPU machine: several crossing runs side by side on one GPU (scripts/gpu_crossing.sh each),
# then their logs and evaluations packed into one archive, $OUT/sweep.tgz (videos left out), and the
# held-out figures of the runs that finished side by side in $OUT/sweep.md (scripts/eval_table.py).
# A fit still going after $LIMIT seconds is stopped with SIGTERM, which saves its checkpoint; call
# again with RESUME=1 and the same specs to finish it. The evaluation of a fit that finished in time
# always runs: the limit is the fit's.
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
    rm -f "$work/${name}_eval.json"  # a table must not show an earlier call's evaluation of this name
    # shellcheck disable=SC2086
    NAME=$name OUT=$work FIT_LIMIT=$limit bash scripts/gpu_crossing.sh $flags > "$work/$name.txt" 2>&1 &
done
wait
for spec in "$@"; do name=${spec%% *}; echo "== $name"; tail -4 "$work/$name.txt"; done
evals=()
for spec in "$@"; do name=${spec%% *}; [ -f "$work/${name}_eval.json" ] && evals+=("$work/${name}_eval.json"); done
split=holdout
case " $* " in *" --holdout "*) ;; *) split=all ;; esac
[ ${#evals[@]} -gt 0 ] && python3 scripts/eval_table.py "${evals[@]}" --split "$split" --out "${OUT:-/tmp/out}/sweep"
tar czf "${OUT:-/tmp/out}/sweep.tgz" -C "$work" --exclude='*.mp4' .
