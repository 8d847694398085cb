"""Stage 2's kNN regularisers in pure torch: the CPU path and the Triton kernels' oracle.

Both are means over P frame pairs × N Gaussians × K neighbours (each Gaussian's K nearest canonical
neighbours ``indices`` (N, K), itself included, with weights ``weights`` (N, K)) of a robust length
sqrt(w · |r|² + 1e-20):

- local rigidity: r = o_prev − M · o_cur, where o = x[j] − x[i] are a Gaussian's offsets to its
  neighbours at the two frames and M (P, N, 3, 3) takes the current frame's offsets back into the
  previous frame's orientation (the transposed relative rotation of Gaussian i);
- local-scale smoothness: r = d[j] − d[i] for per-Gaussian log-scale changes d (P, N, 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-20


def check_knn_inputs(indices: Tensor, weights: Tensor, n: int, *tensors: tuple[str, Tensor, tuple]) -> None:
    """Shapes and devices of the kNN losses' inputs; ValueError naming the input."""
    if indices.ndim != 2 or indices.shape[0] != n or tuple(weights.shape) != tuple(indices.shape):
        raise ValueError(f"indices and weights must both be (N={n}, K), got {tuple(indices.shape)} and "
                         f"{tuple(weights.shape)}")
    for name, t, shape in tensors:
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(t.shape)}")
        if t.device != indices.device or weights.device != indices.device:
            raise ValueError(f"{name} is on {t.device}; indices on {indices.device}, weights on {weights.device}: "
                             "put them on one device")


def knn_rigidity_torch(x_prev: Tensor, x_cur: Tensor, back: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """x_prev, x_cur (P, N, 3), back (P, N, 3, 3) → the mean rigidity residual length (scalar)."""
    o_prev = x_prev[..., indices, :] - x_prev[..., :, None, :]
    o_cur = x_cur[..., indices, :] - x_cur[..., :, None, :]
    r = o_prev - torch.einsum("...nij,...nkj->...nki", back, o_cur)
    return torch.sqrt(weights * r.pow(2).sum(-1) + EPS).mean()


def knn_smoothness_torch(d: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """d (P, N, 3) → the mean neighbour-difference length (scalar)."""
    diff = d[..., indices, :] - d[..., :, None, :]
    return torch.sqrt(weights * diff.pow(2).sum(-1) + EPS).mean()
