#!/usr/bin/env bash
# Runs the test suite on CPU (tests marked gpu skip themselves without CUDA; see scripts/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
