"""Stage 2's kNN regularisers (local rigidity, local-scale smoothness) as fused Triton kernels (CUDA): same
contract and gradients as ``knn_losses_torch``, which is their oracle.

Why: the twins gather every Gaussian's K neighbours into (P, N, K, 3) offset tensors at both frames,
rotate them, and their backward scatters through an index backward that sorts; per object and
micro-batch that is several 20–80 MB tensors for a scalar. Here one program takes a block of Gaussians
of one frame pair, walks their K neighbours in registers and writes one partial sum; the backward
recomputes the residuals, keeps each Gaussian's own gradient in registers and adds the neighbours'
atomically. The 1e-20 inside the square roots is ``knn_losses_torch.EPS``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .triton_launch import launch, tl, triton

BLOCK_N = 128  # Gaussians per program


if triton is not None:

    @triton.jit
    def _load3(ptr, row, mask):
        return (tl.load(ptr + row * 3 + 0, mask=mask, other=0.0), tl.load(ptr + row * 3 + 1, mask=mask, other=0.0),
                tl.load(ptr + row * 3 + 2, mask=mask, other=0.0))

    @triton.jit
    def _add3(ptr, row, a, b, c, mask):
        tl.atomic_add(ptr + row * 3 + 0, a, mask=mask, sem="relaxed")
        tl.atomic_add(ptr + row * 3 + 1, b, mask=mask, sem="relaxed")
        tl.atomic_add(ptr + row * 3 + 2, c, mask=mask, sem="relaxed")

    @triton.jit
    def _load9(ptr, row, mask):
        """The row-major 3×3 matrices of ``row``, entry by entry."""
        b = ptr + row * 9
        return (tl.load(b + 0, mask=mask, other=0.0), tl.load(b + 1, mask=mask, other=0.0),
                tl.load(b + 2, mask=mask, other=0.0), tl.load(b + 3, mask=mask, other=0.0),
                tl.load(b + 4, mask=mask, other=0.0), tl.load(b + 5, mask=mask, other=0.0),
                tl.load(b + 6, mask=mask, other=0.0), tl.load(b + 7, mask=mask, other=0.0),
                tl.load(b + 8, mask=mask, other=0.0))

    @triton.jit
    def _residual(xp, xc, row_j, pi0, pi1, pi2, ci0, ci1, ci2, m00, m01, m02, m10, m11, m12, m20, m21, m22, mask):
        """r = o_prev − M · o_cur for neighbour rows ``row_j``, and o_cur (the backward needs it)."""
        pj0, pj1, pj2 = _load3(xp, row_j, mask)
        cj0, cj1, cj2 = _load3(xc, row_j, mask)
        c0, c1, c2 = cj0 - ci0, cj1 - ci1, cj2 - ci2
        r0 = pj0 - pi0 - (m00 * c0 + m01 * c1 + m02 * c2)
        r1 = pj1 - pi1 - (m10 * c0 + m11 * c1 + m12 * c2)
        r2 = pj2 - pi2 - (m20 * c0 + m21 * c1 + m22 * c2)
        return r0, r1, r2, c0, c1, c2

    @triton.jit
    def _rigidity_fwd(xp, xc, back, idx, w, partial, N, K, BLOCK: tl.constexpr):
        pid, p = tl.program_id(0), tl.program_id(1)
        n = pid * BLOCK + tl.arange(0, BLOCK)
        m = n < N
        row = p * N + n
        pi0, pi1, pi2 = _load3(xp, row, m)
        ci0, ci1, ci2 = _load3(xc, row, m)
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _load9(back, row, m)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for k in range(0, K):
            j = tl.load(idx + n * K + k, mask=m, other=0)
            wj = tl.load(w + n * K + k, mask=m, other=0.0)
            r0, r1, r2, c0, c1, c2 = _residual(xp, xc, p * N + j, pi0, pi1, pi2, ci0, ci1, ci2,
                                               m00, m01, m02, m10, m11, m12, m20, m21, m22, m)
            acc += tl.where(m, tl.sqrt(wj * (r0 * r0 + r1 * r1 + r2 * r2) + 1e-20), 0.0)
        tl.store(partial + p * tl.num_programs(0) + pid, tl.sum(acc, axis=0))

    @triton.jit
    def _rigidity_bwd(xp, xc, back, idx, w, g_ptr, gxp, gxc, gback, N, K, BLOCK: tl.constexpr):
        pid, p = tl.program_id(0), tl.program_id(1)
        n = pid * BLOCK + tl.arange(0, BLOCK)
        m = n < N
        row = p * N + n
        scale = tl.load(g_ptr)  # upstream gradient over P·N·K
        pi0, pi1, pi2 = _load3(xp, row, m)
        ci0, ci1, ci2 = _load3(xc, row, m)
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = _load9(back, row, m)
        z = tl.zeros((BLOCK,), dtype=tl.float32)
        gp0, gp1, gp2 = z, z, z  # this Gaussian's own gradients, summed over its neighbours
        gc0, gc1, gc2 = z, z, z
        g00, g01, g02, g10, g11, g12, g20, g21, g22 = z, z, z, z, z, z, z, z, z
        for k in range(0, K):
            j = tl.load(idx + n * K + k, mask=m, other=0)
            wj = tl.load(w + n * K + k, mask=m, other=0.0)
            r0, r1, r2, c0, c1, c2 = _residual(xp, xc, p * N + j, pi0, pi1, pi2, ci0, ci1, ci2,
                                               m00, m01, m02, m10, m11, m12, m20, m21, m22, m)
            coef = scale * wj / tl.sqrt(wj * (r0 * r0 + r1 * r1 + r2 * r2) + 1e-20)
            d0, d1, d2 = coef * r0, coef * r1, coef * r2  # d loss / d r
            _add3(gxp, p * N + j, d0, d1, d2, m)  # r = x_prev[j] − x_prev[i] − M (x_cur[j] − x_cur[i])
            gp0 -= d0
            gp1 -= d1
            gp2 -= d2
            e0 = -(m00 * d0 + m10 * d1 + m20 * d2)  # d loss / d o_cur = −Mᵀ d
            e1 = -(m01 * d0 + m11 * d1 + m21 * d2)
            e2 = -(m02 * d0 + m12 * d1 + m22 * d2)
            _add3(gxc, p * N + j, e0, e1, e2, m)
            gc0 -= e0
            gc1 -= e1
            gc2 -= e2
            g00 -= d0 * c0
            g01 -= d0 * c1
            g02 -= d0 * c2
            g10 -= d1 * c0
            g11 -= d1 * c1
            g12 -= d1 * c2
            g20 -= d2 * c0
            g21 -= d2 * c1
            g22 -= d2 * c2
        _add3(gxp, row, gp0, gp1, gp2, m)
        _add3(gxc, row, gc0, gc1, gc2, m)
        gb = gback + row * 9  # M belongs to Gaussian i alone: no other program writes it
        tl.store(gb + 0, g00, mask=m)
        tl.store(gb + 1, g01, mask=m)
        tl.store(gb + 2, g02, mask=m)
        tl.store(gb + 3, g10, mask=m)
        tl.store(gb + 4, g11, mask=m)
        tl.store(gb + 5, g12, mask=m)
        tl.store(gb + 6, g20, mask=m)
        tl.store(gb + 7, g21, mask=m)
        tl.store(gb + 8, g22, mask=m)

    @triton.jit
    def _smoothness_fwd(d, idx, w, partial, N, K, BLOCK: tl.constexpr):
        pid, p = tl.program_id(0), tl.program_id(1)
        n = pid * BLOCK + tl.arange(0, BLOCK)
        m = n < N
        di0, di1, di2 = _load3(d, p * N + n, m)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for k in range(0, K):
            j = tl.load(idx + n * K + k, mask=m, other=0)
            wj = tl.load(w + n * K + k, mask=m, other=0.0)
            dj0, dj1, dj2 = _load3(d, p * N + j, m)
            r0, r1, r2 = dj0 - di0, dj1 - di1, dj2 - di2
            acc += tl.where(m, tl.sqrt(wj * (r0 * r0 + r1 * r1 + r2 * r2) + 1e-20), 0.0)
        tl.store(partial + p * tl.num_programs(0) + pid, tl.sum(acc, axis=0))

    @triton.jit
    def _smoothness_bwd(d, idx, w, g_ptr, gd, N, K, BLOCK: tl.constexpr):
        pid, p = tl.program_id(0), tl.program_id(1)
        n = pid * BLOCK + tl.arange(0, BLOCK)
        m = n < N
        scale = tl.load(g_ptr)
        di0, di1, di2 = _load3(d, p * N + n, m)
        z = tl.zeros((BLOCK,), dtype=tl.float32)
        gi0, gi1, gi2 = z, z, z
        for k in range(0, K):
            j = tl.load(idx + n * K + k, mask=m, other=0)
            wj = tl.load(w + n * K + k, mask=m, other=0.0)
            dj0, dj1, dj2 = _load3(d, p * N + j, m)
            r0, r1, r2 = dj0 - di0, dj1 - di1, dj2 - di2
            coef = scale * wj / tl.sqrt(wj * (r0 * r0 + r1 * r1 + r2 * r2) + 1e-20)
            _add3(gd, p * N + j, coef * r0, coef * r1, coef * r2, m)
            gi0 -= coef * r0
            gi1 -= coef * r1
            gi2 -= coef * r2
        _add3(gd, p * N + n, gi0, gi1, gi2, m)


def _grid(P: int, N: int) -> tuple[int, int]:
    return (triton.cdiv(N, BLOCK_N), P)


class _Rigidity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_prev: Tensor, x_cur: Tensor, back: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        P, N = x_prev.shape[:2]
        K = indices.shape[1]
        grid = _grid(P, N)
        partial = torch.empty(grid[0] * P, device=x_prev.device, dtype=torch.float32)
        launch(_rigidity_fwd, grid, "kNN rigidity", x_prev, x_cur, back, indices, weights, partial, N, K,
               BLOCK=BLOCK_N)
        ctx.save_for_backward(x_prev, x_cur, back, indices, weights)
        return partial.sum() / (P * N * K)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x_prev, x_cur, back, indices, weights = ctx.saved_tensors
        P, N = x_prev.shape[:2]
        K = indices.shape[1]
        scale = (grad / (P * N * K)).float().reshape(1).contiguous()  # stays on the device: no host sync
        gxp, gxc, gback = torch.zeros_like(x_prev), torch.zeros_like(x_cur), torch.empty_like(back)
        launch(_rigidity_bwd, _grid(P, N), "kNN rigidity", x_prev, x_cur, back, indices, weights, scale, gxp, gxc,
               gback, N, K, BLOCK=BLOCK_N)
        return gxp, gxc, gback, None, None


class _Smoothness(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        P, N = d.shape[:2]
        K = indices.shape[1]
        grid = _grid(P, N)
        partial = torch.empty(grid[0] * P, device=d.device, dtype=torch.float32)
        launch(_smoothness_fwd, grid, "kNN smoothness", d, indices, weights, partial, N, K, BLOCK=BLOCK_N)
        ctx.save_for_backward(d, indices, weights)
        return partial.sum() / (P * N * K)

    @staticmethod
    def backward(ctx, grad: Tensor):
        d, indices, weights = ctx.saved_tensors
        P, N = d.shape[:2]
        K = indices.shape[1]
        scale = (grad / (P * N * K)).float().reshape(1).contiguous()
        gd = torch.zeros_like(d)
        launch(_smoothness_bwd, _grid(P, N), "kNN smoothness", d, indices, weights, scale, gd, N, K, BLOCK=BLOCK_N)
        return gd, None, None


def _check(*tensors: Tensor) -> None:
    if triton is None:
        raise ImportError("the Triton kNN-loss kernels need Triton (it comes with CUDA builds of torch on Linux); "
                          "set kernels=torch to use the torch twins")
    dev = tensors[0].device
    if dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":  # the interpreter runs on CPU
        raise ValueError(f"the Triton kNN-loss kernels need CUDA tensors, got tensors on {dev}; use the torch "
                         "twins (kernels=torch or auto)")
    for t in tensors:
        if t.dtype != torch.float32:
            raise ValueError(f"the Triton kNN-loss kernels take float32 tensors, got {t.dtype}")


def _table(indices: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    return indices.to(torch.int32).contiguous(), weights.float().contiguous()


def knn_rigidity_triton(x_prev: Tensor, x_cur: Tensor, back: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """The fused rigidity loss: inputs as ``knn_losses_torch.knn_rigidity_torch``, float32 on CUDA."""
    _check(x_prev, x_cur, back)
    idx, w = _table(indices, weights)
    return _Rigidity.apply(x_prev.contiguous(), x_cur.contiguous(), back.contiguous(), idx, w)


def knn_smoothness_triton(d: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """The fused local-scale smoothness: inputs as ``knn_losses_torch.knn_smoothness_torch``, float32 on CUDA."""
    _check(d)
    idx, w = _table(indices, weights)
    return _Smoothness.apply(d.contiguous(), idx, w)
