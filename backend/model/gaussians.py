"""Canonical 3D Gaussians of one object, and the batch type that deformations produce.

Canonical Gaussians live in the object's own frame (origin at its centre in its reference frame,
axes aligned with the world). A deformation maps them to world space per frame; what it produces is
a ``GaussianBatch`` — the typed value the renderer and the baker consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .geometry import unproject


@dataclass
class GaussianBatch:
    """World-space Gaussians for B frames: means (B,N,3), quats (B,N,4) wxyz, log_scales (B,N,3),
    colors (B,N,3) in [0,1], opacities (B,N) in [0,1]."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    colors: torch.Tensor
    opacities: torch.Tensor

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[1])


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


class CanonicalGaussians(nn.Module):
    """Learnable canonical Gaussians: means, rotations, log-scales, colour and opacity logits."""

    def __init__(self, means: torch.Tensor, log_scales: torch.Tensor, colors: torch.Tensor,
                 opacities: torch.Tensor, quats: torch.Tensor | None = None):
        super().__init__()
        n = means.shape[0]
        if quats is None:
            quats = torch.zeros(n, 4, dtype=means.dtype)
            quats[:, 0] = 1
        self.means = nn.Parameter(means.float().clone())
        self.quats = nn.Parameter(quats.float().clone())
        self.log_scales = nn.Parameter(log_scales.float().clone())
        self.color_logits = nn.Parameter(_logit(colors.float().clamp(0.02, 0.98)))
        self.opacity_logits = nn.Parameter(_logit(opacities.float().clamp(1e-3, 1 - 1e-3)))

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def colors(self) -> torch.Tensor:
        return torch.sigmoid(self.color_logits)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)


@dataclass(frozen=True)
class LiftedObject:
    """An object's Gaussians lifted from one frame: canonical Gaussians plus where their origin is."""

    gaussians: CanonicalGaussians
    origin: torch.Tensor  # (3,) world position of the canonical origin in the reference frame
    radius: float  # approximate world-space radius of the object


def lift_from_mask(frame: np.ndarray, mask: np.ndarray, centroid: np.ndarray, K: torch.Tensor,
                   c2w: torch.Tensor, depth: float, count: int, *, thickness: float, opacity: float,
                   scale_factor: float, generator: torch.Generator) -> LiftedObject:
    """Place ``count`` Gaussians on the object's visible pixels at ``depth``, coloured by the frame.

    The object starts as a slightly thick card facing the camera: the simplest shape consistent with
    one view. Depth spread (``thickness`` × radius) gives the optimizer room to form a 3D shape.
    """
    ys, xs = np.nonzero(mask)
    area = xs.size
    count = min(count, area)
    pick = torch.randperm(area, generator=generator)[:count].numpy()
    jitter = torch.rand(count, 2, generator=generator, dtype=torch.float64).numpy()
    uv = torch.from_numpy(np.stack([xs[pick], ys[pick]], 1) + jitter)
    f = float(K[0, 0])
    radius = math.sqrt(area / math.pi) * depth / f
    dz = (torch.randn(count, generator=generator, dtype=torch.float64) * thickness * radius)
    dz = dz.clamp(-2 * thickness * radius, 2 * thickness * radius)
    world = unproject(uv, depth + dz, K, c2w)
    origin = unproject(torch.tensor(centroid, dtype=torch.float64), torch.tensor(depth, dtype=torch.float64),
                       K, c2w)
    spacing = math.sqrt(area / count) * depth / f
    log_scales = torch.full((count, 3), math.log(scale_factor * spacing))
    colors = torch.from_numpy(frame[ys[pick], xs[pick]].astype(np.float32) / 255.0)
    opac = torch.full((count,), opacity)
    g = CanonicalGaussians(means=(world - origin).float(), log_scales=log_scales, colors=colors, opacities=opac)
    return LiftedObject(gaussians=g, origin=origin.float(), radius=radius)
