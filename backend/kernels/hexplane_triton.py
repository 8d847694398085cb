"""Multi-scale space-time plane features as fused Triton kernels (CUDA): same contract and gradients as
``hexplane_torch.hexplane_features_torch``, which is their oracle.

Why: the torch twin samples every plane with ``grid_sample`` into (3, C, B, N) tensors per scale, takes
their products, permutes and concatenates, and its backward scatters through ``grid_sample``'s own
backward with the products' saved inputs. One stage-2 step does this for every object and micro-batch
(8 frames × ~17 000 Gaussians × 4 scales × 32 channels). Here one program reads a block of Gaussians'
bilinear corners of all six planes of a scale, multiplies in registers and writes only the feature; the
backward recomputes the samples instead of saving them and adds the plane gradients atomically.

Layout: the kernels take the planes' strides, so any layout works; channels-last planes
(``memory_format=torch.channels_last``) make each corner read one contiguous run of C values.
Gradients flow to the planes only; coordinates and times are treated as constants (stage 2's
canonical centres are frozen), and a coordinate that requires grad is refused rather than given none.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .triton_launch import launch, tl, triton

BLOCK_N = 64  # Gaussians per program


if triton is not None:

    @triton.jit
    def _corners(coord, size):
        """Unnormalised bilinear corners of coordinates in [-1, 1] on an axis of ``size`` nodes
        (align_corners, border clamp): lower index, upper index, weight of the upper one."""
        f = (coord + 1.0) * 0.5 * (size - 1)
        f = tl.minimum(tl.maximum(f, 0.0), size - 1.0)
        f0 = tl.floor(f)
        i0 = f0.to(tl.int32)
        i1 = tl.minimum(i0 + 1, size - 1)
        return i0, i1, f - f0

    @triton.jit
    def _bilinear(ptr, chan, h0, h1, wh, w0, w1, ww, sh, sw, mask):
        """Samples (BLOCK_N, BLOCK_C) of one plane at per-point rows h and columns w."""
        v00 = tl.load(ptr + chan + (h0 * sh + w0 * sw)[:, None], mask=mask, other=0.0)
        v01 = tl.load(ptr + chan + (h0 * sh + w1 * sw)[:, None], mask=mask, other=0.0)
        v10 = tl.load(ptr + chan + (h1 * sh + w0 * sw)[:, None], mask=mask, other=0.0)
        v11 = tl.load(ptr + chan + (h1 * sh + w1 * sw)[:, None], mask=mask, other=0.0)
        wh2 = wh[:, None]
        ww2 = ww[:, None]
        return (1.0 - wh2) * ((1.0 - ww2) * v00 + ww2 * v01) + wh2 * ((1.0 - ww2) * v10 + ww2 * v11)

    @triton.jit
    def _scatter(ptr, chan, h0, h1, wh, w0, w1, ww, sh, sw, val, mask):
        """The transpose of ``_bilinear``: adds ``val`` (BLOCK_N, BLOCK_C) into the four corners."""
        wh2 = wh[:, None]
        ww2 = ww[:, None]
        tl.atomic_add(ptr + chan + (h0 * sh + w0 * sw)[:, None], val * (1.0 - wh2) * (1.0 - ww2), mask=mask,
                      sem="relaxed")
        tl.atomic_add(ptr + chan + (h0 * sh + w1 * sw)[:, None], val * (1.0 - wh2) * ww2, mask=mask, sem="relaxed")
        tl.atomic_add(ptr + chan + (h1 * sh + w0 * sw)[:, None], val * wh2 * (1.0 - ww2), mask=mask, sem="relaxed")
        tl.atomic_add(ptr + chan + (h1 * sh + w1 * sw)[:, None], val * wh2 * ww2, mask=mask, sem="relaxed")

    @triton.jit
    def _point_corners(coords, n, mn, R):
        """Each point's corners and weights on the planes' R nodes along x, y and z."""
        x0, x1, wx = _corners(tl.load(coords + n * 3 + 0, mask=mn, other=0.0), R)
        y0, y1, wy = _corners(tl.load(coords + n * 3 + 1, mask=mn, other=0.0), R)
        z0, z1, wz = _corners(tl.load(coords + n * 3 + 2, mask=mn, other=0.0), R)
        return x0, x1, wx, y0, y1, wy, z0, z1, wz

    @triton.jit
    def _spatial(sp, sc, x0, x1, wx, y0, y1, wy, z0, z1, wz, s_k, s_h, s_w, mask):
        """Samples of the three spatial planes: xy, xz, yz (width axis first)."""
        s0 = _bilinear(sp, sc, y0, y1, wy, x0, x1, wx, s_h, s_w, mask)
        s1 = _bilinear(sp + s_k, sc, z0, z1, wz, x0, x1, wx, s_h, s_w, mask)
        s2 = _bilinear(sp + 2 * s_k, sc, z0, z1, wz, y0, y1, wy, s_h, s_w, mask)
        return s0, s1, s2

    @triton.jit
    def _time_rows(taus, b, T, like_i, like_w):
        """Frame b's two time rows and the upper one's weight, broadcast to the block's shapes."""
        i0, i1, w = _corners(tl.load(taus + b), T)
        return tl.zeros_like(like_i) + i0, tl.zeros_like(like_i) + i1, tl.zeros_like(like_w) + w

    @triton.jit
    def _temporal(tp, tc, h0, h1, wt, x0, x1, wx, y0, y1, wy, z0, z1, wz, t_k, t_h, t_w, mask):
        """Samples of the three space-time planes: x-tau, y-tau, z-tau."""
        t0 = _bilinear(tp, tc, h0, h1, wt, x0, x1, wx, t_h, t_w, mask)
        t1 = _bilinear(tp + t_k, tc, h0, h1, wt, y0, y1, wy, t_h, t_w, mask)
        t2 = _bilinear(tp + 2 * t_k, tc, h0, h1, wt, z0, z1, wz, t_h, t_w, mask)
        return t0, t1, t2

    @triton.jit
    def _hexplane_fwd(coords, taus, sp, tp, out, N, B, R, T, C, OC, c_off,
                      s_k, s_c, s_h, s_w, t_k, t_c, t_h, t_w,
                      BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
        pid = tl.program_id(0)
        n = pid * BLOCK + tl.arange(0, BLOCK)
        mn = n < N
        c = tl.arange(0, BLOCK_C)
        mask = mn[:, None] & (c < C)[None, :]
        x0, x1, wx, y0, y1, wy, z0, z1, wz = _point_corners(coords, n, mn, R)
        sc = (c * s_c)[None, :]
        s0, s1, s2 = _spatial(sp, sc, x0, x1, wx, y0, y1, wy, z0, z1, wz, s_k, s_h, s_w, mask)
        s = s0 * s1 * s2
        tc = (c * t_c)[None, :]
        o = out + (n * OC)[:, None] + c_off + c[None, :]
        for b in range(0, B):
            h0, h1, wt = _time_rows(taus, b, T, x0, wx)
            t0, t1, t2 = _temporal(tp, tc, h0, h1, wt, x0, x1, wx, y0, y1, wy, z0, z1, wz, t_k, t_h, t_w, mask)
            tl.store(o + b * N * OC, s * (t0 * t1 * t2), mask=mask)

    @triton.jit
    def _hexplane_bwd(coords, taus, sp, tp, grad, gsp, gtp, N, B, R, T, C, OC, c_off,
                      s_k, s_c, s_h, s_w, t_k, t_c, t_h, t_w,
                      BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
        pid = tl.program_id(0)
        n = pid * BLOCK + tl.arange(0, BLOCK)
        mn = n < N
        c = tl.arange(0, BLOCK_C)
        mask = mn[:, None] & (c < C)[None, :]
        x0, x1, wx, y0, y1, wy, z0, z1, wz = _point_corners(coords, n, mn, R)
        sc = (c * s_c)[None, :]
        s0, s1, s2 = _spatial(sp, sc, x0, x1, wx, y0, y1, wy, z0, z1, wz, s_k, s_h, s_w, mask)
        s = s0 * s1 * s2
        tc = (c * t_c)[None, :]
        g_ptr = grad + (n * OC)[:, None] + c_off + c[None, :]
        acc = tl.zeros((BLOCK, BLOCK_C), dtype=tl.float32)  # sum over frames of grad × temporal product
        for b in range(0, B):
            g = tl.load(g_ptr + b * N * OC, mask=mask, other=0.0)
            h0, h1, wt = _time_rows(taus, b, T, x0, wx)
            t0, t1, t2 = _temporal(tp, tc, h0, h1, wt, x0, x1, wx, y0, y1, wy, z0, z1, wz, t_k, t_h, t_w, mask)
            acc += g * (t0 * t1 * t2)
            gs = g * s
            _scatter(gtp, tc, h0, h1, wt, x0, x1, wx, t_h, t_w, gs * (t1 * t2), mask)
            _scatter(gtp + t_k, tc, h0, h1, wt, y0, y1, wy, t_h, t_w, gs * (t0 * t2), mask)
            _scatter(gtp + 2 * t_k, tc, h0, h1, wt, z0, z1, wz, t_h, t_w, gs * (t0 * t1), mask)
        _scatter(gsp, sc, y0, y1, wy, x0, x1, wx, s_h, s_w, acc * (s1 * s2), mask)
        _scatter(gsp + s_k, sc, z0, z1, wz, x0, x1, wx, s_h, s_w, acc * (s0 * s2), mask)
        _scatter(gsp + 2 * s_k, sc, z0, z1, wz, y0, y1, wy, s_h, s_w, acc * (s0 * s1), mask)


def _launch(kernel, coords: Tensor, taus: Tensor, planes: tuple[Tensor, ...], buffers: tuple[Tensor, ...],
            OC: int) -> None:
    """One launch per scale over blocks of Gaussians; ``buffers`` are the output (forward) or the grad
    of the output and the plane gradients (backward)."""
    S = len(planes) // 2
    N, B = coords.shape[0], taus.shape[0]
    C, T = planes[0].shape[1], planes[S].shape[2]
    grid = (triton.cdiv(N, BLOCK_N),)
    for s in range(S):
        sp, tp = planes[s], planes[S + s]
        extra = buffers if len(buffers) == 1 else (buffers[0], buffers[1 + s], buffers[1 + S + s])
        launch(kernel, grid, "plane-feature", coords, taus, sp, tp, *extra, N, B, sp.shape[-1], T, C, OC, s * C,
               *sp.stride(), *tp.stride(), BLOCK=BLOCK_N, BLOCK_C=triton.next_power_of_2(C))


class _HexPlaneFeatures(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coords: Tensor, taus: Tensor, *planes: Tensor) -> Tensor:
        S = len(planes) // 2
        C = planes[0].shape[1]
        out = torch.empty(taus.shape[0], coords.shape[0], C * S, device=coords.device, dtype=torch.float32)
        _launch(_hexplane_fwd, coords, taus, planes, (out,), C * S)
        ctx.save_for_backward(coords, taus, *planes)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        coords, taus, *planes = ctx.saved_tensors
        grads = tuple(torch.zeros_like(p) for p in planes)  # zeros_like keeps each plane's layout
        _launch(_hexplane_bwd, coords, taus, tuple(planes), (grad.contiguous(), *grads), grad.shape[-1])
        return (None, None, *grads)


def hexplane_features_triton(spatial: list[Tensor], temporal: list[Tensor], coords: Tensor, taus: Tensor) -> Tensor:
    """The fused kernels: float32 CUDA tensors, inputs as ``hexplane_torch.check_hexplane_inputs`` says
    → features (B, N, C · scales), differentiable in the planes."""
    if triton is None:
        raise ImportError("the Triton hexplane kernel needs Triton (it comes with CUDA builds of torch on "
                          "Linux); set kernels=torch to use the torch twin")
    if coords.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":  # the interpreter runs on CPU
        raise ValueError(f"the Triton hexplane kernel needs CUDA tensors, got tensors on {coords.device}; "
                         "use the torch twin (kernels=torch or auto)")
    if coords.requires_grad or taus.requires_grad:
        raise ValueError("the Triton hexplane kernel differentiates in the planes only; coordinates and "
                         "times that require grad need the torch twin (kernels=torch)")
    if spatial[0].dtype != torch.float32:
        raise ValueError(f"the Triton hexplane kernel takes float32 planes, got {spatial[0].dtype}")
    return _HexPlaneFeatures.apply(coords.float().contiguous(), taus.float().contiguous(), *spatial, *temporal)
