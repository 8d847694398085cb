"""The GenMOJO per-object deformation field: identity start, bases, plane sampling, sizes, groups."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from backend.config import DeformationConfig, get_preset
from backend.model.deformation_field import DeformationDelta, DeformationField, time_resolution
from backend.model.hexplane import HexPlane

# the spec's translation bases; the rigid (se3) bases, the default, are tested below as SE3
TINY = dataclasses.replace(get_preset("cpu-tiny").deformation, motion_bases="translation")
T = 10


def _points(n: int = 50, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) * 2 - 1) * TINY.bounds * 1.3  # some beyond the bounds
    pts[0] = torch.tensor([TINY.bounds * 3, -TINY.bounds * 2, 0.0])
    return pts


def _randomise(layer: nn.Linear, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)


def _fully_random_field(seed: int = 0) -> DeformationField:
    """Parity init plus non-zero output layers and time planes: every path is active."""
    torch.manual_seed(seed)
    field = DeformationField(dataclasses.replace(TINY, parity_random_init=True), T)
    for i, head in enumerate((field.coeff_head, field.scale_head, field.rotation_head, field.color_head)):
        _randomise(head.out, seed + i)
    with torch.no_grad():
        for p in field.planes.temporal:
            p.uniform_(0.5, 1.5)
    return field


def _loss(d: DeformationDelta) -> torch.Tensor:
    return sum(((t - 0.3) ** 2).sum() for t in (d.d_means, d.d_log_scales, d.d_quats, d.d_colors))


def test_identity_at_init_default_config():
    assert TINY.parity_random_init is False
    torch.manual_seed(1)
    field = DeformationField(TINY, T)
    frames = torch.tensor([0, 3, 5, 9, 5])  # 5 is tau = 0
    d = field(_points(), frames)
    for name, t, c in (("d_means", d.d_means, 3), ("d_log_scales", d.d_log_scales, 3),
                       ("d_quats", d.d_quats, 4), ("d_colors", d.d_colors, 3)):
        assert t.shape == (5, 50, c), name
        assert torch.equal(t, torch.zeros_like(t)), name
    assert torch.equal(field.bases(torch.arange(T)), torch.zeros(T, TINY.num_bases, 3))


def test_parity_init_moves_points_depending_on_time():
    torch.manual_seed(2)
    field = DeformationField(dataclasses.replace(TINY, parity_random_init=True), T)
    d = field(_points(), torch.tensor([0, 2, 9]))
    assert d.d_means.abs().amax(dim=(1, 2)).min() > 1e-4  # non-zero at every frame
    assert not torch.allclose(d.d_means[0], d.d_means[1])
    assert not torch.allclose(d.d_means[0], d.d_means[2])
    # the public init starts the coefficients uniform: every Gaussian moves by the mean basis vector
    expected = field.bases(torch.tensor([0, 2, 9])).mean(dim=1)
    torch.testing.assert_close(d.d_means, expected[:, None, :].expand_as(d.d_means))
    assert d.d_colors.abs().max() > 0
    assert torch.equal(d.d_log_scales, torch.zeros_like(d.d_log_scales))
    assert torch.equal(d.d_quats, torch.zeros_like(d.d_quats))


def test_coefficients_are_softmax_and_weight_the_bases():
    field = _fully_random_field()
    pts, frames = _points(), torch.tensor([1, 4, 8])
    c = field.coefficients(pts, frames)
    assert c.shape == (3, 50, TINY.num_bases)
    assert (c > 0).all()
    torch.testing.assert_close(c.sum(-1), torch.ones(3, 50))
    assert c.std(dim=-1).max() > 1e-3  # not uniform: the test exercises the softmax
    d = field(pts, frames)
    torch.testing.assert_close(d.d_means, torch.einsum("bnk,bkd->bnd", c, field.bases(frames)))


def test_gradients_reach_grids_trunk_heads_and_bases():
    field = _fully_random_field()
    _loss(field(_points(), torch.tensor([0, 3, 7]))).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_identity_init_trains():
    torch.manual_seed(3)
    field = DeformationField(TINY, T)
    pts, frames = _points(), torch.tensor([0, 3, 7])
    _loss(field(pts, frames)).backward()
    for layer in (field.basis_mlp[-1], field.scale_head.out, field.rotation_head.out, field.color_head.out):
        assert layer.weight.grad.abs().max() > 0
        assert layer.bias.grad.abs().max() > 0
    # while the bases are zero the coefficients do not affect the output, so they get no gradient yet
    assert torch.equal(field.coeff_head.out.weight.grad, torch.zeros_like(field.coeff_head.out.weight))
    opt = torch.optim.Adam(field.param_groups(1e-2, 1e-2, 0.0, 0.0))
    opt.step()
    opt.zero_grad()
    _loss(field(pts, frames)).backward()  # after one step every parameter is on the gradient path
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_identity_init_learns_non_rigid_motion():
    """Zero bases with uniform coefficients would stay identical forever (a rigid translation only)."""
    torch.manual_seed(5)
    field = DeformationField(TINY, T)
    pts, frames = _points(60, seed=1).clamp(-1, 1), torch.arange(0, T, 2)
    tau = field.times(frames)
    side = torch.sign(pts[:, 0])  # the two halves of the object move in opposite directions
    target = side[None, :, None] * tau[:, None, None] * torch.tensor([0.0, 0.3, 0.0])
    opt = torch.optim.Adam(field.param_groups(1e-2, 1e-2, 0.0, 0.0))
    for _ in range(40):
        loss = ((field(pts, frames).d_means - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rigid_best = ((target - target.mean(dim=1, keepdim=True)) ** 2).mean()
    assert ((field(pts, frames).d_means - target) ** 2).mean() < 0.1 * rigid_best
    bases = field.bases(frames)
    assert (bases - bases.mean(dim=1, keepdim=True)).abs().max() > 1e-2


def _bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """Slow reference: plane (C, H, W) at u (width axis) and v (height axis), corners at ±1, clamped."""
    C, H, W = plane.shape
    px = (min(max(u, -1.0), 1.0) + 1) / 2 * (W - 1)
    py = (min(max(v, -1.0), 1.0) + 1) / 2 * (H - 1)
    x0, y0 = min(int(math.floor(px)), W - 2), min(int(math.floor(py)), H - 2)
    fx, fy = px - x0, py - y0
    return ((1 - fx) * (1 - fy) * plane[:, y0, x0] + fx * (1 - fy) * plane[:, y0, x0 + 1]
            + (1 - fx) * fy * plane[:, y0 + 1, x0] + fx * fy * plane[:, y0 + 1, x0 + 1])


def test_plane_sampling_matches_slow_reference():
    torch.manual_seed(4)
    hp = HexPlane((3, 5), channels=2, time_resolution=4)
    with torch.no_grad():
        for p in hp.temporal:
            p.uniform_(0.5, 1.5)
    coords = torch.tensor([[0.3, -0.7, 0.1], [-1.0, 1.0, 0.55], [1.4, -2.0, 0.0]], dtype=torch.float64)
    taus = torch.tensor([-1.0, 0.2, 0.9])
    out = hp(coords, taus)
    assert out.shape == (3, 3, 4)
    for b, tau in enumerate(taus.tolist()):
        for n, (x, y, z) in enumerate(coords.tolist()):
            ref = []
            for sp, tp in zip(hp.spatial, hp.temporal):
                sp, tp = sp.detach().double(), tp.detach().double()
                f = _bilinear(sp[0], x, y) * _bilinear(sp[1], x, z) * _bilinear(sp[2], y, z)
                f = f * _bilinear(tp[0], x, tau) * _bilinear(tp[1], y, tau) * _bilinear(tp[2], z, tau)
                ref.append(f)
            torch.testing.assert_close(out[b, n].double(), torch.cat(ref), rtol=1e-5, atol=1e-6)


def test_plane_init_and_time_independence_at_start():
    hp = HexPlane((4, 8), channels=3, time_resolution=6, spatial_init=(0.1, 0.5))
    for p in hp.spatial:
        assert p.min() >= 0.1 and p.max() <= 0.5 and p.std() > 0
    for p in hp.temporal:
        assert torch.equal(p, torch.ones_like(p))
    out = hp(torch.rand(7, 3) * 2 - 1, torch.tensor([-1.0, 0.0, 0.8]))
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], out[2])


def test_time_smoothness_is_zero_for_steady_change_and_penalises_a_kink():
    hp = HexPlane((4, 8), channels=2, time_resolution=7)
    assert float(hp.time_smoothness()) == 0.0  # constant planes at init
    with torch.no_grad():
        for p in hp.temporal:  # features changing linearly with time: no second difference
            p.copy_(1 + 0.3 * torch.arange(7.0)[None, None, :, None].expand_as(p))
    assert float(hp.time_smoothness()) < 1e-10
    with torch.no_grad():
        hp.temporal[1][:, :, 3] += 0.5  # one time node out of line
    kink = hp.time_smoothness()
    assert float(kink) > 1e-3
    kink.backward()
    g = hp.temporal[1].grad
    assert g[:, :, 3].sum() > 0 and g[:, :, 0].abs().max() < 1e-6  # pulls the kink back, leaves far nodes
    assert hp.temporal[0].grad.abs().max() < 1e-6  # the steady scale is left alone


def test_times():
    field = DeformationField(TINY, 8)
    torch.testing.assert_close(field.times(torch.tensor([0, 2, 4, 7])), torch.tensor([-1.0, -0.5, 0.0, 0.75]))


def test_time_resolution_default_and_spec():
    cfg = DeformationConfig()  # one node per 4 frames, at least 8
    assert time_resolution(cfg, 16) == 8 and time_resolution(cfg, 52) == 13 and time_resolution(cfg, 100) == 25
    spec = DeformationConfig(time_resolution_factor=0.8, min_time_resolution=25)
    assert time_resolution(spec, 25) == 25 and time_resolution(spec, 100) == 80


def test_parameter_count_of_the_spec_config():
    cfg = DeformationConfig(time_resolution_factor=0.8, min_time_resolution=25, motion_bases="translation")
    field = DeformationField(cfg, 25)
    C, Rs, T_res = 32, (64, 128, 256, 512), 25
    spatial = 3 * C * sum(r * r for r in Rs)
    temporal = 3 * C * sum(Rs) * T_res
    assert spatial == 33_423_360 and temporal == 92_160 * T_res
    assert sum(p.numel() for p in field.grid_parameters()) == spatial + temporal
    F, H, K, BH = C * len(Rs), 64, 10, 64
    head = lambda out: (H * H + H) + (H * out + out)  # noqa: E731
    mlp = (F * H + H) + head(K) + head(3) + head(4) + head(3) + (BH + BH) + (BH * 3 * K + 3 * K)
    assert sum(p.numel() for p in field.mlp_parameters()) == mlp
    assert sum(p.numel() for p in field.parameters()) == spatial + temporal + mlp
    # rigid bases: an axis-angle and a translation per basis instead of a displacement
    se3 = DeformationField(dataclasses.replace(cfg, motion_bases="se3"), 25)
    assert sum(p.numel() for p in se3.mlp_parameters()) == mlp + BH * 3 * K + 3 * K


def test_param_groups_cover_every_parameter_once():
    field = DeformationField(TINY, T)
    groups = field.param_groups(lr_mlp=1e-3, lr_grid=1e-2, weight_decay_mlp=0.01, weight_decay_grid=0.0)
    assert [g["name"] for g in groups] == ["deformation_mlp", "deformation_grid"]
    assert (groups[0]["lr"], groups[0]["weight_decay"]) == (1e-3, 0.01)
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (1e-2, 0.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in field.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in field.planes.parameters()}
    torch.optim.AdamW(groups)  # accepted as given


@pytest.mark.parametrize("frames", [torch.tensor([0, T]), torch.tensor([-1]), torch.tensor([0.0, 1.0]),
                                    torch.tensor([[0, 1]])])
def test_bad_frames_raise(frames):
    field = DeformationField(TINY, T)
    with pytest.raises(ValueError, match="frame"):
        field(_points(), frames)


def test_empty_inputs():
    field = _fully_random_field()
    d = field(torch.zeros(0, 3), torch.tensor([1, 2]))
    assert d.d_means.shape == (2, 0, 3) and d.d_quats.shape == (2, 0, 4)
    d = field(_points(), torch.zeros(0, dtype=torch.long))
    assert d.d_means.shape == (0, 50, 3) and d.d_colors.shape == (0, 50, 3)


def _basis_span_residual(knots: str, frames: int = 96, centre: int = 70, width: float = 3.0) -> float:
    """Relative residual of the best fit of a fast out-and-back movement (a kick of a few frames, away
    from the clip's middle) by the bases' time features as initialised, the output layer free."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("lite").deformation, basis_knots=knots)
    field = DeformationField(dataclasses.replace(cfg, grid_resolutions=(8,), grid_channels=4), frames)
    t = torch.arange(frames)
    with torch.no_grad():
        h = torch.relu(field.basis_mlp[0](field.times(t)[:, None]))
    feats = torch.cat([h, torch.ones(frames, 1)], 1).double()
    kick = torch.exp(-0.5 * ((t - centre) / width) ** 2).double()[:, None]
    sol = torch.linalg.lstsq(feats, kick, driver="gelsd").solution
    return float(torch.linalg.norm(feats @ sol - kick) / torch.linalg.norm(kick))


def test_basis_hinges_spread_over_the_clip():
    """With every hinge at the middle frame the bases start as two straight pieces and cannot bend for a
    kick late in the clip; spread hinges can represent it."""
    assert _basis_span_residual("centre") > 0.5
    assert _basis_span_residual("spread") < 0.05


def test_spread_hinges_keep_the_identity_start():
    field = DeformationField(TINY, T)
    frames = torch.arange(T)
    assert torch.equal(field.bases(frames), torch.zeros(T, TINY.num_bases, 3))
    first = field.basis_mlp[0]
    hinge = -first.bias / first.weight[:, 0]
    assert float(hinge.min()) > -1 and float(hinge.max()) < 1 and hinge.unique().numel() == first.out_features


def test_unknown_basis_knots_are_refused():
    with pytest.raises(ValueError, match="basis_knots"):
        DeformationField(dataclasses.replace(TINY, basis_knots="middle"), T)


SE3 = dataclasses.replace(TINY, motion_bases="se3")


def test_axis_angle_to_matrix():
    from backend.model.deformation_field import axis_angle_to_matrix
    v = torch.tensor([[0.0, 0.0, math.pi / 2], [0.0, 0.0, 0.0], [1e-5, 0.0, 0.0]], requires_grad=True)
    r = axis_angle_to_matrix(v)
    torch.testing.assert_close(r[0], torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(r[1], torch.eye(3))
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3).expand(3, 3, 3))
    r.sum().backward()
    assert torch.isfinite(v.grad).all()


def test_se3_bases_start_at_the_identity_and_blend_rigid_motions():
    field = DeformationField(SE3, T)
    pts, frames = _points(), torch.tensor([0, 4, 9])
    assert torch.equal(field(pts, frames).d_means, torch.zeros(3, pts.shape[0], 3))
    # one-hot coefficients on a basis that turns 90 degrees about z and lifts by 0.2: exactly that motion
    k = SE3.num_bases
    coeffs = torch.zeros(1, pts.shape[0], k)
    coeffs[..., 1] = 1.0
    bases = torch.zeros(1, k, 6)
    bases[0, 1] = torch.tensor([0.0, 0.0, math.pi / 2, 0.0, 0.0, 0.2])
    turned = torch.stack([-pts[:, 1], pts[:, 0], pts[:, 2] + 0.2], -1)
    torch.testing.assert_close(field._displacements(pts, coeffs, bases)[0], turned - pts)


def _fit_swinging_limb(cfg: DeformationConfig, steps: int = 150) -> float:
    """Error left after fitting a limb (x > 0) that swings about the origin by up to 60 degrees while the
    rest stays: relative to the motion's own size."""
    torch.manual_seed(7)
    field = DeformationField(cfg, T)
    pts, frames = _points(80, seed=2).clamp(-1, 1), torch.arange(T)
    angle = field.times(frames) * (math.pi / 3)
    c, s = torch.cos(angle), torch.sin(angle)
    x, y = pts[:, 0], pts[:, 1]
    swung = torch.stack([c[:, None] * x - s[:, None] * y, s[:, None] * x + c[:, None] * y,
                         pts[:, 2].expand(T, -1)], -1)
    target = torch.where((x > 0)[None, :, None], swung - pts, torch.zeros_like(swung))
    opt = torch.optim.Adam(field.param_groups(1e-2, 1e-2, 0.0, 0.0))
    for _ in range(steps):
        loss = ((field(pts, frames).d_means - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((field(pts, frames).d_means - target) ** 2).mean() / (target ** 2).mean())


def test_se3_bases_follow_a_swinging_limb_better_than_translations():
    se3, translation = _fit_swinging_limb(SE3), _fit_swinging_limb(TINY)
    assert se3 < 0.1 * translation


def test_unknown_motion_bases_are_refused():
    with pytest.raises(ValueError, match="motion_bases"):
        DeformationField(dataclasses.replace(TINY, motion_bases="affine"), T)
