# Sourced by the GPU run scripts (gpu_check.sh, gpu_bench.sh, gpu_session.sh), from the repository root:
# the machine has python3 with CUDA torch but none of our other packages, which are carried as wheels.
#
# gpu_env [SOURCE]
#   Installs .carry/wheels/*.whl (gsplat, plyfile) and, when the folder is there, .carry/wheels_guidance/*.whl
#   (diffusers, transformers, ...) into /tmp/site; sets PYTHONPATH=/tmp/site:SOURCE (default: this folder);
#   points gsplat's JIT build at a carried build cache, .carry/torch_extensions, when there is one.
#   Fails when pip does.

gpu_env() {
    local wheels=(.carry/wheels/*.whl)
    if [ -d .carry/wheels_guidance ]; then
        wheels+=(.carry/wheels_guidance/*.whl)
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}" || return 1
    export PYTHONPATH=/tmp/site:${1:-$PWD}
    if [ -d .carry/torch_extensions ]; then
        export TORCH_EXTENSIONS_DIR="$PWD/.carry/torch_extensions"
    fi
}
