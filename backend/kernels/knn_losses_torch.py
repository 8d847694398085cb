"""Stage 2's kNN regularisers in pure torch: the CPU path and the Triton kernels' oracle.

Both are means over P frame pairs × N Gaussians × K neighbours (each Gaussian's K nearest canonical
neighbours ``indices`` (N, K), itself included, with weights ``weights`` (N, K)) of a robust length
sqrt(w · |r|² + 1e-20):

- local rigidity: r = o_prev − M · o_cur, where o = x[j] − x[i] are a Gaussian's offsets to its
  neighbours at the two frames and M (P, N, 3, 3) takes the current frame's offsets back into the
  previous frame's orientation (the transposed relative rotation of Gaussian i);
- local-scale smoothness: r = d[j] − d[i] for per-Gaussian log-scale changes d (P, N, 3).

The neighbour gathers x[j] go through :func:`gather_neighbours`, whose backward sums each Gaussian's
gradient over the places it is a neighbour in a fixed order. Plain advanced indexing (``x[..., indices, :]``)
differentiates into ``index_put_(accumulate=True)``, which ATen runs on the CPU as a parallel loop of
atomic float adds once the scattered tensor has 32768 elements or more and more than one thread is in
use: from about 1366 Gaussians at K = 8 the gradients, and so whole fits, changed from one run to the next.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

EPS = 1e-20


def neighbour_groups(indices: Tensor) -> tuple[Tensor, Tensor]:
    """indices (N, K) → (order (N·K,), counts (N,)): the flat positions of ``indices`` grouped by the
    Gaussian they name (a stable sort, so ascending (i, k) within a group) and each group's size.
    What :func:`gather_neighbours` sums its gradient by; one table's groups serve every gather over it."""
    flat = indices.reshape(-1)
    return torch.argsort(flat, stable=True), torch.bincount(flat, minlength=indices.shape[0])


class _GatherNeighbours(torch.autograd.Function):
    """``x[..., indices, :]`` with a run-to-run reproducible backward on every thread count.

    Backward takes the upstream gradient's rows in ``neighbour_groups`` order and sums each group
    sequentially with ``torch.segment_reduce``: the order, and so the bits, of the serial ``index_put_``
    the plain indexing uses below ATen's parallel threshold, whatever the thread count.
    """

    @staticmethod
    def forward(ctx, x: Tensor, indices: Tensor, order: Tensor, counts: Tensor) -> Tensor:
        n, k = indices.shape
        ctx.shape = x.shape
        ctx.save_for_backward(order, counts)
        return x.index_select(-2, indices.reshape(-1)).reshape(*x.shape[:-2], n, k, x.shape[-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        order, counts = ctx.saved_tensors
        shape = ctx.shape
        g = grad.reshape(-1, order.numel(), shape[-1]).index_select(1, order)
        lengths = counts.expand(g.shape[0], counts.numel()).contiguous()
        out = torch.segment_reduce(g, "sum", lengths=lengths, axis=1)
        return out.reshape(shape), None, None, None


def gather_neighbours(x: Tensor, indices: Tensor, groups: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x (..., N, C), indices (N, K) int64 → (..., N, K, C), each Gaussian's neighbours' rows of ``x``.

    The same values as ``x[..., indices, :]``; its gradient is summed in a fixed order, so that a fit on
    the CPU is bit-reproducible at any fixed thread count (see the module docstring). ``groups``:
    ``neighbour_groups(indices)``, when several gathers share one table (computed here otherwise).
    """
    order, counts = neighbour_groups(indices) if groups is None else groups
    return _GatherNeighbours.apply(x, indices, order, counts)


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


def knn_rigidity_torch(x_prev: Tensor, x_cur: Tensor, back: Tensor, indices: Tensor, weights: Tensor,
                       groups: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x_prev, x_cur (P, N, 3), back (P, N, 3, 3) → the mean rigidity residual length (scalar).
    ``groups``: ``neighbour_groups(indices)`` when the caller keeps them with the table."""
    groups = neighbour_groups(indices) if groups is None else groups
    o_prev = gather_neighbours(x_prev, indices, groups) - x_prev[..., :, None, :]
    o_cur = gather_neighbours(x_cur, indices, groups) - x_cur[..., :, None, :]
    r = o_prev - torch.einsum("...nij,...nkj->...nki", back, o_cur)
    return torch.sqrt(weights * r.pow(2).sum(-1) + EPS).mean()


def knn_smoothness_torch(d: Tensor, indices: Tensor, weights: Tensor,
                         groups: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """d (P, N, 3) → the mean neighbour-difference length (scalar); ``groups`` as in knn_rigidity_torch."""
    diff = gather_neighbours(d, indices, groups) - d[..., :, None, :]
    return torch.sqrt(weights * diff.pow(2).sum(-1) + EPS).mean()
