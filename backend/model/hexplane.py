"""Multi-scale space-time plane features (K-Planes / HexPlane) for points in an object's frame.

A 4D point (x, y, z, tau) is described by six learnable 2D feature planes per scale: three spatial
(xy, xz, yz) and three space-time (x-tau, y-tau, z-tau). The feature of a point is the element-wise
product of its six bilinear samples, and the scales are concatenated. Factorising 4D into planes
keeps memory quadratic instead of quartic; the product lets one plane switch a feature off.

The time planes start at 1, so at initialisation the feature is purely spatial (the same for every
frame) and time dependence is something the fit has to add. Positions are expected normalised to
[-1, 1] and tau in [-1, 1]; values outside are clamped to the border of the planes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..kernels import KERNEL_BACKENDS, hexplane_features


class HexPlane(nn.Module):
    """Six feature planes per spatial resolution; ``forward(coords, taus)`` → (B, N, features).

    Per scale the three spatial planes are one parameter of shape (3, C, R, R) and the three
    space-time planes one of shape (3, C, T_res, R) (height is time); ``backend.kernels.hexplane_features``
    samples them (fused Triton kernels on CUDA, ``grid_sample`` on the CPU, as ``kernel`` resolves).
    """

    def __init__(
        self,
        resolutions: tuple[int, ...],
        channels: int,
        time_resolution: int,
        spatial_init: tuple[float, float] = (0.1, 0.5),
        kernel: str = "auto",
    ):
        super().__init__()
        if not resolutions:
            raise ValueError("HexPlane needs at least one spatial resolution")
        if min(resolutions) < 2 or time_resolution < 2:
            raise ValueError(f"plane resolutions must be at least 2, got {resolutions} × {time_resolution}")
        if kernel not in KERNEL_BACKENDS:
            raise ValueError(f"kernel must be one of {KERNEL_BACKENDS}, got {kernel!r}")
        self.resolutions = tuple(int(r) for r in resolutions)
        self.channels = int(channels)
        self.time_resolution = int(time_resolution)
        self.kernel = kernel
        lo, hi = spatial_init
        self.spatial = nn.ParameterList(
            nn.Parameter(torch.empty(3, channels, r, r).uniform_(lo, hi)) for r in self.resolutions
        )
        self.temporal = nn.ParameterList(
            nn.Parameter(torch.ones(3, channels, self.time_resolution, r)) for r in self.resolutions
        )

    def channels_last_(self) -> "HexPlane":
        """Store every plane channels-last (same shapes and values): the layout the Triton kernel reads
        fastest, one contiguous run of channels per corner. Call before an optimiser holds the planes."""
        for p in self.parameters():
            p.data = p.data.contiguous(memory_format=torch.channels_last)
        return self

    def time_smoothness(self) -> Tensor:
        """Mean squared second difference of the space-time planes along time, averaged over scales.

        K-Planes' temporal smoothness prior: features change steadily from one time node to the next,
        so frames between trained ones (``--holdout``, or a video's in-between times) read a
        deformation that continues their neighbours' motion instead of an unconstrained blend.
        """
        terms = []
        for p in self.temporal:
            if p.shape[2] < 3:
                terms.append(p.new_zeros(()))
                continue
            d2 = p[:, :, 2:] - 2 * p[:, :, 1:-1] + p[:, :, :-2]
            terms.append(d2.square().mean())
        return torch.stack(terms).mean()

    @property
    def out_dim(self) -> int:
        return self.channels * len(self.resolutions)

    def forward(self, coords: Tensor, taus: Tensor) -> Tensor:
        """coords (N, 3) in [-1, 1], taus (B,) in [-1, 1] → features (B, N, C · scales)."""
        if coords.ndim != 2 or coords.shape[-1] != 3:
            raise ValueError(f"coords must have shape (N, 3), got {tuple(coords.shape)}")
        if taus.ndim != 1:
            raise ValueError(f"taus must have shape (B,), got {tuple(taus.shape)}")
        B, N = taus.shape[0], coords.shape[0]
        dtype = self.spatial[0].dtype
        coords, taus = coords.to(dtype), taus.to(dtype)
        if N == 0 or B == 0:
            return coords.new_zeros(B, N, self.out_dim)
        return hexplane_features(list(self.spatial), list(self.temporal), coords, taus, backend=self.kernel)
