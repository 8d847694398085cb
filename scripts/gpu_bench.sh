#!/usr/bin/env bash
# On the GPU machine: issue #9's benchmarks, each part's output in its own folder, packed into
# $OUT/bench.tgz after every part (a run stopped part-way still returns what finished).
#
# Parts (PARTS, space-separated, in the order given):
#   step                 the guidance step (bench_guidance.py), 32 images per object, NCHW, eager
#   step_nhwc            the same in the NHWC layout (--channels_last)
#   step_compile         NCHW with the UNet and VAE path compiled, --compile default
#   step_nhwc_compile    NHWC and compiled
#   step_autotune        NCHW, --compile max-autotune-no-cudagraphs (autotuning makes its compile long)
#   pipeline             the whole pipeline on the crossing clip with guidance (random full-size Zero123),
#                        eager (--compile none: the lite preset itself compiles)
#   pipeline_compile     the same with --compile default
#   pipeline_noguidance  the same without guidance
# Default: PARTS="step step_compile step_autotune" (no gsplat build needed; about 6-9 minutes on an
# H100). The pipeline parts build gsplat first (about 100 s unless .carry/torch_extensions holds the
# build) and take 3-6 minutes each, so run them in their own call, e.g.
#   PARTS="pipeline_compile" bash scripts/gpu_bench.sh --iters 24 --stage1_iters 30 --warmup_steps 4 --profile_steps 8
# STEP_FLAGS adds bench_guidance.py flags to every step part (e.g. "--vae_attention matmul").
# The step parts add a kernel table of STEP_PROFILE_STEPS (default 3) profiled steps.
# Each part is stopped after STEP_LIMIT_S (default 270) or PIPELINE_LIMIT_S (default 540) seconds;
# its log then ends with the note. Parts of one call share Inductor's on-disk cache: a
# pipeline_compile after step_compile finds stage 2's graphs already compiled.
# Expects the wheels in .carry/wheels and .carry/wheels_guidance and the clip in .carry/crossing.
# Usage: [PARTS="..."] bash scripts/gpu_bench.sh [extra bench_pipeline flags]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
work=/tmp/bench
parts=${PARTS:-step step_compile step_autotune}
step_limit=${STEP_LIMIT_S:-270}
pipeline_limit=${PIPELINE_LIMIT_S:-540}
profile=${STEP_PROFILE_STEPS:-3}  # guidance steps profiled for each step part's kernel table
read -r -a step_flags <<< "${STEP_FLAGS:-}"  # more bench_guidance.py flags for the step parts
for part in $parts; do
    case $part in
        step|step_nhwc|step_compile|step_nhwc_compile|step_autotune|pipeline|pipeline_compile|pipeline_noguidance) ;;
        *) echo "unknown part '$part' in PARTS" >&2; exit 2 ;;
    esac
done
mkdir -p "$work" "$out"
. scripts/gpu_env.sh
gpu_env
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
case " $parts " in
    *" pipeline"*)
        start=$(date +%s)
        python3 -c "from gsplat.cuda._backend import _C" && echo "gsplat ready after $(( $(date +%s) - start )) s" ;;
esac
clip=.carry/crossing

# run_part NAME LIMIT COMMAND...: the command's output into $work/NAME/log.txt, its results into $work/NAME
run_part() {
    local name=$1 limit=$2
    shift 2
    mkdir -p "$work/$name"
    local start rc
    start=$(date +%s)
    echo "== $name: $*" > "$work/$name/log.txt"
    timeout "$limit" "$@" >> "$work/$name/log.txt" 2>&1
    rc=$?
    [ "$rc" = 124 ] && echo "stopped after the part's limit of $limit s" >> "$work/$name/log.txt"
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s" >> "$work/$name/log.txt"
    tail -32 "$work/$name/log.txt"
    tar czf "$out/bench.tgz" -C "$work" .
}

for part in $parts; do
    d="$work/$part"
    case $part in
        step) run_part "$part" "$step_limit" python3 scripts/bench_guidance.py --device cuda \
            --profile_steps "$profile" "${step_flags[@]}" --out "$d" ;;
        step_nhwc) run_part "$part" "$step_limit" python3 scripts/bench_guidance.py --device cuda --channels_last \
            --profile_steps "$profile" "${step_flags[@]}" --out "$d" ;;
        step_compile) run_part "$part" "$step_limit" python3 scripts/bench_guidance.py --device cuda \
            --compile default --profile_steps "$profile" "${step_flags[@]}" --out "$d" ;;
        step_nhwc_compile) run_part "$part" "$step_limit" python3 scripts/bench_guidance.py --device cuda \
            --channels_last --compile default --profile_steps "$profile" "${step_flags[@]}" --out "$d" ;;
        step_autotune) run_part "$part" "$step_limit" python3 scripts/bench_guidance.py --device cuda \
            --compile max-autotune-no-cudagraphs "${step_flags[@]}" --out "$d" ;;
        pipeline) run_part "$part" "$pipeline_limit" python3 scripts/bench_pipeline.py --data_dir "$clip/JPEGImages" \
            --mask_dir "$clip/Annotations" --compile none --out "$d" "$@" ;;
        pipeline_compile) run_part "$part" "$pipeline_limit" python3 scripts/bench_pipeline.py \
            --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" --compile default --out "$d" "$@" ;;
        pipeline_noguidance) run_part "$part" "$pipeline_limit" python3 scripts/bench_pipeline.py \
            --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" --disable_guidance --out "$d" "$@" ;;
    esac
done
