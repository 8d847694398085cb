#!/usr/bin/env bash
# The extension's tests under bpy 5.2 (Python 3.13), beside the main suite's bpy 5.0.1 (Python 3.11).
# Needs a Python 3.13 (PYTHON313, default: python3.13 on PATH or pyenv's 3.13). There is no CPU torch
# for 3.13, so only the tests that never start the real backend run here.
# Usage: bash scripts/test_bpy52.sh   (venv in .venv313, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON313:-}
if [ -z "$py" ]; then
    for c in "$HOME"/.pyenv/versions/3.13*/bin/python3.13 "$(command -v python3.13 2>/dev/null || true)"; do
        if [ -n "$c" ] && "$c" -c "import sys; assert sys.version_info[:2] == (3, 13)" 2>/dev/null; then py=$c; break; fi
    done
fi
[ -n "$py" ] || { echo "no working Python 3.13 found; set PYTHON313" >&2; exit 2; }
[ -x .venv313/bin/python ] || "$py" -m venv .venv313
.venv313/bin/pip install -q "bpy>=5.2,<5.3" "numpy<3" opencv-python-headless plyfile pytest hypothesis
.venv313/bin/python -c "import bpy, sys; print('bpy', bpy.app.version_string, 'python', sys.version.split()[0])"
.venv313/bin/python -m pytest -q tests/test_blender_extension.py tests/test_blender_import.py \
    tests/test_blender_export.py tests/test_blender_representations.py tests/test_blender_masks.py \
    tests/test_core_surface.py tests/test_core_rigid.py tests/test_core_masks.py tests/test_core_import_plan.py \
    tests/test_core_camera.py tests/test_bundle.py tests/test_protocol.py \
    tests/test_blender_run.py tests/test_core_backend_process.py \
    --deselect tests/test_blender_run.py::test_check_backend_operator \
    --deselect tests/test_core_backend_process.py::test_probe_backend \
    --deselect tests/test_core_backend_process.py::test_extension_offers_exactly_the_backends_presets_and_devices \
    --deselect tests/test_core_backend_process.py::test_extension_checks_the_model_folders_as_the_backend_does "$@"
