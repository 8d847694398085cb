#!/usr/bin/env bash
# On the GPU machine: the backend on the medium ground-truth clip (Blender-rendered, 256x256, 24 frames,
# 3 objects; scripts/make_gt_clip.py --preset medium) with its true cameras, then the ground-truth
# evaluation (python -m backend.evaluate_gt): held-out frames, novel views, 3D/2D tracks, depth order.
#
# Expects wheels installed by scripts/gpu_check.sh (PYTHONPATH set) and the clip in $CLIP (default
# .carry/gt_medium). The GPU machine has no bpy (Blender's module is ~0.8 GB, too big to carry), so
# generate the clip where bpy is installed and carry it:
#     python scripts/make_gt_clip.py .carry/gt_medium --preset medium
# Where bpy imports, a missing clip is generated here first.
#
# Usage: NAME=run1 bash scripts/gpu_gt_eval.sh [extra backend flags]
#   e.g. NAME=gt_method   bash scripts/gpu_gt_eval.sh
#        NAME=gt_skeleton bash scripts/gpu_gt_eval.sh --method skeleton
# Always: --lite --disable_guidance --holdout 4 --cam_path <the clip's npz>. Results under $OUT (default
# /tmp/out), prefixed with $NAME: events, log, manifest, previews, and <name>_gt_eval/ (gt_eval.json,
# report.md, images/).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
name=${NAME:-gt_medium}
clip=${CLIP:-.carry/gt_medium}
mkdir -p "$out"
if [ ! -f "$clip/ground_truth/scene.json" ]; then
    if python3 -c "import bpy" 2>/dev/null; then
        echo "generating the medium ground-truth clip into $clip"
        python3 scripts/make_gt_clip.py "$clip" --preset medium
    else
        echo "error: $clip/ground_truth/scene.json not found, and bpy is not installed on this machine" >&2
        echo "hint: run 'python scripts/make_gt_clip.py $clip --preset medium' where bpy is installed and carry $clip" >&2
        exit 2
    fi
fi
. scripts/gpu_fit.sh
gpu_fit "$name" "$out" --data_dir "$clip/JPEGImages" --mask_dir "$clip/Annotations" \
    --cam_path "$clip/MegaSAM_Outputs/ground_truth.npz" --lite --disable_guidance --holdout 4 "$@"
python3 -m backend.evaluate_gt --bundle "$GPU_RESULTS/$name" --gt "$clip" --out "$out/${name}_gt_eval" --device cuda
