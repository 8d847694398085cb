"""Stage 2's kNN regularisers: the torch twins against a per-neighbour loop, the fused Triton kernels
against the twins in Triton's CPU interpreter (the GPU parity test is in ``test_kernels_gpu.py``)."""

from __future__ import annotations

import pytest
import torch

from backend.kernels import knn_rigidity, knn_smoothness
from backend.optim.knn import knn_table
from conftest import run_interpreted


def _case(P=2, N=12, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, generator=g)
    t = knn_table(x, K, 1.5)
    xp = x + 0.1 * torch.randn(P, N, 3, generator=g)
    xc = x + 0.1 * torch.randn(P, N, 3, generator=g)
    back = torch.eye(3) + 0.3 * torch.randn(P, N, 3, 3, generator=g)
    d = torch.randn(P, N, 3, generator=g)
    return xp, xc, back, d, t


def test_the_twins_are_the_mean_of_the_per_neighbour_lengths():
    xp, xc, back, d, t = _case()
    P, N, K = xp.shape[0], xp.shape[1], t.indices.shape[1]
    rig, smooth = [], []
    for p in range(P):
        for i in range(N):
            for k in range(K):
                j, w = int(t.indices[i, k]), float(t.weights[i, k])
                r = (xp[p, j] - xp[p, i]) - back[p, i] @ (xc[p, j] - xc[p, i])
                rig.append(torch.sqrt(w * r.square().sum() + 1e-20))
                smooth.append(torch.sqrt(w * (d[p, j] - d[p, i]).square().sum() + 1e-20))
    torch.testing.assert_close(knn_rigidity(xp, xc, back, t.indices, t.weights), torch.stack(rig).mean())
    torch.testing.assert_close(knn_smoothness(d, t.indices, t.weights), torch.stack(smooth).mean())


def test_a_rigid_motion_costs_nothing_and_a_bend_does():
    xp, _, _, _, t = _case(P=1, N=40, K=6)
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))[0]
    xc = xp @ R.T + torch.tensor([0.5, -1.0, 2.0])
    back = R.T.expand(1, 40, 3, 3)  # every Gaussian turned by R: its offsets come back with Rᵀ
    assert knn_rigidity(xp, xc, back, t.indices, t.weights) < 1e-4
    bent = xc.clone()
    bent[0, :20] += 0.3
    assert knn_rigidity(xp, bent, back, t.indices, t.weights) > 1e-2


def test_the_neighbour_gather_has_plain_indexings_gradient_and_repeats_it_on_two_threads():
    """``gather_neighbours`` (the twins' gather) gives ``x[..., indices, :]``'s values and the gradient that
    plain indexing's serial scatter gives, bit for bit, and the same gradient on every call with 2 threads.
    At 1400 Gaussians x 8 neighbours x 3 the scatter is past ATen's 32768-element parallel threshold, where
    plain indexing's backward (atomic adds on several threads) differed from call to call."""
    from backend.kernels.knn_losses_torch import gather_neighbours

    g = torch.Generator().manual_seed(0)
    P, N, K = 2, 1400, 8
    t = knn_table(torch.randn(N, 3, generator=g), K, 1.0)
    x = torch.randn(P, N, 3, generator=g)
    up = torch.randn(P, N, K, 3, generator=g)

    def grad(gather):
        xx = x.clone().requires_grad_()
        out = gather(xx)
        (out * up).sum().backward()
        return out.detach(), xx.grad

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref_out, ref_grad = grad(lambda v: v[..., t.indices, :])
        torch.set_num_threads(2)
        runs = [grad(lambda v: gather_neighbours(v, t.indices)) for _ in range(8)]
    finally:
        torch.set_num_threads(threads)
    for out, gx in runs:
        assert torch.equal(out, ref_out) and torch.equal(gx, ref_grad)


def test_the_tables_groups_give_the_losses_and_gradients_computed_per_call():
    """A ``KnnTable`` sorts its neighbour groups once; passing them changes neither the losses nor their
    gradients, bit for bit, from the groups the torch twins compute themselves."""
    from backend.kernels.knn_losses_torch import neighbour_groups

    xp, xc, back, d, t = _case()
    order, counts = neighbour_groups(t.indices)
    assert torch.equal(t.groups[0], order) and torch.equal(t.groups[1], counts)

    def run(groups):
        ins = [v.clone().requires_grad_() for v in (xp, xc, back, d)]
        loss = (knn_rigidity(*ins[:3], t.indices, t.weights, backend="torch", groups=groups)
                + knn_smoothness(ins[3], t.indices, t.weights, backend="torch", groups=groups))
        loss.backward()
        return [loss.detach()] + [v.grad for v in ins]

    for a, b in zip(run(t.groups), run(None)):
        assert torch.equal(a, b)


def test_shapes_are_checked():
    xp, xc, back, d, t = _case()
    with pytest.raises(ValueError, match="back must be"):
        knn_rigidity(xp, xc, back[:, :, :2], t.indices, t.weights)
    with pytest.raises(ValueError, match="indices and weights"):
        knn_smoothness(d, t.indices[:5], t.weights)
    with pytest.raises(ValueError, match=r"d must be \(P, N, 3\)"):
        knn_smoothness(d[0], t.indices, t.weights)


_INTERPRETED = r"""
import json, torch
from backend.kernels.knn_losses_torch import knn_rigidity_torch, knn_smoothness_torch
from backend.kernels.knn_losses_triton import knn_rigidity_triton, knn_smoothness_triton
from backend.optim.knn import knn_table
torch.manual_seed(0)
P, N, K = 3, 150, 6  # 150 > one block of 128
x = torch.randn(N, 3)
t = knn_table(x, K, 2.0)
xp = (x + 0.1 * torch.randn(P, N, 3)).requires_grad_()
xc = (x + 0.1 * torch.randn(P, N, 3)).requires_grad_()
back = (torch.eye(3) + 0.2 * torch.randn(P, N, 3, 3)).requires_grad_()
d = torch.randn(P, N, 3, requires_grad=True)
rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
a, b = knn_rigidity_torch(xp, xc, back, t.indices, t.weights), knn_rigidity_triton(xp, xc, back, t.indices, t.weights)
ga, gb = torch.autograd.grad(2.5 * a, (xp, xc, back)), torch.autograd.grad(2.5 * b, (xp, xc, back))
report = {"rigidity": rel(b, a), "rigidity_grads": max(rel(v, u) for u, v in zip(ga, gb))}
a, b = knn_smoothness_torch(d, t.indices, t.weights), knn_smoothness_triton(d, t.indices, t.weights)
report["smoothness"] = rel(b, a)
report["smoothness_grad"] = rel(torch.autograd.grad(-b, d)[0], torch.autograd.grad(-a, d)[0])
try:
    knn_smoothness_triton(d.double(), t.indices, t.weights)
    report["refused"] = None
except ValueError as e:
    report["refused"] = str(e)
print(json.dumps(report))
"""


def test_the_triton_kernels_match_the_twins_in_the_interpreter():
    r = run_interpreted(_INTERPRETED)
    assert r["rigidity"] < 1e-5 and r["smoothness"] < 1e-5, r
    assert r["rigidity_grads"] < 1e-5 and r["smoothness_grad"] < 1e-5, r
    assert r["refused"] and "float32" in r["refused"]


def test_the_losses_dispatch_to_the_kernel_the_switch_names(monkeypatch):
    import backend.kernels as K

    calls = []
    monkeypatch.setattr(K, "knn_rigidity_triton", lambda *a: calls.append("rigidity"))
    monkeypatch.setattr(K, "knn_smoothness_triton", lambda *a: calls.append("smoothness"))
    monkeypatch.setattr(K, "resolve_kernels", lambda backend, device: "triton" if backend != "torch" else "torch")
    x = torch.zeros(1, 4, 3)
    idx = torch.zeros(4, 2, dtype=torch.long)
    w = torch.ones(4, 2)
    back = torch.eye(3).expand(1, 4, 3, 3)
    K.knn_rigidity(x, x, back, idx, w, backend="auto")
    K.knn_smoothness(torch.zeros(1, 4, 3), idx, w, backend="auto")
    assert calls == ["rigidity", "smoothness"]
    assert float(K.knn_rigidity(x, x, back, idx, w, backend="torch")) < 1e-9  # the twin (eps), not the stand-in
