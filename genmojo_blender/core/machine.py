"""Whether the backend's PyTorch has CUDA, found out without importing torch in Blender, and the
preset that follows from it.

The ``lite`` preset needs a GPU to finish in reasonable time; on a CPU-only machine it runs for
hours, so the scene's preset defaults to ``auto``: ``lite`` where the backend has CUDA, ``cpu-tiny``
where it has not. The answer comes from running the backend's own Python once on a tiny probe (it
imports torch there, in the child, and prints one JSON line) and is kept for the rest of the
Blender session per interpreter and source folder. An explicit preset is never changed. bpy-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend_process import DROP_WORKDIR, check_python, run_probe

AUTO_PRESET = "auto"
GPU_PRESET = "lite"  # with CUDA
CPU_PRESET = "cpu-tiny"  # without: the only preset that ends in minutes on a CPU
# Importing torch with CUDA initialisation takes seconds, longer on a cold disk or a network home.
PROBE_TIMEOUT_S = 120.0

# the working folder is dropped from sys.path first, as for every run (a torch.py there must not answer)
_PROBE_CODE = DROP_WORKDIR + """
import json
import torch
ok = bool(torch.cuda.is_available())
print(json.dumps({"torch": torch.__version__, "cuda": ok,
                  "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if ok else []}))
"""


@dataclass(frozen=True)
class CudaProbe:
    """What the probe found: ``cuda`` is None when it could not tell (``message`` says why)."""

    cuda: bool | None
    message: str
    torch_version: str = ""
    devices: tuple[str, ...] = ()


_cache: dict[tuple[str, str], CudaProbe] = {}


def probe_cuda(python: str, backend_path: str = "", *, timeout_s: float = PROBE_TIMEOUT_S,
               refresh: bool = False) -> CudaProbe:
    """Ask the backend's interpreter whether its torch has CUDA; cached per (python, backend_path)
    unless ``refresh``. A failed probe is not cached, so the next call tries again."""
    key = (python, backend_path)
    if not refresh and key in _cache:
        return _cache[key]
    problem = check_python(python)
    if problem:
        return CudaProbe(None, problem)
    info, problem = run_probe(python, _PROBE_CODE, backend_path=backend_path, timeout_s=timeout_s,
                              about=" whether it has CUDA", failed="could not import PyTorch")
    if info is None:
        return CudaProbe(None, problem)
    cuda = bool(info.get("cuda"))
    devices = tuple(str(d) for d in info.get("devices") or [])
    version = str(info.get("torch", ""))
    message = (f"PyTorch {version} with CUDA ({', '.join(devices)})" if cuda
               else f"PyTorch {version} without CUDA (CPU only)")
    probe = CudaProbe(cuda, message, version, devices)
    _cache[key] = probe
    return probe


def cached_cuda(python: str, backend_path: str = "") -> CudaProbe | None:
    """The cached probe of this interpreter, without running anything (None: not probed yet)."""
    return _cache.get((python, backend_path))


def auto_preset(device: str, cuda: bool | None) -> str:
    """The preset ``auto`` stands for: the device setting first (``cpu``/``cuda`` say it), else what
    the backend has. Unknown CUDA (a failed probe) gives the CPU preset, which finishes anywhere."""
    if device == "cpu":
        return CPU_PRESET
    if device == "cuda":
        return GPU_PRESET
    return GPU_PRESET if cuda else CPU_PRESET


def resolve_preset(preset: str, device: str, python: str, backend_path: str = "") -> tuple[str, str]:
    """The preset to run and, for ``auto``, a line saying why (empty for an explicit preset)."""
    if preset != AUTO_PRESET:
        return preset, ""
    if device in ("cpu", "cuda"):
        chosen = auto_preset(device, None)
        return chosen, f"Preset Auto: {chosen} (the device is set to {device})"
    probe = probe_cuda(python, backend_path)
    chosen = auto_preset(device, probe.cuda)
    why = probe.message if probe.cuda is not None else f"could not tell whether it has CUDA: {probe.message}"
    return chosen, f"Preset Auto: {chosen} (the backend's {why})"
