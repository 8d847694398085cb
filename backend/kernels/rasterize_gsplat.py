"""CUDA render path: gsplat 1.5.3's fused rasterizer behind the project's render contract.

A thin adapter so that the rest of the backend sees one contract whichever kernel
runs: same arguments as :func:`backend.kernels.rasterize_torch.rasterize_torch`,
same outputs, and meta ``radii`` reduced to (C, N) as the contract says (gsplat's
own per-axis (C, N, 2) radii are kept as ``radii_xy``). gsplat is imported only
when called, so CPU-only installs never need it.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor

from .rasterize_torch import check_inputs

GSPLAT_VERSION = "1.5.3"


def _import_gsplat():
    """Import gsplat or explain how to install it; there is deliberately no CPU fallback here."""
    try:
        import gsplat  # noqa: PLC0415 - optional GPU dependency, imported on first use
    except ImportError as exc:
        raise ImportError(
            f"The gsplat CUDA backend needs gsplat: pip install gsplat=={GSPLAT_VERSION} "
            f"(import failed: {exc})"
        ) from exc
    return gsplat


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    render_mode: str = "RGB",
    backgrounds: Optional[Tensor] = None,
    radius_clip: float = 0.0,
) -> Tuple[Tensor, Tensor, Dict]:
    """Render with ``gsplat.rasterization`` (classic mode, unpacked, no SH) on CUDA tensors.

    Same contract as :func:`backend.kernels.rasterize`. Raises ``ValueError`` for
    tensors that are not on a CUDA device and ``ImportError`` if gsplat is missing.
    """
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, render_mode, backgrounds)
    if means.device.type != "cuda":
        raise ValueError(
            f"the gsplat backend needs CUDA tensors, got tensors on {means.device}; "
            "use backend='torch' (or 'auto') for CPU tensors"
        )
    gsplat = _import_gsplat()
    render_colors, render_alphas, meta = gsplat.rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        sh_degree=None,
        packed=False,
        tile_size=16,
        backgrounds=backgrounds,
        render_mode=render_mode,
        rasterize_mode="classic",
    )
    meta = dict(meta)
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5 reports per-axis radii
        meta["radii_xy"] = radii
        meta["radii"] = radii.amax(dim=-1)
    return render_colors, render_alphas, meta


def rasterize_gsplat_frames(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    render_mode: str = "RGB",
    backgrounds: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """B frames of per-frame Gaussians (B, N, ...) through per-frame cameras (B, 4, 4) in one
    gsplat launch, using its leading batch dimension; see :func:`backend.kernels.rasterize_frames`."""
    if means.device.type != "cuda":
        raise ValueError(f"the gsplat backend needs CUDA tensors, got tensors on {means.device}")
    out, alpha, _ = _import_gsplat().rasterization(
        means, quats, scales, opacities, colors, viewmats[:, None], Ks[:, None], width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=None, packed=False, tile_size=16,
        backgrounds=None if backgrounds is None else backgrounds[:, None], render_mode=render_mode,
        rasterize_mode="classic")
    return out[:, 0], alpha[:, 0]
