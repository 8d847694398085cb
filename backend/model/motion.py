"""Per-object motion over the clip: the deformation that maps canonical Gaussians to each frame.

The skeleton's motion is rigid per object and per frame (a rotation about the object's origin and a
translation). Any deformation — like the method's plane-feature field — implements the same call:
``motion(canonical, frames) -> GaussianBatch``, so the fit, the baker and the renderer do not change.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from .frame_fill import FrameFill
from .gaussians import CanonicalGaussians, GaussianBatch
from .geometry import quat_multiply, quat_normalize, quat_to_rotmat


class Deformation(Protocol):
    """Maps an object's canonical Gaussians to world space at the given frame indices."""

    def __call__(self, canonical: CanonicalGaussians, frames: torch.Tensor) -> GaussianBatch: ...


class RigidMotion(nn.Module):
    """A rotation (quaternion) and translation per frame, initialised from the object's 2D track."""

    def __init__(self, translations: torch.Tensor, trained: np.ndarray | None = None):
        super().__init__()
        T = translations.shape[0]
        self.translations = nn.Parameter(translations.float().clone())  # (T, 3)
        rot = torch.zeros(T, 4)
        rot[:, 0] = 1
        self.rotations = nn.Parameter(rot)  # (T, 4) w, x, y, z
        # frames the fit does not see (--holdout) interpolate their trained neighbours
        self.fill = FrameFill(np.ones(T, bool) if trained is None else trained)

    @property
    def num_frames(self) -> int:
        return int(self.translations.shape[0])

    def forward(self, canonical: CanonicalGaussians, frames: torch.Tensor) -> GaussianBatch:
        q = quat_normalize(self.fill(self.rotations, frames))  # (B, 4)
        R = quat_to_rotmat(q)  # (B, 3, 3)
        means = torch.einsum("bij,nj->bni", R, canonical.means) + self.fill(self.translations, frames)[:, None, :]
        quats = quat_multiply(q[:, None, :], quat_normalize(canonical.quats)[None])
        B, N = frames.shape[0], canonical.num_gaussians
        return GaussianBatch(
            means=means,
            quats=quats,
            log_scales=canonical.log_scales[None].expand(B, N, 3),
            colors=canonical.colors[None].expand(B, N, 3),
            opacities=canonical.opacities[None].expand(B, N),
        )
