#!/usr/bin/env bash
# On the GPU machine: groups of benchmark fits (scripts/gpu_benchmark.sh) that run longer than one device
# call. A device command may last 10 minutes and a lite fit of a dev clip takes 7-23 (docs/results.md), so
# the first call starts every group detached and the later calls, made while the machine is still warm,
# wait for them; each call ends by packing what is there.
#
#   bash scripts/gpu_session.sh start GROUPS [SECONDS]   set up, start every group, then wait
#   bash scripts/gpu_session.sh wait  GROUPS [SECONDS]   wait for the groups started
# Either call returns SECONDS (default 540) after it began, set-up included, or sooner when every fit is done,
# and packs what is there: give the device call a timeout a little above SECONDS, or it is killed before
# packing (the set-up alone took 72-114 s, most of it gsplat's build).
#
# GROUPS is a text file with one group per line, "NAME CLIP[,CLIP...] [backend flags]" ('#' starts a
# comment), e.g.
#     base    crossing,gt_medium
#     mirror  crossing,gt_medium  --set stage1.back_prior=mirror
# A group is one gpu_benchmark.sh run over its clips with its flags; all groups run side by side on the GPU.
# Clips are folders under the directories of $BENCH_DIRS (default: every .carry/bench* folder), e.g. made by
# scripts/pack_bench.py; gsplat and plyfile wheels come from .carry/wheels. The source is copied to
# /tmp/src at start, so a later call's working tree does not change the fits in flight (scripts/gpu_env.sh
# installs the wheels, and reuses a carried gsplat build in .carry/torch_extensions).
# Results: /tmp/gpu_session/NAME/ ($GPU_SESSION_DIR/NAME) per group (gpu_benchmark.sh's files and benchmark.md); each call writes
# $OUT/res.tgz (videos left out) and prints every clip's status. The file is checked before any work: a
# malformed line, a repeated name or a clip that is in no bench folder ends the call with exit 2.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash scripts/gpu_session.sh start|wait GROUPS [SECONDS]"
verb=${1:-}
groups=${2:-}
seconds=${3:-540}
results=${GPU_SESSION_DIR:-/tmp/gpu_session}
src=/tmp/src
fail() { echo "error: $*" >&2; exit 2; }

[ "$verb" = start ] || [ "$verb" = wait ] || fail "$usage"
[ -n "$groups" ] || fail "$usage"
[ -f "$groups" ] || fail "$groups: no such groups file (one line per group: NAME CLIP[,CLIP...] [backend flags])"
[[ "$seconds" =~ ^[0-9]+$ ]] || fail "SECONDS must be a whole number of seconds, got '$seconds'"
read -r -a bench_dirs <<< "${BENCH_DIRS:-$(ls -d .carry/bench* 2>/dev/null | tr '\n' ' ')}"

names=()
declare -A clips_of flags_of
n=0
while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%%#*}
    read -r name clips flags <<< "$line"
    [ -n "${name:-}" ] || continue
    [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || fail "$groups line $n: group name '$name' may hold only letters, digits, '_' and '-'"
    [ -n "${clips:-}" ] || fail "$groups line $n: group '$name' names no clips (NAME CLIP[,CLIP...] [backend flags])"
    [ -z "${clips_of[$name]+x}" ] || fail "$groups line $n: group '$name' is named twice"
    if [ "$verb" = start ]; then
        for c in ${clips//,/ }; do
            found=0
            for d in "${bench_dirs[@]}"; do [ -d "$d/$c/JPEGImages" ] && found=1; done
            [ $found = 1 ] || fail "$groups line $n: clip '$c' is in none of the bench folders (${bench_dirs[*]:-none}); copy it there (scripts/pack_bench.py) or set BENCH_DIRS"
        done
    fi
    names+=("$name")
    clips_of[$name]=${clips//,/ }
    flags_of[$name]=${flags:-}
done < "$groups"
[ ${#names[@]} -gt 0 ] || fail "$groups holds no group"

if [ "$verb" = start ]; then
    command -v nvidia-smi > /dev/null || fail "no GPU here (nvidia-smi not found): gpu_session.sh runs on the GPU machine"
    [ -d .carry/wheels ] || fail ".carry/wheels: no such folder; put the gsplat and plyfile wheels there"
    rm -rf "$src" "$results" /tmp/bench && mkdir -p "$src" "$results" /tmp/bench
    cp -r backend scripts genmojo_blender pyproject.toml "$src/"
    . scripts/gpu_env.sh
    gpu_env "$src" || fail "installing the carried wheels failed"
    for d in "${bench_dirs[@]}"; do cp -r "$d"/* /tmp/bench/; done
    nvidia-smi -L
    t=$SECONDS
    (cd "$src" && python3 -c "from gsplat.cuda._backend import _C; assert _C is not None") || fail "gsplat's CUDA extension did not build"
    echo "gsplat ready after $((SECONDS - t)) s"
    for name in "${names[@]}"; do
        mkdir -p "$results/$name"
        # shellcheck disable=SC2086
        (cd "$src" && setsid nohup env OUT="$results/$name" BENCH_DATA=/tmp/bench CLIPS="${clips_of[$name]}" \
            bash scripts/gpu_benchmark.sh ${flags_of[$name]} > "$results/$name/_benchmark.txt" 2>&1 < /dev/null &)
        echo "started $name: ${clips_of[$name]} ${flags_of[$name]}"
    done
fi
export PYTHONPATH=/tmp/site:$src

while :; do
    left=0
    for name in "${names[@]}"; do
        for c in ${clips_of[$name]}; do [ -f "$results/$name/${c}_status.txt" ] || left=$((left + 1)); done
    done
    [ $left = 0 ] || [ $SECONDS -ge "$seconds" ] && break
    sleep 10
done
echo "after $SECONDS s: $left clip(s) still running"
for name in "${names[@]}"; do
    for c in ${clips_of[$name]}; do
        f=$results/$name/${c}_status.txt
        if [ -f "$f" ]; then echo "$name $c: $(cat "$f")"; else echo "$name $c: running ($(tail -c 300 "$results/$name/${c}_events.jsonl" 2>/dev/null | grep -o '"step":[0-9]*,"total":[0-9]*' | tail -1))"; fi
    done
    ls "$results/$name"/*_status.txt > /dev/null 2>&1 && (cd "$src" && python3 scripts/benchmark_table.py "$results/$name" > /dev/null)
done
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/res.tgz" --exclude='*.mp4' -C "$(dirname "$results")" "$(basename "$results")" && echo "packed $OUT/res.tgz"
fi
