"""CPU tests of the pure-torch Gaussian rasterizer against analytic footprints and a per-pixel loop.

Each test pins one piece of gsplat's contract (projection, pixel centres, depth
order, compositing, culling, quaternion convention, gradients, shapes) with a
case whose right answer is known independently of the implementation.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from backend.kernels import rasterize
from backend.kernels.rasterize_gsplat import _import_gsplat, rasterize_gsplat
from backend.kernels.rasterize_torch import ALPHA_THRESHOLD, project_gaussians, rasterize_torch

F64 = torch.float64


def camera(C=1, W=32, H=32, f=100.0, cx=None, cy=None, dtype=F64):
    """Identity world-to-camera poses (world axes = OpenCV camera axes) and a pinhole K."""
    viewmats = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    cx = W / 2 if cx is None else cx
    cy = H / 2 if cy is None else cy
    Ks = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype).repeat(C, 1, 1)
    return viewmats, Ks


def gaussians(means, scales, opacities, colors, quats=None, dtype=F64):
    """Tensors for a hand-placed scene; identity rotations unless quats are given."""
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = means.shape[0]
    if quats is None:
        quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype).repeat(n, 1)
    quats = torch.as_tensor(quats, dtype=dtype).reshape(n, 4)
    scales = torch.as_tensor(scales, dtype=dtype).reshape(n, -1).expand(n, 3).clone()
    opacities = torch.as_tensor(opacities, dtype=dtype).reshape(n)
    colors = torch.as_tensor(colors, dtype=dtype).reshape(n, -1)
    return means, quats, scales, opacities, colors


def random_scene(n, C=1, W=24, H=20, seed=0, dtype=F64, D=3, opacity_range=(0.05, 0.95)):
    """A small random scene in front of C slightly different cameras."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([1.2, 1.0, 0.6], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.12 + 0.03
    lo, hi = opacity_range
    opacities = torch.rand(n, generator=g, dtype=dtype) * (hi - lo) + lo
    colors = torch.rand(n, D, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    for c in range(C):
        a = 0.25 * c
        viewmats[c, :3, :3] = torch.tensor(
            [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]], dtype=dtype
        )
        viewmats[c, 2, 3] = 2.5
    Ks = torch.tensor([[30.0, 0.0, W / 2 + 0.3], [0.0, 31.0, H / 2 - 0.2], [0.0, 0.0, 1.0]], dtype=dtype).repeat(C, 1, 1)
    return means, quats, scales, opacities, colors, viewmats, Ks, W, H


def per_pixel_reference(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=None):
    """gsplat's forward kernel written as a plain loop over pixels and depth-sorted Gaussians.

    Uses the (separately tested) projection, then for every pixel walks the Gaussians
    whose 16x16 tile range holds the pixel, front to back, with the same skip,
    clamp and early-stop rules as gsplat's CUDA kernel. Also returns how many
    pixels hit the early stop, so a test can show that rule was exercised.
    """
    radii, m2, depths, conics = project_gaussians(means, quats, scales, opacities, viewmats, Ks, W, H)
    C, N = depths.shape
    D = colors.shape[-1]
    out = torch.zeros(C, H, W, D, dtype=means.dtype)
    alpha_img = torch.zeros(C, H, W, 1, dtype=means.dtype)
    stopped = 0
    for c in range(C):
        ids = sorted((n for n in range(N) if radii[c, n].min() > 0), key=lambda n: (depths[c, n].item(), n))
        boxes = {}
        for n in ids:
            mx, my = m2[c, n].tolist()
            rx, ry = radii[c, n].tolist()
            boxes[n] = (
                math.floor(mx / 16 - rx / 16), math.ceil(mx / 16 + rx / 16),
                math.floor(my / 16 - ry / 16), math.ceil(my / 16 + ry / 16),
            )
        for i in range(H):
            for j in range(W):
                T = 1.0
                acc = torch.zeros(D, dtype=means.dtype)
                for n in ids:
                    x0, x1, y0, y1 = boxes[n]
                    if not (x0 <= j // 16 < x1 and y0 <= i // 16 < y1):
                        continue
                    dx = m2[c, n, 0].item() - (j + 0.5)
                    dy = m2[c, n, 1].item() - (i + 0.5)
                    a, b, cc = conics[c, n].tolist()
                    sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    alpha = min(0.999, opacities[n].item() * math.exp(-sigma))
                    if sigma < 0 or alpha < ALPHA_THRESHOLD:
                        continue
                    next_t = T * (1 - alpha)
                    if next_t <= 1e-4:
                        stopped += 1
                        break
                    acc += colors[n] * alpha * T
                    T = next_t
                if backgrounds is not None:
                    acc = acc + T * backgrounds[c]
                out[c, i, j] = acc
                alpha_img[c, i, j, 0] = 1 - T
    return out, alpha_img, stopped


# ------------------------------------------------------------------------- footprint


def test_isotropic_footprint_matches_analytic_gaussian():
    f, z, sigma, opacity = 100.0, 4.0, 0.1, 0.8
    W = H = 32
    viewmats, Ks = camera(W=W, H=H, f=f, cx=16.0, cy=15.5)
    g = gaussians([0.0, 0.0, z], [sigma], [opacity], [[1.0, 0.5, 0.25]])
    rc, ra, meta = rasterize(*g, viewmats, Ks, W, H)

    var_px = (f * sigma / z) ** 2 + 0.3
    assert meta["means2d"][0, 0].tolist() == pytest.approx([16.0, 15.5])
    assert meta["depths"][0, 0].item() == pytest.approx(z)
    expected_radius = math.ceil(math.sqrt(2 * math.log(opacity * 255)) * math.sqrt(var_px))
    assert meta["radii"][0, 0].item() == expected_radius

    checked = 0
    for i, j in [(15, 15), (15, 16), (16, 18), (13, 16), (12, 12), (20, 17), (15, 20)]:
        r2 = (j + 0.5 - 16.0) ** 2 + (i + 0.5 - 15.5) ** 2
        expected = opacity * math.exp(-0.5 * r2 / var_px)
        assert expected > ALPHA_THRESHOLD
        assert ra[0, i, j, 0].item() == pytest.approx(expected, rel=1e-9)
        assert rc[0, i, j].tolist() == pytest.approx([expected, 0.5 * expected, 0.25 * expected], rel=1e-9)
        checked += 1
    assert checked == 7
    # Far enough out the analytic alpha drops under 1/255 and the pixel is skipped entirely.
    r2 = (25.5 - 16.0) ** 2 + (15.5 - 15.5) ** 2
    assert opacity * math.exp(-0.5 * r2 / var_px) < ALPHA_THRESHOLD
    assert ra[0, 15, 25, 0].item() == 0.0


def test_pixel_centres_are_at_half_integers():
    """A Gaussian centred on (16.5, 8.5) peaks at pixel (row 8, col 16) with alpha = opacity."""
    viewmats, Ks = camera(W=32, H=16, f=80.0, cx=16.5, cy=8.5)
    g = gaussians([0.0, 0.0, 3.0], [0.04], [0.7], [[1.0]])
    _, ra, _ = rasterize(*g, viewmats, Ks, 32, 16)
    assert ra[0, 8, 16, 0].item() == pytest.approx(0.7, rel=1e-12)
    assert ra[0, 8, 15, 0].item() == pytest.approx(ra[0, 8, 17, 0].item(), rel=1e-12)
    assert ra[0, 7, 16, 0].item() == pytest.approx(ra[0, 9, 16, 0].item(), rel=1e-12)
    assert ra[0, 8, 15, 0].item() < 0.7


def test_alpha_clamps_at_0999_and_pixel_stops_before_transmittance_1e4():
    viewmats, Ks = camera(W=32, H=32, f=80.0, cx=16.5, cy=16.5)
    _, ra, _ = rasterize(*gaussians([0.0, 0.0, 3.0], [0.05], [1.0], [[1.0]]), viewmats, Ks, 32, 32)
    assert ra[0, 16, 16, 0].item() == pytest.approx(0.999, abs=1e-12)

    # Ten stacked Gaussians with alpha 0.95 at the centre pixel: T goes 0.05, 2.5e-3,
    # 1.25e-4, and the fourth would take it to 6.25e-6 <= 1e-4, so the pixel stops
    # after three and the deeper (blue) ones never show.
    n = 10
    means = [[0.0, 0.0, 3.0 + 0.1 * k] for k in range(n)]
    cols = [[1.0, 0.0, 0.0]] * 3 + [[0.0, 0.0, 1.0]] * (n - 3)
    rc, ra, _ = rasterize(*gaussians(means, [0.05] * n, [0.95] * n, cols), viewmats, Ks, 32, 32)
    assert ra[0, 16, 16, 0].item() == pytest.approx(1 - 0.05**3, rel=1e-12)
    assert rc[0, 16, 16, 2].item() == 0.0
    assert rc[0, 16, 16, 0].item() == pytest.approx(1 - 0.05**3, rel=1e-12)


# ---------------------------------------------------------------------- compositing


def test_front_gaussian_wins_whatever_the_input_order_and_background_shows_elsewhere():
    W = H = 48
    viewmats, Ks = camera(W=W, H=H, f=100.0, cx=24.5, cy=24.5)
    bg = torch.tensor([[0.1, 0.9, 0.3]], dtype=F64)
    front = ([0.0, 0.0, 3.0], [1.0, 0.0, 0.0])
    back = ([0.02, 0.0, 5.0], [0.0, 0.0, 1.0])
    renders = []
    for order in ([front, back], [back, front]):
        g = gaussians([m for m, _ in order], [0.08, 0.08], [0.98, 0.98], [c for _, c in order])
        rc, ra, _ = rasterize(*g, viewmats, Ks, W, H, backgrounds=bg)
        renders.append((rc, ra))
        centre = rc[0, 24, 24]
        assert centre[0].item() == pytest.approx(0.98, abs=1e-3)  # red (front) dominates
        assert 0.0 < centre[2].item() < 0.02
        # Nothing covers the corner: exactly the background, zero alpha.
        assert rc[0, 0, 0].tolist() == pytest.approx(bg[0].tolist(), abs=0)
        assert ra[0, 0, 0, 0].item() == 0.0
    torch.testing.assert_close(renders[0][0], renders[1][0], rtol=0, atol=1e-14)
    torch.testing.assert_close(renders[0][1], renders[1][1], rtol=0, atol=1e-14)


def test_alpha_is_one_minus_product_of_single_gaussian_alphas_and_colours_composite_in_depth_order():
    W, H = 40, 32
    viewmats, Ks = camera(W=W, H=H, f=90.0)
    means = [[0.05, 0.0, 3.5], [-0.03, 0.02, 2.5], [0.0, -0.04, 3.0]]
    scales = [0.12, 0.1, 0.15]
    opac = [0.5, 0.4, 0.6]
    cols = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    singles = []
    for k in range(3):
        _, ra_k, _ = rasterize(*gaussians([means[k]], [scales[k]], [opac[k]], [cols[k]]), viewmats, Ks, W, H)
        singles.append(ra_k[0, ..., 0])
    rc, ra, _ = rasterize(*gaussians(means, scales, opac, cols), viewmats, Ks, W, H)

    a1, a2, a0 = singles[1], singles[2], singles[0]  # depth order 2.5, 3.0, 3.5
    expected_alpha = 1 - (1 - a0) * (1 - a1) * (1 - a2)
    assert (expected_alpha > 0.5).any()
    torch.testing.assert_close(ra[0, ..., 0], expected_alpha, rtol=0, atol=1e-12)
    expected_rgb = torch.stack([a0 * (1 - a1) * (1 - a2), a1, a2 * (1 - a1)], dim=-1)
    torch.testing.assert_close(rc[0], expected_rgb, rtol=0, atol=1e-12)


def test_matches_per_pixel_loop_on_random_scene_with_saturation_and_two_cameras():
    means, quats, scales, opac, colors, viewmats, Ks, W, H = random_scene(
        30, C=2, W=36, H=20, seed=3, opacity_range=(0.6, 1.0)
    )
    means = means * 0.3  # crowd them so that some pixels saturate
    bg = torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.5]], dtype=F64)
    rc, ra, meta = rasterize(means, quats, scales, opac, colors, viewmats, Ks, W, H, backgrounds=bg)
    ref_c, ref_a, stopped = per_pixel_reference(means, quats, scales, opac, colors, viewmats, Ks, W, H, backgrounds=bg)
    assert meta["n_isects"] > 30
    assert stopped > 5, "the scene should saturate some pixels to exercise the early stop"
    torch.testing.assert_close(rc, ref_c, rtol=0, atol=1e-12)
    torch.testing.assert_close(ra, ref_a, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- depth


def test_expected_depth_is_camera_z_and_accumulated_depth_is_alpha_times_z():
    W = H = 32
    viewmats, Ks = camera(W=W, H=H, f=60.0)
    # Off axis, so Euclidean distance (~3.04) and camera z (3.0) differ.
    g = gaussians([0.5, -0.2, 3.0], [0.1], [0.9], [[0.3, 0.6, 0.9]])
    ed, ra, _ = rasterize(*g, viewmats, Ks, W, H, render_mode="ED")
    d, _, _ = rasterize(*g, viewmats, Ks, W, H, render_mode="D")
    rgbed, _, _ = rasterize(*g, viewmats, Ks, W, H, render_mode="RGB+ED")
    rgbd, _, _ = rasterize(*g, viewmats, Ks, W, H, render_mode="RGB+D")
    covered = ra[0, ..., 0] > 0
    assert covered.sum() > 20
    assert ed.shape == (1, H, W, 1) and rgbed.shape == (1, H, W, 4)
    torch.testing.assert_close(ed[0, ..., 0][covered], torch.full_like(ed[0, ..., 0][covered], 3.0))
    torch.testing.assert_close(d[0, ..., 0], 3.0 * ra[0, ..., 0])
    torch.testing.assert_close(rgbed[..., 3], ed[..., 0])
    torch.testing.assert_close(rgbd[..., 3], d[..., 0])
    assert (ed[0, ..., 0][~covered] == 0).all()


def test_depth_channel_gets_zero_background():
    viewmats, Ks = camera(W=16, H=16, f=40.0)
    g = gaussians([0.0, 0.0, 2.0], [0.05], [0.9], [[1.0, 1.0, 1.0]])
    bg = torch.tensor([[0.5, 0.5, 0.5]], dtype=F64)
    rc, ra, _ = rasterize(*g, viewmats, Ks, 16, 16, render_mode="RGB+D", backgrounds=bg)
    assert rc[0, 0, 0].tolist() == [0.5, 0.5, 0.5, 0.0]
    d, _, _ = rasterize(*g, viewmats, Ks, 16, 16, render_mode="D", backgrounds=bg)
    assert d[0, 0, 0, 0].item() == 0.0


# -------------------------------------------------------------------------- culling


@pytest.mark.parametrize(
    "z, near, far, visible",
    [(-2.0, 0.01, 1e10, False), (0.005, 0.01, 1e10, False), (20.0, 0.01, 10.0, False), (5.0, 0.01, 10.0, True)],
)
def test_near_far_culling(z, near, far, visible):
    viewmats, Ks = camera(W=32, H=32, f=100.0)
    bg = torch.tensor([[0.25, 0.5, 0.75]], dtype=F64)
    g = gaussians([0.0, 0.0, z], [0.02 * abs(z)], [0.9], [[1.0, 0.0, 0.0]])
    rc, ra, meta = rasterize(*g, viewmats, Ks, 32, 32, near_plane=near, far_plane=far, backgrounds=bg)
    assert (meta["radii"][0, 0].item() > 0) == visible
    if visible:
        assert ra.max().item() > 0.5
    else:
        assert ra.abs().max().item() == 0.0
        assert torch.equal(rc[0], bg[0].expand(32, 32, 3))


def test_radius_clip_and_offscreen_and_faint_gaussians_are_culled():
    viewmats, Ks = camera(W=32, H=32, f=100.0)
    g = gaussians(
        [[0.0, 0.0, 4.0], [0.0, 0.0, 4.0], [5.0, 0.0, 4.0], [0.0, 0.0, 4.0]],
        [0.002, 0.1, 0.1, 0.1],
        [0.9, 0.9, 0.9, 0.5 / 255],
        [[1.0]] * 4,
    )
    _, _, meta = rasterize(*g, viewmats, Ks, 32, 32, radius_clip=2.0)
    radii = meta["radii"][0].tolist()
    assert radii[0] == 0  # projected radius 2 px <= radius_clip
    assert radii[1] > 2
    assert radii[2] == 0  # projects 125 px right of a 32 px image
    assert radii[3] == 0  # opacity below 1/255 can never reach the alpha threshold


# --------------------------------------------------------------- anisotropy/rotation


def footprint_covariance(alpha_img):
    """Second moments (var_x, var_y, cov_xy) of an alpha image, in pixels."""
    H, W = alpha_img.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=F64) + 0.5, torch.arange(W, dtype=F64) + 0.5, indexing="ij")
    w = alpha_img / alpha_img.sum()
    mx, my = (w * xs).sum(), (w * ys).sum()
    return (w * (xs - mx) ** 2).sum().item(), (w * (ys - my) ** 2).sum().item(), (w * (xs - mx) * (ys - my)).sum().item()


@pytest.mark.parametrize(
    "angle_deg, long_axis",
    [(0.0, "x"), (90.0, "y"), (45.0, "down-right"), (-45.0, "up-right")],
)
def test_rotated_elongated_gaussian_is_elongated_along_the_rotated_image_direction(angle_deg, long_axis):
    """Rotating local x by +theta about camera z (w,x,y,z quaternion) turns it towards +y = down."""
    W = H = 48
    f, z = 100.0, 4.0
    viewmats, Ks = camera(W=W, H=H, f=f)
    t = math.radians(angle_deg)
    q = [math.cos(t / 2), 0.0, 0.0, math.sin(t / 2)]
    scales = torch.tensor([[0.3, 0.03, 0.03]], dtype=F64)
    means, quats, _, opac, cols = gaussians([0.0, 0.0, z], [0.1], [0.5], [[1.0]], quats=[q])
    _, ra, meta = rasterize(means, quats, scales, opac, cols, viewmats, Ks, W, H)
    vx, vy, cxy = footprint_covariance(ra[0, ..., 0])
    if long_axis == "x":
        assert vx > 4 * vy and abs(cxy) < 1e-6 * vx
    elif long_axis == "y":
        assert vy > 4 * vx and abs(cxy) < 1e-6 * vy
    elif long_axis == "down-right":
        assert cxy > 0.6 * math.sqrt(vx * vy)
    else:
        assert cxy < -0.6 * math.sqrt(vx * vy)

    # The projected covariance itself: (f/z)^2 (R S^2 R^T)[:2, :2] + eps2d I on the optical axis.
    c, s = math.cos(t), math.sin(t)
    R = torch.tensor([[c, -s], [s, c]], dtype=F64)
    cov = (f / z) ** 2 * R @ torch.diag(torch.tensor([0.3**2, 0.03**2], dtype=F64)) @ R.T + 0.3 * torch.eye(2, dtype=F64)
    a, b, cc = meta["conics"][0, 0].tolist()
    torch.testing.assert_close(torch.linalg.inv(torch.tensor([[a, b], [b, cc]], dtype=F64)), cov)


def test_jacobian_uses_gsplats_clamped_view_direction_for_gaussians_far_off_axis():
    """Beyond 1.3x the half field of view gsplat evaluates the projection Jacobian at the limit."""
    W = H = 32
    fx = fy = 32.0
    viewmats, Ks = camera(W=W, H=H, f=fx, cx=16.0, cy=16.0)
    x, y, z, sigma = 3.0, -2.7, 3.0, 1.0  # x/z = 1.0 and y/z = -0.9, limits are +-0.65
    g = gaussians([x, y, z], [sigma], [0.9], [[1.0]])
    _, ra, meta = rasterize(*g, viewmats, Ks, W, H)
    assert meta["radii"][0, 0].item() > 0 and ra.max().item() > 0.01
    lim = 16.0 / 32.0 + 0.3 * (0.5 * W / fx)
    J = torch.tensor([[fx / z, 0.0, -fx * lim / z], [0.0, fy / z, fy * lim / z]], dtype=F64)
    cov = sigma**2 * J @ J.T + 0.3 * torch.eye(2, dtype=F64)
    a, b, c = meta["conics"][0, 0].tolist()
    torch.testing.assert_close(torch.linalg.inv(torch.tensor([[a, b], [b, c]], dtype=F64)), cov)
    assert meta["means2d"][0, 0].tolist() == pytest.approx([fx * x / z + 16.0, fy * y / z + 16.0])


def test_quaternions_need_not_be_normalised():
    viewmats, Ks = camera(W=24, H=24, f=60.0)
    q = torch.tensor([[0.9, 0.2, -0.3, 0.4]], dtype=F64)
    base = gaussians([0.0, 0.1, 3.0], [0.1], [0.8], [[1.0]], quats=q)
    scaled = gaussians([0.0, 0.1, 3.0], [0.1], [0.8], [[1.0]], quats=q * 7.5)
    base[2][0] = torch.tensor([0.2, 0.05, 0.1], dtype=F64)
    scaled[2][0] = torch.tensor([0.2, 0.05, 0.1], dtype=F64)
    _, a1, _ = rasterize(*base, viewmats, Ks, 24, 24)
    _, a2, _ = rasterize(*scaled, viewmats, Ks, 24, 24)
    torch.testing.assert_close(a1, a2, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------ gradients


def assert_grads_match_finite_differences(fn, inputs, eps=1e-6, seed=0):
    """Autograd gradients of a random linear functional of ``fn``'s outputs vs central differences.

    A random weighting of every output element means any wrong Jacobian entry shows up
    (up to a measure-zero coincidence), while costing only two renders per input element.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in fn(*inputs)]

    def loss(*xs):
        return sum((o * w).sum() for o, w in zip(fn(*xs), weights))

    grads = torch.autograd.grad(loss(*inputs), inputs)
    with torch.no_grad():
        for name_index, (x, grad) in enumerate(zip(inputs, grads)):
            fd = torch.zeros_like(x)
            flat = x.detach().clone().reshape(-1)
            for i in range(flat.numel()):
                args = [t.detach() for t in inputs]
                plus = flat.clone()
                plus[i] += eps
                args[name_index] = plus.reshape(x.shape)
                f_plus = loss(*args)
                minus = flat.clone()
                minus[i] -= eps
                args[name_index] = minus.reshape(x.shape)
                f_minus = loss(*args)
                fd.reshape(-1)[i] = (f_plus - f_minus) / (2 * eps)
            assert torch.isfinite(grad).all()
            assert fd.abs().max() > 0, f"input {name_index} has no effect; the check would be vacuous"
            torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6, msg=lambda m: f"input {name_index}: {m}")


def test_no_gradient_flows_through_the_0999_alpha_clamp():
    """Where opacity * falloff > 0.999 alpha is the constant 0.999, as gsplat's backward assumes."""
    viewmats, Ks = camera(W=16, H=16, f=40.0, cx=8.5, cy=8.5)
    means, quats, scales, opac, cols = gaussians([0.0, 0.0, 2.0], [0.1], [1.0], [[1.0]])
    params = [t.requires_grad_() for t in (means, scales, opac)]
    rc, ra, _ = rasterize(means, quats, scales, opac, cols, viewmats, Ks, 16, 16)
    assert ra[0, 8, 8, 0].item() == pytest.approx(0.999)
    assert 0.01 < ra[0, 8, 7, 0].item() < 0.999
    centre_grads = torch.autograd.grad(ra[0, 8, 8, 0] + rc[0, 8, 8, 0], params, retain_graph=True)
    for grad in centre_grads:
        assert (grad == 0).all()
    side_grads = torch.autograd.grad(ra[0, 8, 7, 0], params)
    assert side_grads[2].abs().item() > 0.1


def test_gradients_match_finite_differences_float64():
    means, quats, scales, opac, colors, viewmats, Ks, W, H = random_scene(3, C=2, W=24, H=20, seed=7)
    bg = torch.tensor([[0.2, 0.5, 0.7], [0.6, 0.3, 0.1]], dtype=F64)
    inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors, bg)]

    def render(m, q, s, o, c, b):
        rc, ra, _ = rasterize_torch(m, q, s, o, c, viewmats, Ks, W, H, backgrounds=b, render_mode="RGB+ED")
        return rc, ra

    rc, ra = render(*inputs)
    assert ra.max().item() > 0.3
    assert_grads_match_finite_differences(render, inputs)


def test_gradients_match_finite_differences_with_per_camera_colors_and_saturation():
    means, quats, scales, opac, colors, viewmats, Ks, W, H = random_scene(
        5, C=2, W=20, H=18, seed=11, opacity_range=(0.95, 0.999)
    )
    means = means * 0.1  # pile them up so that some pixels hit the transmittance stop
    colors = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    _, _, stopped = per_pixel_reference(means, quats, scales, opac, colors[0], viewmats, Ks, W, H)
    assert stopped > 0
    inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]

    def render(m, q, s, o, c):
        rc, ra, _ = rasterize_torch(m, q, s, o, c, viewmats, Ks, W, H)
        return rc, ra

    assert_grads_match_finite_differences(render, inputs)


def test_gradients_are_finite_and_reach_every_parameter_on_a_larger_float32_scene():
    means, quats, scales, opac, colors, viewmats, Ks, W, H = random_scene(
        300, C=2, W=64, H=48, seed=5, dtype=torch.float32, D=5
    )
    # Some Gaussians behind the camera: culled, must get exactly zero gradient, not nan.
    means[:10, 2] = -6.0
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]
    rc, ra, meta = rasterize(*params, viewmats, Ks, W, H, render_mode="RGB+ED")
    (rc.square().mean() + ra.mean()).backward()
    for p in params:
        assert torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
    culled = (meta["radii"] == 0).all(dim=0)
    assert culled[:10].all()
    assert (params[0].grad[culled] == 0).all()
    assert (params[3].grad[culled] == 0).all()


# ------------------------------------------------------------- cameras and channels


def test_multi_camera_render_equals_single_camera_renders_and_per_camera_colors_apply():
    means, quats, scales, opac, _, viewmats, Ks, W, H = random_scene(40, C=3, W=40, H=24, seed=9)
    colors = torch.rand(3, 40, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    bg = torch.rand(3, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    rc, ra, meta = rasterize(means, quats, scales, opac, colors, viewmats, Ks, W, H, backgrounds=bg)
    assert rc.shape == (3, H, W, 6) and ra.shape == (3, H, W, 1)
    assert meta["radii"].shape == (3, 40) and meta["means2d"].shape == (3, 40, 2) and meta["depths"].shape == (3, 40)
    for c in range(3):
        rc1, ra1, _ = rasterize(
            means, quats, scales, opac, colors[c], viewmats[c : c + 1], Ks[c : c + 1], W, H, backgrounds=bg[c : c + 1]
        )
        torch.testing.assert_close(rc[c], rc1[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(ra[c], ra1[0], rtol=0, atol=1e-12)
    assert not torch.allclose(rc[0], rc[1])


def test_chunking_does_not_change_renders_or_gradients(monkeypatch):
    """Tiny chunk budgets (tiles split into single pixel rows) give the same result."""
    kernel_module = sys.modules["backend.kernels.rasterize_torch"]
    scene = random_scene(25, C=2, W=40, H=24, seed=17)
    outputs = []
    for budget in (kernel_module.CHUNK_ELEMENTS, 16 * 3):
        monkeypatch.setattr(kernel_module, "CHUNK_ELEMENTS", budget)
        params = [t.clone().requires_grad_() for t in scene[:5]]
        rc, ra, _ = rasterize(*params, *scene[5:], backgrounds=torch.ones(2, 3, dtype=F64), render_mode="RGB+D")
        (rc.sin().sum() + ra.square().sum()).backward()
        outputs.append([rc.detach(), ra.detach()] + [p.grad for p in params])
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_non_square_image_not_a_multiple_of_the_tile_size():
    means, quats, scales, opac, colors, viewmats, Ks, W, H = random_scene(12, C=1, W=37, H=21, seed=13)
    rc, ra, _ = rasterize(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    ref_c, ref_a, _ = per_pixel_reference(means, quats, scales, opac, colors, viewmats, Ks, W, H)
    assert rc.shape == (1, 21, 37, 3)
    torch.testing.assert_close(rc, ref_c, rtol=0, atol=1e-12)
    torch.testing.assert_close(ra, ref_a, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- errors and backend


def _ok_args():
    return list(random_scene(5, C=2, W=16, H=16, seed=1))


@pytest.mark.parametrize(
    "index, bad, message",
    [
        (0, torch.zeros(5, 2, dtype=F64), r"means must be \(N, 3\), got \(5, 2\)"),
        (1, torch.zeros(5, 3, dtype=F64), r"quats must be \(N, 4\)"),
        (2, torch.zeros(4, 3, dtype=F64), r"scales must be \(N, 3\)"),
        (3, torch.zeros(5, 1, dtype=F64), r"opacities must be \(N,\)"),
        (4, torch.zeros(3, 5, 3, dtype=F64), r"colors must be \(N, D\) or \(C, N, D\)"),
        (4, torch.zeros(5, 0, dtype=F64), r"colors must be"),
        (5, torch.zeros(2, 3, 4, dtype=F64), r"viewmats must be \(C, 4, 4\)"),
        (6, torch.zeros(3, 3, 3, dtype=F64), r"Ks must be \(C, 3, 3\) = \(2, 3, 3\)"),
        (7, 16.0, r"width must be a positive int"),
        (8, 0, r"height must be a positive int"),
        (1, torch.zeros(5, 4, dtype=torch.int64), r"quats must be a floating-point tensor"),
    ],
)
def test_shape_errors_raise_value_error(index, bad, message):
    args = _ok_args()
    args[index] = bad
    with pytest.raises(ValueError, match=message):
        rasterize(*args)


def test_bad_backgrounds_mode_and_backend_raise_value_error():
    args = _ok_args()
    with pytest.raises(ValueError, match=r"backgrounds must be \(C, D\) = \(2, 3\)"):
        rasterize(*args, backgrounds=torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="render_mode must be one of"):
        rasterize(*args, render_mode="RGBD")
    with pytest.raises(ValueError, match="backend must be one of"):
        rasterize(*args, backend="cuda")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        rasterize(*args, backend="gsplat")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        rasterize_gsplat(*args)


def test_auto_backend_on_cpu_is_the_torch_twin():
    args = _ok_args()
    rc1, ra1, _ = rasterize(*args, backend="auto")
    rc2, ra2, _ = rasterize_torch(*args)
    assert torch.equal(rc1, rc2) and torch.equal(ra1, ra2)


def test_missing_gsplat_import_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat", None)  # makes `import gsplat` fail
    with pytest.raises(ImportError, match=r"pip install gsplat==1\.5\.3"):
        _import_gsplat()


def test_rasterize_frames_renders_each_frame_with_its_own_gaussians_and_camera():
    """Frame b of the batched call is the single-frame render of frame b's Gaussians and camera."""
    from backend.kernels import rasterize, rasterize_frames

    g = torch.Generator().manual_seed(7)
    B, N, W, H = 3, 40, 20, 16
    means = torch.randn(B, N, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(B, N, 4, generator=g)
    scales = torch.rand(B, N, 3, generator=g) * 0.1 + 0.02
    opac = torch.rand(B, N, generator=g)
    cols = torch.rand(B, N, 4, generator=g)
    vm = torch.eye(4).repeat(B, 1, 1)
    vm[:, 0, 3] = torch.tensor([0.0, 0.2, -0.2])
    Ks = torch.tensor([[20.0, 0, 10], [0, 20.0, 8], [0, 0, 1]]).repeat(B, 1, 1)
    bgs = torch.rand(B, 4, generator=g)
    out, alpha = rasterize_frames(means, quats, scales, opac, cols, vm, Ks, W, H, render_mode="RGB+ED",
                                  backgrounds=bgs)
    assert out.shape == (B, H, W, 5) and alpha.shape == (B, H, W, 1)
    for b in range(B):
        o, a, _ = rasterize(means[b], quats[b], scales[b], opac[b], cols[b], vm[b:b + 1], Ks[b:b + 1], W, H,
                            render_mode="RGB+ED", backgrounds=bgs[b:b + 1])
        torch.testing.assert_close(out[b], o[0])
        torch.testing.assert_close(alpha[b], a[0])
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="opacities must be"):
        rasterize_frames(means, quats, scales, opac[:, :-1], cols, vm, Ks, W, H)
    with pytest.raises(ValueError, match="viewmats must be"):
        rasterize_frames(means, quats, scales, opac, cols, vm[:2], Ks, W, H)
