"""Quaternion and camera helpers shared by the model (w, x, y, z quaternions; OpenCV cameras)."""

from __future__ import annotations

import functools
import math

import torch

# Quaternion products as constant bilinear maps, so that a product is one outer product and one matmul
# (forward and backward a handful of launches) instead of dozens of element-wise ones: stage 2 composes
# and converts rotations for every Gaussian, frame and object of a step, and its step is launch-bound.
# Index of the component pair (i, j) in a flattened outer product: 4·i + j, components w, x, y, z = 0..3.
# The matmuls are float32 at torch's default matmul precision ("highest": no TF32), like the field's MLPs.
_HAMILTON = {  # a_i · b_j contributes sign · to component k of a ⊗ b
    (0, 0, 0): 1, (1, 1, 0): -1, (2, 2, 0): -1, (3, 3, 0): -1,
    (0, 1, 1): 1, (1, 0, 1): 1, (2, 3, 1): 1, (3, 2, 1): -1,
    (0, 2, 2): 1, (1, 3, 2): -1, (2, 0, 2): 1, (3, 1, 2): 1,
    (0, 3, 3): 1, (1, 2, 3): 1, (2, 1, 3): -1, (3, 0, 3): 1,
}
_ROTMAT = {  # 2 · q_i q_j contributes sign · to entry r of the row-major 3×3 matrix, besides the identity
    (2, 2, 0): -1, (3, 3, 0): -1, (1, 2, 1): 1, (0, 3, 1): -1, (1, 3, 2): 1, (0, 2, 2): 1,
    (1, 2, 3): 1, (0, 3, 3): 1, (1, 1, 4): -1, (3, 3, 4): -1, (2, 3, 5): 1, (0, 1, 5): -1,
    (1, 3, 6): 1, (0, 2, 6): -1, (2, 3, 7): 1, (0, 1, 7): 1, (1, 1, 8): -1, (2, 2, 8): -1,
}


@functools.lru_cache(maxsize=None)
def _bilinear(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The (16, out) matrix of a quaternion bilinear map, made once per device and dtype (no copy per call)."""
    table, out, scale = (_HAMILTON, 4, 1.0) if name == "hamilton" else (_ROTMAT, 9, 2.0)
    m = torch.zeros(16, out, dtype=torch.float64)
    for (i, j, k), sign in table.items():
        m[4 * i + j, k] = sign * scale
    return m.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _identity9(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.eye(3, dtype=dtype).flatten().to(device)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flattened outer products of quaternions (..., 4) × (..., 4) → (..., 16), broadcasting."""
    return (a[..., :, None] * b[..., None, :]).flatten(-2)


def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a ⊗ b (rotation b first, then a), broadcasting over leading dims."""
    outer = _outer(a, b)
    return outer @ _bilinear("hamilton", outer.device, outer.dtype)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit-or-not quaternions -> (..., 3, 3) rotation matrices (normalised first):
    I + 2·(the quadratic terms), e.g. R[0, 0] = 1 − 2(y² + z²)."""
    n = quat_normalize(q)
    outer = _outer(n, n)
    R = torch.addmm(_identity9(outer.device, outer.dtype), outer.reshape(-1, 16),
                    _bilinear("rotmat", outer.device, outer.dtype))
    return R.reshape(*q.shape[:-1], 3, 3)


def intrinsics_from_fovy(fovy_deg: float, width: int, height: int) -> torch.Tensor:
    """Pinhole K with square pixels and the principal point at the image centre."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return torch.tensor([[fy, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def unproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (..., 2) at camera-space depth (...,) -> world points (..., 3)."""
    x = (uv[..., 0] - K[0, 2]) / K[0, 0] * depth
    y = (uv[..., 1] - K[1, 2]) / K[1, 1] * depth
    pc = torch.stack([x, y, depth], dim=-1)
    return pc @ c2w[:3, :3].T + c2w[:3, 3]


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions w, x, y, z with w >= 0."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # (..., 4 candidates, 4); the candidate with the largest diagonal term is well conditioned
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = quat_normalize(q)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])
