"""Multi-scale space-time plane features in pure torch: the CPU path and the Triton kernel's oracle.

The contract (shared with ``hexplane_triton``): per scale s, three spatial planes ``spatial[s]``
(3, C, R, R) spanning the coordinate pairs (x, y), (x, z), (y, z) (width axis first) and three
space-time planes ``temporal[s]`` (3, C, T, R) whose width axis is coordinate 0, 1, 2 and whose height
is time. A point (x, y, z) at time tau reads each plane bilinearly (``grid_sample``, align_corners,
border padding: values outside [-1, 1] read the border); its feature at scale s is the product of
the three spatial samples times the product of the three space-time samples, and the scales are
concatenated. Planes may be stored in any layout (the Triton kernel prefers channels-last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Which coordinate axes each spatial plane spans (its width axis first, then its height axis).
SPATIAL_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz


def _sample(planes: Tensor, grid: Tensor) -> Tensor:
    """Bilinear samples of a stack of planes (P, C, H, W) at grid (P, Ho, Wo, 2) → (P, C, Ho, Wo)."""
    return F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)


def check_hexplane_inputs(spatial: list[Tensor], temporal: list[Tensor], coords: Tensor, taus: Tensor) -> None:
    """Shape, dtype and device contract of :func:`hexplane_features`; raises ValueError naming the input."""
    if coords.ndim != 2 or coords.shape[-1] != 3:
        raise ValueError(f"coords must have shape (N, 3), got {tuple(coords.shape)}")
    if taus.ndim != 1:
        raise ValueError(f"taus must have shape (B,), got {tuple(taus.shape)}")
    if not spatial or len(spatial) != len(temporal):
        raise ValueError(f"need one spatial and one temporal plane set per scale, got {len(spatial)} and "
                         f"{len(temporal)}")
    C = spatial[0].shape[1]
    T = temporal[0].shape[2]
    for s, (sp, tp) in enumerate(zip(spatial, temporal)):
        R = sp.shape[-1]
        if tuple(sp.shape) != (3, C, R, R):
            raise ValueError(f"spatial planes of scale {s} must be (3, {C}, R, R), got {tuple(sp.shape)}")
        if tuple(tp.shape) != (3, C, T, R):
            raise ValueError(f"temporal planes of scale {s} must be (3, {C}, {T}, {R}), got {tuple(tp.shape)}")
        for name, t in (("spatial", sp), ("temporal", tp)):
            if t.device != coords.device or t.dtype != sp.dtype:
                raise ValueError(f"{name} planes of scale {s} are {t.dtype} on {t.device}; coords are on "
                                 f"{coords.device} and the planes must share one dtype")


def hexplane_features_torch(spatial: list[Tensor], temporal: list[Tensor], coords: Tensor, taus: Tensor) -> Tensor:
    """coords (N, 3) and taus (B,), in [-1, 1] and in the planes' dtype → features (B, N, C · scales).

    Differentiable in the planes and the coordinates."""
    B, N = taus.shape[0], coords.shape[0]
    grid_s = torch.stack([coords[:, list(ax)] for ax in SPATIAL_AXES])[:, None]  # (3, 1, N, 2)
    space = coords.t()[:, None, :].expand(3, B, N)  # plane k's width axis is coordinate k
    time = taus[None, :, None].expand(3, B, N)
    grid_t = torch.stack([space, time], dim=-1)  # (3, B, N, 2)
    per_scale = []
    for sp, tp in zip(spatial, temporal):
        s = _sample(sp, grid_s).prod(dim=0)[:, 0]  # (C, N)
        t = _sample(tp, grid_t).prod(dim=0)  # (C, B, N)
        per_scale.append((s[:, None, :] * t).permute(1, 2, 0))  # (B, N, C)
    return torch.cat(per_scale, dim=-1)
