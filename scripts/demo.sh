#!/usr/bin/env bash
# The main job on the built-in sample, on CPU: make a synthetic clip with occlusion, run the backend
# through the Blender extension headless, and leave a .blend, a .glb and a preview video in demo_output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=demo_output
mkdir -p "$out"
.venv/bin/python scripts/make_synthetic_clip.py "$out/sample_clip" --width 96 --height 96 --frames 16 --objects 3
.venv/bin/python scripts/genmojo_headless.py \
    --data_dir "$out/sample_clip/JPEGImages" --mask_dir "$out/sample_clip/Annotations" \
    --out_dir "$out" --save_name sample --preset cpu-tiny --device cpu --overwrite \
    --blend "$out/sample.blend" --glb "$out/sample.glb" --overwrite_exports
echo
echo "demo: result bundle   $out/sample/ (manifest.json, per-object PLY and npz)"
echo "demo: preview video   $out/sample/preview/input_view.mp4"
echo "demo: Blender scene   $out/sample.blend"
echo "demo: glTF export     $out/sample.glb"
