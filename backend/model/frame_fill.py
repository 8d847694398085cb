"""Per-frame parameters for frames the fit never sees (``--holdout``), filled from those it does.

Placement and rigid motion keep one learned value per frame. A withheld frame's own value never
receives a gradient, so it would stay at its initial guess while its neighbours move during the fit.
Instead, every frame reads its value through ``FrameFill``: trained frames their own, other frames
the linear interpolation of the nearest trained frames on either side (held at the ends). With
every frame trained it is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FrameFill(nn.Module):
    """Reads per-frame values (T, ...) so that untrained frames interpolate their trained neighbours."""

    def __init__(self, trained: np.ndarray):
        super().__init__()
        trained = np.asarray(trained, dtype=bool)
        T = trained.shape[0]
        idx = np.flatnonzero(trained)
        if idx.size == 0:
            raise ValueError("at least one frame must be trained")
        left = np.empty(T, dtype=np.int64)
        right = np.empty(T, dtype=np.int64)
        weight = np.zeros(T, dtype=np.float32)
        for t in range(T):
            before, after = idx[idx <= t], idx[idx >= t]
            a = int(before[-1]) if before.size else int(after[0])
            b = int(after[0]) if after.size else int(before[-1])
            left[t], right[t] = a, b
            weight[t] = 0.0 if a == b else (t - a) / (b - a)
        self.register_buffer("left", torch.from_numpy(left), persistent=False)
        self.register_buffer("right", torch.from_numpy(right), persistent=False)
        self.register_buffer("weight", torch.from_numpy(weight), persistent=False)

    def forward(self, values: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``values`` (T, ...) at ``frames`` (B,), interpolated where a frame was not trained."""
        w = self.weight[frames].reshape(-1, *([1] * (values.dim() - 1)))
        return (1 - w) * values[self.left[frames]] + w * values[self.right[frames]]
