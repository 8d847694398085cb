"""What the Triton kernels share: the optional import, and launches whose failure names the way out.

A kernel that cannot compile or run on the user's GPU (an architecture or driver Triton does not
support) is a run-ending error; it is reported with the switch that runs the same maths in torch.
"""

from __future__ import annotations

from ..errors import GenmojoError

try:  # Triton ships with CUDA builds of torch on Linux; CPU-only installs use the torch twins
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None
    tl = None

TWIN_HINT = "run stage 2 with the torch twins: --set kernels=torch (in Blender: Config Overrides, kernels=torch)"


def triton_available() -> bool:
    return triton is not None


def launch(kernel, grid: tuple[int, ...], what: str, *args, **meta) -> None:
    """``kernel[grid](*args, **meta)``; any failure becomes a GenmojoError naming ``what`` and the twins."""
    try:
        kernel[grid](*args, **meta)
    except Exception as e:
        raise GenmojoError(f"the Triton {what} kernel failed on this GPU ({type(e).__name__}: {e})",
                           TWIN_HINT) from e
