"""GPU parity: the fused Triton kernels of ``backend/kernels`` against their torch twins at stage 2's
shapes.

Plane features and plane gradients must agree to float32 noise in both plane layouts, a deformation
field must give the same deltas and gradients with either kernel, and the kNN losses the same values
and gradients. Run on the GPU machine (``pytest -m gpu tests/test_kernels_gpu.py``).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("triton", reason="needs Triton (comes with CUDA builds of torch on Linux)")

from backend.config import get_preset  # noqa: E402
from backend.kernels import hexplane_features, knn_rigidity, knn_smoothness, resolve_kernels  # noqa: E402
from backend.model.deformation_field import DeformationField  # noqa: E402
from backend.optim.knn import knn_table  # noqa: E402

DEV = torch.device("cuda")
CFG = get_preset("lite").deformation


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_triton_matches_the_twin_at_stage_two_shapes(layout):
    torch.manual_seed(0)
    C, T, N, B = CFG.grid_channels, 13, 20000, 8
    sp = [torch.rand(3, C, r, r, device=DEV).contiguous(memory_format=layout).requires_grad_()
          for r in CFG.grid_resolutions]
    tp = [(1 + 0.2 * torch.randn(3, C, T, r, device=DEV)).contiguous(memory_format=layout).requires_grad_()
          for r in CFG.grid_resolutions]
    coords = torch.rand(N, 3, device=DEV) * 2.2 - 1.1
    taus = torch.linspace(-1, 1, B, device=DEV)
    a = hexplane_features(sp, tp, coords, taus, backend="torch")
    b = hexplane_features(sp, tp, coords, taus, backend="triton")
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, sp + tp, g)
    gb = torch.autograd.grad(b, sp + tp, g)
    print("forward rel", _rel(b, a), "grads rel", [round(_rel(y, x), 8) for x, y in zip(ga, gb)])
    assert _rel(b, a) < 1e-5
    for x, y in zip(ga, gb):  # atomics add in another order than grid_sample's backward
        assert _rel(y, x) < 1e-4


def test_a_deformation_field_is_the_same_with_either_kernel():
    assert resolve_kernels("auto", DEV) == "triton"
    fields = {}
    for k in ("torch", "triton"):
        torch.manual_seed(3)
        f = DeformationField(CFG, 40, kernel=k).to(DEV)
        with torch.no_grad():
            for p in f.planes.temporal:
                p.uniform_(0.5, 1.5)
            for head in (f.scale_head, f.rotation_head, f.color_head):
                torch.nn.init.normal_(head.out.weight, std=0.1)
        if k == "triton":
            f.planes.channels_last_()
        fields[k] = f
    means = (torch.rand(5000, 3, device=DEV) - 0.5) * 2
    frames = torch.tensor([0, 7, 19, 39], device=DEV)
    outs, grads = {}, {}
    for k, f in fields.items():
        d = f(means, frames)
        outs[k] = torch.cat([d.d_means, d.d_log_scales, d.d_quats, d.d_colors], -1)
        outs[k].square().sum().backward()
        grads[k] = [p.grad for p in f.parameters()]
    assert _rel(outs["triton"], outs["torch"]) < 1e-5
    for x, y in zip(grads["torch"], grads["triton"]):
        assert _rel(y, x) < 1e-4


def test_the_knn_losses_match_the_twins_at_stage_two_shapes():
    torch.manual_seed(0)
    P, N, K = 8, 17000, 16
    x = torch.randn(N, 3, device=DEV) * 0.3
    table = knn_table(x, K, 20.0)
    xp = (x + 0.01 * torch.randn(P, N, 3, device=DEV)).requires_grad_()
    xc = (x + 0.01 * torch.randn(P, N, 3, device=DEV)).requires_grad_()
    back = (torch.eye(3, device=DEV) + 0.1 * torch.randn(P, N, 3, 3, device=DEV)).requires_grad_()
    d = (0.05 * torch.randn(P, N, 3, device=DEV)).requires_grad_()
    for fn, args in ((knn_rigidity, (xp, xc, back)), (knn_smoothness, (d,))):
        a = fn(*args, table.indices, table.weights, backend="torch")
        b = fn(*args, table.indices, table.weights, backend="triton")
        ga, gb = torch.autograd.grad(a, args), torch.autograd.grad(b, args)
        print(fn.__name__, "value rel", _rel(b, a), "grads rel", [round(_rel(v, u), 8) for u, v in zip(ga, gb)])
        assert _rel(b, a) < 1e-5
        for u, v in zip(ga, gb):
            assert _rel(v, u) < 1e-4
