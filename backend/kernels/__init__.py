"""GPU kernels behind functional APIs, each with a pure-torch twin (the CPU path and the test oracle).

- :func:`rasterize` / :func:`rasterize_frames`: gsplat's CUDA rasterizer for CUDA tensors, the torch
  twin (same maths, same gradients) for CPU tensors.
- :func:`hexplane_features`: the deformation field's multi-scale space-time plane features, fused
  Triton kernels on CUDA (``hexplane_triton``), ``grid_sample`` on the CPU (``hexplane_torch``).
- :func:`knn_rigidity`, :func:`knn_smoothness`: stage 2's kNN regularisers, fused Triton kernels on
  CUDA (``knn_losses_triton``), gathers on the CPU (``knn_losses_torch``).

Training code is written once and runs on either device.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .hexplane_torch import check_hexplane_inputs, hexplane_features_torch
from .hexplane_triton import hexplane_features_triton
from .knn_losses_torch import check_knn_inputs, knn_rigidity_torch, knn_smoothness_torch
from .knn_losses_triton import knn_rigidity_triton, knn_smoothness_triton
from .rasterize_gsplat import rasterize_gsplat, rasterize_gsplat_frames
from .rasterize_torch import RENDER_MODES, check_inputs, rasterize_torch
from .triton_launch import triton_available

BACKENDS = ("auto", "torch", "gsplat")
KERNEL_BACKENDS = ("auto", "torch", "triton")
__all__ = ["BACKENDS", "KERNEL_BACKENDS", "RENDER_MODES", "hexplane_features", "hexplane_features_torch",
           "hexplane_features_triton", "knn_rigidity", "knn_smoothness", "rasterize", "rasterize_frames",
           "rasterize_gsplat", "rasterize_torch", "resolve_kernels"]


def resolve_kernels(backend: str, device: torch.device | str) -> str:
    """Which of stage 2's kernels (plane features, kNN losses) ``backend`` (``Config.kernels``) means for
    tensors on ``device``: "triton" (the fused kernels) or "torch" (their twins).

    "auto" is Triton on CUDA where Triton is installed (it comes with torch's CUDA builds on Linux) and
    the torch twin otherwise; callers log which one runs. "triton" without CUDA or without Triton is
    refused with the switch that runs the twin."""
    device = torch.device(device)
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"kernels must be one of {KERNEL_BACKENDS}, got {backend!r}")
    if backend == "triton":
        if device.type != "cuda":
            raise ValueError(f"kernels=triton needs a CUDA device, this run is on {device}; "
                             "use kernels=auto or torch")
        if not triton_available():
            raise ValueError("kernels=triton needs Triton, which is not installed here (it comes "
                             "with CUDA builds of torch on Linux); use kernels=auto or torch")
        return "triton"
    if backend == "auto" and device.type == "cuda" and triton_available():
        return "triton"
    return "torch"


def knn_rigidity(x_prev: Tensor, x_cur: Tensor, back: Tensor, indices: Tensor, weights: Tensor,
                 backend: str = "auto", groups: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Mean local-rigidity residual over P frame pairs, N Gaussians and their K neighbours.

    Inputs: centres at the two frames ``x_prev``, ``x_cur`` (P, N, 3); ``back`` (P, N, 3, 3), each
    Gaussian's map of current-frame offsets back into the previous frame's orientation; the neighbour
    table ``indices`` (N, K) (itself included) and ``weights`` (N, K). Float32 on one device.

    Returns the mean over (P, N, K) of sqrt(w · |o_prev − back · o_cur|² + 1e-20), with o = x[j] − x[i];
    differentiable in ``x_prev``, ``x_cur`` and ``back``. ``groups``: the table's
    ``neighbour_groups(indices)``, which the torch path's reproducible backward sums by (computed per call
    otherwise; the Triton kernel needs none).
    """
    if x_prev.ndim != 3:
        raise ValueError(f"x_prev must be (P, N, 3), got {tuple(x_prev.shape)}")
    P, N = x_prev.shape[:2]
    check_knn_inputs(indices, weights, N, ("x_prev", x_prev, (P, N, 3)), ("x_cur", x_cur, (P, N, 3)),
                     ("back", back, (P, N, 3, 3)))
    if resolve_kernels(backend, x_prev.device) == "triton":
        return knn_rigidity_triton(x_prev, x_cur, back, indices, weights)
    return knn_rigidity_torch(x_prev, x_cur, back, indices, weights, groups)


def knn_smoothness(d: Tensor, indices: Tensor, weights: Tensor, backend: str = "auto",
                   groups: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Mean neighbour difference of per-Gaussian vectors ``d`` (P, N, 3) (stage 2: log-scale changes)
    over (P, N, K): sqrt(w · |d[j] − d[i]|² + 1e-20); ``indices``, ``weights`` (N, K) and ``groups`` as in
    :func:`knn_rigidity`. Differentiable in ``d``."""
    if d.ndim != 3:
        raise ValueError(f"d must be (P, N, 3), got {tuple(d.shape)}")
    P, N = d.shape[:2]
    check_knn_inputs(indices, weights, N, ("d", d, (P, N, 3)))
    if resolve_kernels(backend, d.device) == "triton":
        return knn_smoothness_triton(d, indices, weights)
    return knn_smoothness_torch(d, indices, weights, groups)


def hexplane_features(spatial: list[Tensor], temporal: list[Tensor], coords: Tensor, taus: Tensor,
                      backend: str = "auto") -> Tensor:
    """Multi-scale space-time plane features of points at times.

    Inputs: per scale s, ``spatial[s]`` (3, C, R_s, R_s) planes over (x, y), (x, z), (y, z) and
    ``temporal[s]`` (3, C, T, R_s) planes over (x, tau), (y, tau), (z, tau) (width axis first; any
    memory layout, channels-last reads fastest on CUDA); ``coords`` (N, 3) and ``taus`` (B,) in
    [-1, 1], outside read as the border (bilinear, align_corners). All float32 on one device.

    Returns (B, N, C · scales): per scale the product of the three spatial samples and the three
    space-time samples, scales concatenated. Differentiable in the planes (and, with the torch twin, in
    coords and taus; the Triton kernel refuses inputs that require grad there).
    """
    check_hexplane_inputs(spatial, temporal, coords, taus)
    if resolve_kernels(backend, coords.device) == "triton":
        return hexplane_features_triton(spatial, temporal, coords, taus)
    return hexplane_features_torch(spatial, temporal, coords, taus)


def _use_gsplat(backend: str, device: torch.device) -> bool:
    """Whether ``backend`` resolves to gsplat for tensors on ``device``; refuses an unknown backend
    and gsplat for non-CUDA tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = device.type == "cuda"
    if backend == "gsplat" and not on_cuda:
        raise ValueError(
            f"backend='gsplat' needs CUDA tensors, got tensors on {device}; "
            "use backend='torch' or 'auto' on the CPU"
        )
    return backend == "gsplat" or (backend == "auto" and on_cuda)


def rasterize(
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
    backend: str = "auto",
) -> Tuple[Tensor, Tensor, Dict]:
    """Render N 3D Gaussians into C pinhole cameras; differentiable in every Gaussian input.

    Semantics are those of ``gsplat.rasterization(..., packed=False,
    rasterize_mode="classic", sh_degree=None)`` from gsplat 1.5.3, whichever backend runs.

    Inputs (all tensors on one device, floating point):
        means: (N, 3) world-space centres.
        quats: (N, 4) rotations as w, x, y, z; need not be unit length (normalised inside).
        scales: (N, 3) standard deviations along the rotated axes, already positive
            (i.e. after ``exp``).
        opacities: (N,) in [0, 1] (after ``sigmoid``).
        colors: (N, D) or per-camera (C, N, D) features, any D >= 1 (e.g. RGB plus a
            one-hot instance id); rendered as-is, no activation, no SH.
        viewmats: (C, 4, 4) world-to-camera matrices, OpenCV camera axes
            (x right, y down, z forward).
        Ks: (C, 3, 3) pinhole intrinsics in pixels; pixel (i, j) has its centre at
            image coordinate (j + 0.5, i + 0.5).
        width, height: image size in pixels.
        near_plane, far_plane: Gaussians whose camera z is outside [near, far] are culled.
        eps2d: added to the projected 2D covariance diagonal (pixels^2), a low-pass
            filter that keeps tiny Gaussians at least about a pixel wide.
        render_mode: "RGB" (features), "D" (accumulated depth sum_i w_i z_i),
            "ED" (D divided by the accumulated alpha), "RGB+D", "RGB+ED" (features
            then one depth channel last).
        backgrounds: optional (C, D) colour added where the pixel is not opaque
            (weighted by the final transmittance); ignored for "D"/"ED", and the
            depth channel of "RGB+D"/"RGB+ED" gets a zero background.
        radius_clip: Gaussians whose projected radius is <= this many pixels on both
            axes are skipped.
        backend: "auto" (gsplat for CUDA tensors, the torch twin otherwise),
            "torch", or "gsplat" (CUDA tensors only).

    Returns:
        render_colors: (C, H, W, D), or (C, H, W, D + 1) with a depth mode, or
            (C, H, W, 1) for "D"/"ED".
        render_alphas: (C, H, W, 1) accumulated opacity, 1 - final transmittance.
        meta: dict with at least ``radii`` (C, N) int32 (0 = culled; the larger of the
            x/y pixel half-extents), ``radii_xy`` (C, N, 2), ``means2d`` (C, N, 2)
            pixel coordinates, ``depths`` (C, N) camera z, ``conics`` (C, N, 3).
            Entries of culled Gaussians are unspecified beyond ``radii == 0``.

    Raises:
        ValueError: a shape, dtype, device, mode or backend does not fit the
            contract, or backend="gsplat" is asked for with non-CUDA tensors.
        ImportError: backend resolves to gsplat and gsplat is not installed.
    """
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, render_mode, backgrounds)
    fn = rasterize_gsplat if _use_gsplat(backend, means.device) else rasterize_torch
    return fn(
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
        eps2d=eps2d,
        render_mode=render_mode,
        backgrounds=backgrounds,
        radius_clip=radius_clip,
    )


def rasterize_frames(
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
    backend: str = "auto",
) -> Tuple[Tensor, Tensor]:
    """Render B frames, each with its own N Gaussians and its own camera, in one call.

    A moving scene has different Gaussians at every frame, so :func:`rasterize` (one set of
    Gaussians, C cameras) would need one call per frame. gsplat takes leading batch dimensions, so
    on CUDA all frames go through one launch; the torch twin renders them one after another.

    Inputs: means (B, N, 3), quats (B, N, 4), scales (B, N, 3) positive, opacities (B, N),
    colors (B, N, D), viewmats (B, 4, 4), Ks (B, 3, 3), backgrounds (B, D) or None; the other
    arguments as in :func:`rasterize`.

    Returns render_colors (B, H, W, D or D + 1) and render_alphas (B, H, W, 1), frame b exactly
    what ``rasterize(means[b], ..., viewmats[b:b+1], Ks[b:b+1])`` returns.
    """
    if means.dim() != 3 or means.shape[-1] != 3:
        raise ValueError(f"means must be (B, N, 3), got {tuple(means.shape)}")
    B, N = means.shape[:2]
    D = colors.shape[-1]
    wanted = {"quats": (quats, (B, N, 4)), "scales": (scales, (B, N, 3)), "opacities": (opacities, (B, N)),
              "colors": (colors, (B, N, D)), "viewmats": (viewmats, (B, 4, 4)), "Ks": (Ks, (B, 3, 3))}
    if backgrounds is not None:
        wanted["backgrounds"] = (backgrounds, (B, D))
    for name, (t, want) in wanted.items():
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must be {want} for means of shape {tuple(means.shape)}, got {tuple(t.shape)}")
    kw = dict(near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, render_mode=render_mode)
    if _use_gsplat(backend, means.device):
        check_inputs(means[0], quats[0], scales[0], opacities[0], colors[0], viewmats[:1], Ks[:1], width, height,
                     render_mode, None if backgrounds is None else backgrounds[:1])
        return rasterize_gsplat_frames(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                       backgrounds=backgrounds, **kw)
    outs, alphas = [], []
    for b in range(B):
        o, a, _ = rasterize_torch(means[b], quats[b], scales[b], opacities[b], colors[b], viewmats[b:b + 1],
                                  Ks[b:b + 1], width, height,
                                  backgrounds=None if backgrounds is None else backgrounds[b:b + 1], **kw)
        outs.append(o[0])
        alphas.append(a[0])
    return torch.stack(outs), torch.stack(alphas)
