#!/usr/bin/env bash
# Creates (or refreshes) the project's CPU environment in .venv: backend, Blender module, tests.
# Idempotent: re-running after the environment is complete only checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: Python 3.11 is required (bpy 5.0.1 is built for it); found $("$PY" --version)" >&2
    exit 2
fi
stamp=.venv/.genmojo-requirements
want=$(cat requirements/cpu.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/cpu.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/python -c 'import torch, bpy, cv2, plyfile, diffusers, transformers, backend, genmojo_blender; print("setup: environment ready (torch", torch.__version__, "| bpy", bpy.app.version_string + ")")'
echo "$want" > "$stamp"
