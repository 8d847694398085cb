#!/usr/bin/env bash
# Run every test marked `gpu` on the GPU machine. Run from the repository root.
#
# The machine has python3 with CUDA torch but no gsplat/plyfile; their wheels are
# carried in .carry/wheels/ and installed into /tmp/site, with the guidance's (diffusers,
# transformers, ...) from .carry/wheels_guidance/ when that folder is there (the guidance
# tests skip without them). gsplat 1.5.3 compiles its CUDA extension on first use; a build
# cache carried in .carry/torch_extensions is reused when present. The test log goes to
# $OUT/gpu_tests.log (or /tmp).
set -euo pipefail

. scripts/gpu_env.sh
gpu_env

nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
python3 -c "import gsplat; print('gsplat', gsplat.__version__)"
# Load (or JIT-build) gsplat's CUDA extension up front, so a build failure is reported
# as such and its duration is not charged to the first test; the tests run regardless.
start=$(date +%s)
if python3 -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat CUDA extension unavailable'"; then
    echo "gsplat CUDA extension ready after $(( $(date +%s) - start )) s"
else
    echo "gsplat CUDA extension failed to load after $(( $(date +%s) - start )) s" >&2
fi

# Only the files that hold gpu tests: the others may import bpy, which the GPU machine lacks.
python3 -m pytest -m gpu -v -p no:cacheprovider $(grep -l "mark.gpu" tests/test_*.py) 2>&1 | tee "${OUT:-/tmp}/gpu_tests.log"
