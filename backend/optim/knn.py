"""Nearest neighbours within one object's canonical Gaussians, for the local regularisers.

Computed once per object on its canonical centres (they are frozen in stage 2), in row chunks so the
full distance matrix of ~15 000 Gaussians never has to exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.knn_losses_torch import neighbour_groups


@dataclass
class KnnTable:
    """For each of N Gaussians its k nearest (itself included): indices (N,k), weights exp(−s·d) (N,k);
    ``groups``, ``neighbour_groups(indices)``, which the losses' reproducible backward sums by: the
    table is fixed for the whole fit, so they are sorted once here rather than in every loss call."""

    indices: torch.Tensor
    weights: torch.Tensor
    groups: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = neighbour_groups(self.indices)


@torch.no_grad()
def knn_table(means: torch.Tensor, k: int, weight_scale: float, chunk: int = 2048) -> KnnTable:
    """The ``k`` nearest neighbours of every point of ``means`` (N,3), with weights exp(−scale·distance)."""
    n = means.shape[0]
    k = min(k, n)
    idx, dist = [], []
    for s in range(0, n, chunk):
        d = torch.cdist(means[s:s + chunk], means)
        v, i = d.topk(k, dim=-1, largest=False)
        idx.append(i)
        dist.append(v)
    d = torch.cat(dist)
    return KnnTable(indices=torch.cat(idx), weights=torch.exp(-weight_scale * d))
