"""The deformation field's plane-feature kernel: the torch twin against a hand-written bilinear read, the
fused Triton kernel against the twin (in Triton's CPU interpreter here, on CUDA in the GPU test), and the
dispatch rules."""

from __future__ import annotations

import pytest
import torch

from backend.config import get_preset
from backend.kernels import hexplane_features, resolve_kernels
from backend.kernels.hexplane_torch import hexplane_features_torch
from backend.model.deformation_field import DeformationField
from conftest import run_interpreted


def _planes(C=3, T=5, res=(4, 6), seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    sp = [torch.rand(3, C, r, r, generator=g) for r in res]
    tp = [1 + 0.3 * torch.randn(3, C, T, r, generator=g) for r in res]
    if channels_last:
        sp = [p.contiguous(memory_format=torch.channels_last) for p in sp]
        tp = [p.contiguous(memory_format=torch.channels_last) for p in tp]
    return sp, tp


def _read(plane, u, v):
    """Bilinear read of plane (C, H, W) at u (width) and v (height) in [-1, 1], border-clamped, corners aligned."""
    H, W = plane.shape[1:]
    fx = min(max((u + 1) / 2 * (W - 1), 0.0), W - 1.0)
    fy = min(max((v + 1) / 2 * (H - 1), 0.0), H - 1.0)
    x0, y0 = int(fx), int(fy)
    x1, y1 = min(x0 + 1, W - 1), min(y0 + 1, H - 1)
    wx, wy = fx - x0, fy - y0
    return ((1 - wy) * ((1 - wx) * plane[:, y0, x0] + wx * plane[:, y0, x1])
            + wy * ((1 - wx) * plane[:, y1, x0] + wx * plane[:, y1, x1]))


def test_the_twin_reads_each_plane_on_its_own_axes_with_border_clamping():
    sp, tp = _planes()
    coords = torch.tensor([[0.3, -0.7, 0.55], [1.4, -2.0, 0.0], [-1.0, 1.0, 0.999]])
    taus = torch.tensor([-1.0, 0.25, 1.3])
    out = hexplane_features_torch(sp, tp, coords, taus)
    assert out.shape == (3, 3, 3 * 2)
    for b, tau in enumerate(taus.tolist()):
        for n, (x, y, z) in enumerate(coords.tolist()):
            want = []
            for s in range(2):
                spatial = _read(sp[s][0], x, y) * _read(sp[s][1], x, z) * _read(sp[s][2], y, z)
                temporal = _read(tp[s][0], x, tau) * _read(tp[s][1], y, tau) * _read(tp[s][2], z, tau)
                want.append(spatial * temporal)
            torch.testing.assert_close(out[b, n], torch.cat(want), rtol=1e-5, atol=1e-6)


def test_the_twin_reads_channels_last_planes_the_same():
    coords = torch.rand(20, 3) * 2 - 1
    taus = torch.tensor([-0.5, 0.5])
    a = hexplane_features_torch(*_planes(), coords, taus)
    b = hexplane_features_torch(*_planes(channels_last=True), coords, taus)
    torch.testing.assert_close(a, b)


def test_channels_last_planes_keep_the_field_and_its_values():
    cfg = get_preset("cpu-tiny").deformation
    torch.manual_seed(0)
    field = DeformationField(cfg, 6)
    with torch.no_grad():
        for p in field.planes.temporal:
            p.uniform_(0.5, 1.5)
        torch.nn.init.normal_(field.scale_head.out.weight)
    pts, frames = torch.rand(30, 3) - 0.5, torch.tensor([0, 2, 5])
    before = field(pts, frames).d_log_scales
    values = [p.detach().clone() for p in field.planes.parameters()]
    ids = [id(p) for p in field.planes.parameters()]
    field.planes.channels_last_()
    assert [id(p) for p in field.planes.parameters()] == ids  # the same parameters, re-laid
    for p, v in zip(field.planes.parameters(), values):
        assert p.is_contiguous(memory_format=torch.channels_last) and torch.equal(p.detach(), v)
    torch.testing.assert_close(field(pts, frames).d_log_scales, before)


def test_dispatch_rules():
    assert resolve_kernels("auto", "cpu") == "torch"
    assert resolve_kernels("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_kernels("triton", "cpu")
    with pytest.raises(ValueError, match="must be one of"):
        resolve_kernels("cuda", "cpu")
    sp, tp = _planes()
    with pytest.raises(ValueError, match="temporal planes of scale 1"):
        hexplane_features(sp, [tp[0], tp[1][:, :, :3]], torch.zeros(4, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="coords must have shape"):
        hexplane_features(sp, tp, torch.zeros(4, 2), torch.zeros(2))


def test_a_run_asking_for_triton_on_the_cpu_is_refused_before_any_work(sample_clip, tmp_path):
    from test_pipeline import _no_heavy_stage, backend, clip_args

    code, events, _ = backend(*clip_args(sample_clip, tmp_path / "out"), "--preset", "cpu-tiny", "--device", "cpu",
                              "--set", "kernels=triton")
    assert code == 2 and "kernels=triton needs a CUDA device" in events[-1].get("error")
    assert "kernels=auto" in events[-1].get("hint") and _no_heavy_stage(events)


# Run in a fresh process by Triton's CPU interpreter (conftest.run_interpreted).
_INTERPRETED = r"""
import json, sys, torch
from backend.kernels.hexplane_torch import hexplane_features_torch
from backend.kernels.hexplane_triton import hexplane_features_triton
torch.manual_seed(0)
report = {}
for name, C, res, cl in (("odd channels", 5, (4, 6), False), ("channels-last", 8, (4, 7), True)):
    T = 7
    sp = [torch.rand(3, C, r, r) for r in res]
    tp = [1 + 0.3 * torch.randn(3, C, T, r) for r in res]
    if cl:
        sp = [p.contiguous(memory_format=torch.channels_last) for p in sp]
        tp = [p.contiguous(memory_format=torch.channels_last) for p in tp]
    sp = [p.requires_grad_() for p in sp]
    tp = [p.requires_grad_() for p in tp]
    coords = torch.rand(70, 3) * 2.6 - 1.3  # 70 > one block of 64, some beyond the planes
    coords[0] = torch.tensor([1.0, -1.0, 0.999])
    taus = torch.tensor([-1.0, 0.13, 0.5, 1.2])
    a = hexplane_features_torch(sp, tp, coords, taus)
    b = hexplane_features_triton(sp, tp, coords, taus)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, sp + tp, g)
    gb = torch.autograd.grad(b, sp + tp, g)
    report[name] = {"forward": (a - b).abs().max().item(), "scale": a.abs().max().item(),
                    "grads": max((x - y).abs().max().item() / x.abs().max().item() for x, y in zip(ga, gb)),
                    "grad_layouts_kept": all(y.stride() == p.stride() for y, p in zip(gb, sp + tp))}
try:
    hexplane_features_triton(sp, tp, coords.requires_grad_(), taus)
    report["refused"] = None
except ValueError as e:
    report["refused"] = str(e)
print(json.dumps(report))
"""


def test_the_triton_kernel_matches_the_twin_in_the_interpreter():
    report = run_interpreted(_INTERPRETED)
    for name in ("odd channels", "channels-last"):
        r = report[name]
        assert r["forward"] <= 1e-5 * r["scale"], (name, r)
        assert r["grads"] <= 1e-5, (name, r)
        assert r["grad_layouts_kept"], (name, r)
    assert report["refused"] and "coordinates" in report["refused"]


def test_the_field_runs_with_the_kernel_named_in_its_config():
    cfg = get_preset("cpu-tiny").deformation
    assert DeformationField(cfg, 4, kernel="torch").planes.kernel == "torch"
    with pytest.raises(ValueError, match="kernel must be one of"):
        DeformationField(cfg, 4, kernel="fast")


def test_a_kernel_that_fails_on_the_gpu_names_the_torch_twins():
    pytest.importorskip("triton", reason="Triton is not installed (requirements/cpu.txt has it)")
    from backend.errors import GenmojoError
    from backend.kernels.triton_launch import launch

    class Unsupported:  # what Triton raises on a GPU it cannot compile for
        def __getitem__(self, grid):
            def run(*args, **meta):
                raise RuntimeError("no kernel image is available for execution on the device")
            return run

    with pytest.raises(GenmojoError, match="the Triton plane-feature kernel failed on this GPU") as e:
        launch(Unsupported(), (1,), "plane-feature", 1, 2, BLOCK=64)
    assert "kernels=torch" in e.value.hint and "Config Overrides" in e.value.hint
