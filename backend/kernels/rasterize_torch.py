"""Pure-torch 3D Gaussian splatting rasterizer: the CPU render path and gsplat's test oracle.

It reproduces ``gsplat.rasterization(..., packed=False, rasterize_mode="classic",
sh_degree=None)`` from gsplat 1.5.3: the same EWA projection (with gsplat's clamp of
the Jacobian to 1.3x the field of view), the same culling, the same opacity-aware
3.33-sigma box and 16x16 tile binning (so the same Gaussian/pixel pairs are
evaluated), the same per-pixel front-to-back compositing rules, and the same
gradients (gsplat does not differentiate through the 0.999 alpha clamp; neither
does this).

Memory and time stay bounded on a CPU: the image is cut into gsplat's 16x16 tiles,
each tile only evaluates the Gaussians binned to it, tiles are processed in chunks
of bounded size, and the compositing step is a ``torch.autograd.Function`` whose
backward recomputes each chunk instead of keeping every pixel x Gaussian
intermediate alive for autograd. Projection (3D -> 2D) is ordinary torch autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

TILE_SIZE = 16
"""Tile edge in pixels; the Gaussian/pixel pairing depends on it, so it is gsplat's default."""

ALPHA_THRESHOLD = 1.0 / 255.0
"""Contributions below this alpha are skipped (gsplat's ``ALPHA_THRESHOLD``)."""

ALPHA_MAX = 0.999
"""Per-Gaussian alpha is clamped to this so that transmittance never reaches zero."""

TRANSMITTANCE_MIN = 1e-4
"""A pixel stops compositing before a Gaussian that would take T to or below this."""

EXTEND_MAX = 3.33
"""Largest box half-extent in standard deviations (gsplat's bounding-box rule)."""

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")

CHUNK_ELEMENTS = 1 << 21
"""Upper bound on pixel x Gaussian pairs evaluated at once; bounds peak memory."""


# --------------------------------------------------------------------------- inputs


def check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    render_mode: str,
    backgrounds: Optional[Tensor],
) -> None:
    """Raise ``ValueError`` naming the first argument whose shape or type breaks the contract.

    Shared by every backend so that a bad call fails the same way, with a message
    that says what was expected, before any work is done.
    """

    def shape(t: Tensor) -> str:
        return "(" + ", ".join(str(s) for s in t.shape) + ")"

    named = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "viewmats": viewmats,
        "Ks": Ks,
    }
    if backgrounds is not None:
        named["backgrounds"] = backgrounds
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != means.device:
            raise ValueError(
                f"{name} is on {t.device} but means is on {means.device}; "
                "all tensors must be on one device"
            )

    if means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be (N, 3), got {shape(means)}")
    n = means.shape[0]
    if quats.shape != (n, 4):
        raise ValueError(f"quats must be (N, 4) = ({n}, 4) in w,x,y,z order, got {shape(quats)}")
    if scales.shape != (n, 3):
        raise ValueError(f"scales must be (N, 3) = ({n}, 3), got {shape(scales)}")
    if opacities.shape != (n,):
        raise ValueError(f"opacities must be (N,) = ({n},), got {shape(opacities)}")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4) or viewmats.shape[0] < 1:
        raise ValueError(f"viewmats must be (C, 4, 4) with C >= 1, got {shape(viewmats)}")
    c = viewmats.shape[0]
    if Ks.shape != (c, 3, 3):
        raise ValueError(f"Ks must be (C, 3, 3) = ({c}, 3, 3), got {shape(Ks)}")
    if colors.dim() == 2:
        if colors.shape[0] != n or colors.shape[1] < 1:
            raise ValueError(f"colors must be (N, D) or (C, N, D) with N={n}, C={c}, D>=1, got {shape(colors)}")
    elif colors.dim() == 3:
        if colors.shape[:2] != (c, n) or colors.shape[2] < 1:
            raise ValueError(f"colors must be (N, D) or (C, N, D) with N={n}, C={c}, D>=1, got {shape(colors)}")
    else:
        raise ValueError(f"colors must be (N, D) or (C, N, D), got {shape(colors)}")
    d = colors.shape[-1]
    if backgrounds is not None and backgrounds.shape != (c, d):
        raise ValueError(f"backgrounds must be (C, D) = ({c}, {d}), got {shape(backgrounds)}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")


# ----------------------------------------------------------------------- projection


def _quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (N, 3, 3) from w,x,y,z quaternions, normalised first."""
    w, x, y, z = F.normalize(quats, p=2.0, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project 3D Gaussians into every camera, as gsplat's fused pinhole projection does.

    Returns ``radii`` (C, N, 2) int32 pixel half-extents along x and y (0 = culled),
    ``means2d`` (C, N, 2) pixel coordinates, ``depths`` (C, N) camera z, and
    ``conics`` (C, N, 3) = the upper triangle (a, b, c) of the inverse blurred 2D
    covariance. ``means2d``, ``depths`` and ``conics`` are differentiable and zero
    where a Gaussian is culled, so that culled Gaussians get exactly zero gradient.
    """
    R = _quat_to_rotmat(quats)
    M = R * scales[:, None, :]
    covars = M @ M.transpose(-1, -2)  # (N, 3, 3)

    Rv = viewmats[:, :3, :3]
    tv = viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]  # (C, N, 3)
    covars_c = torch.einsum("cij,njk,clk->cnil", Rv, covars, Rv)  # (C, N, 3, 3)

    x, y, z = means_c.unbind(-1)
    depth_ok = (z >= near_plane) & (z <= far_plane)
    # Substitute a harmless depth for culled Gaussians so that nothing becomes inf/nan
    # (a nan there would leak into the gradients of the valid ones through 0 * nan).
    zs = torch.where(depth_ok, z, torch.ones_like(z))

    fx = Ks[:, 0, 0, None]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy

    rz = 1.0 / zs
    rz2 = rz * rz
    tx = zs * torch.clamp(x * rz, min=-lim_x_neg, max=lim_x_pos)
    ty = zs * torch.clamp(y * rz, min=-lim_y_neg, max=lim_y_pos)

    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]; cov2d = J cov J^T written out.
    j00 = fx * rz
    j02 = -fx * tx * rz2
    j11 = fy * rz
    j12 = -fy * ty * rz2
    s00 = covars_c[..., 0, 0]
    s01 = covars_c[..., 0, 1]
    s02 = covars_c[..., 0, 2]
    s11 = covars_c[..., 1, 1]
    s12 = covars_c[..., 1, 2]
    s22 = covars_c[..., 2, 2]
    cov_a = j00 * j00 * s00 + 2 * j00 * j02 * s02 + j02 * j02 * s22 + eps2d
    cov_b = j00 * j11 * s01 + j00 * j12 * s02 + j02 * j11 * s12 + j02 * j12 * s22
    cov_c = j11 * j11 * s11 + 2 * j11 * j12 * s12 + j12 * j12 * s22 + eps2d

    det = cov_a * cov_c - cov_b * cov_b
    det_ok = det > 0
    det_s = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([cov_c / det_s, -cov_b / det_s, cov_a / det_s], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().to(means_c.dtype).expand_as(z)
        opac_ok = opac >= ALPHA_THRESHOLD
        # Opacity-aware box: beyond this many sigmas alpha is below the threshold anyway.
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(EXTEND_MAX)
        rad_x = torch.ceil(extend * torch.sqrt(cov_a.detach().clamp_min(0)))
        rad_y = torch.ceil(extend * torch.sqrt(cov_c.detach().clamp_min(0)))
        big_enough = (rad_x > radius_clip) | (rad_y > radius_clip)
        mx, my = means2d.detach().unbind(-1)
        on_screen = ~(
            (mx + rad_x <= 0) | (mx - rad_x >= width) | (my + rad_y <= 0) | (my - rad_y >= height)
        )
        valid = depth_ok & det_ok & opac_ok & big_enough & on_screen
        radii = torch.where(valid[..., None], torch.stack([rad_x, rad_y], -1), 0).to(torch.int32)

    keep = valid[..., None]
    means2d = torch.where(keep, means2d, torch.zeros_like(means2d))
    conics = torch.where(keep, conics, torch.zeros_like(conics))
    depths = torch.where(valid, z, torch.zeros_like(z))
    return radii, means2d, depths, conics


# --------------------------------------------------------------------- tile binning


@dataclass
class _TilePlan:
    """Gaussian lists per tile (front to back) and the chunks they are processed in."""

    n_cameras: int
    width: int
    height: int
    tiles_x: int
    tiles_y: int
    gauss_ids: Tensor  # (n_isects,) flat index c * N + n, sorted by tile then depth
    tile_offsets: Tensor  # (C * tiles_y * tiles_x,) start of each tile in gauss_ids
    tile_counts: Tensor  # (C * tiles_y * tiles_x,)
    chunks: list  # [(tile ids, longest Gaussian list, first pixel row, end pixel row)]
    tiles_per_gauss: Tensor  # (C, N)


def _bin_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int) -> _TilePlan:
    """Assign each visible Gaussian to the 16x16 tiles its box touches, sorted by depth.

    Same rule as gsplat's ``isect_tiles``: the tile range is floor/ceil of
    (mean +- radius) / 16 clamped to the image, and ties in depth keep index order,
    so each pixel sees exactly the Gaussians gsplat's kernel would, in the same order.
    """
    C, N = depths.shape
    device = means2d.device
    tw = math.ceil(width / TILE_SIZE)
    th = math.ceil(height / TILE_SIZE)
    with torch.no_grad():
        m = means2d.detach() / TILE_SIZE
        r = radii.to(m.dtype) / TILE_SIZE
        x0 = torch.floor(m[..., 0] - r[..., 0]).clamp(0, tw).long()
        x1 = torch.ceil(m[..., 0] + r[..., 0]).clamp(0, tw).long()
        y0 = torch.floor(m[..., 1] - r[..., 1]).clamp(0, th).long()
        y1 = torch.ceil(m[..., 1] + r[..., 1]).clamp(0, th).long()
        visible = (radii > 0).all(-1)
        counts = (x1 - x0) * (y1 - y0) * visible  # (C, N)

        flat_counts = counts.reshape(-1)
        ids = torch.nonzero(flat_counts > 0).squeeze(1)  # ascending c * N + n
        order = torch.sort(depths.detach().reshape(-1)[ids], stable=True).indices
        ids = ids[order]
        per = flat_counts[ids]
        rep = torch.repeat_interleave(ids, per)
        n_isects = rep.numel()
        starts = torch.cumsum(per, 0) - per
        local = torch.arange(n_isects, device=device) - torch.repeat_interleave(starts, per)
        span_x = (x1 - x0).reshape(-1)[rep]
        tile_x = x0.reshape(-1)[rep] + local % span_x.clamp_min(1)
        tile_y = y0.reshape(-1)[rep] + local // span_x.clamp_min(1)
        key = (rep // N * th + tile_y) * tw + tile_x
        key, perm = torch.sort(key, stable=True)
        gauss_ids = rep[perm]

        n_tiles = C * th * tw
        tile_counts = torch.bincount(key, minlength=n_tiles)
        tile_offsets = torch.cumsum(tile_counts, 0) - tile_counts

        chunks = _plan_chunks(tile_counts)
    return _TilePlan(C, width, height, tw, th, gauss_ids, tile_offsets, tile_counts, chunks, counts.to(torch.int32))


def _plan_chunks(tile_counts: Tensor) -> list:
    """Group non-empty tiles of similar Gaussian count so each chunk stays under the budget.

    Sorting by count keeps the padding to the chunk's longest list small; a tile whose
    list alone exceeds the budget is processed a few pixel rows at a time.
    Each chunk is ``(tile ids, longest list, first row, end row)``.
    """
    pix = TILE_SIZE * TILE_SIZE
    nonempty = torch.nonzero(tile_counts > 0).squeeze(1)
    if nonempty.numel() == 0:
        return []
    k_sorted, order = torch.sort(tile_counts[nonempty], stable=True)
    tiles = nonempty[order]
    ks = k_sorted.tolist()
    chunks = []
    i = 0
    n = len(ks)
    while i < n:
        if pix * ks[i] > CHUNK_ELEMENTS:
            rows = max(1, CHUNK_ELEMENTS // (TILE_SIZE * ks[i]))
            for r0 in range(0, TILE_SIZE, rows):
                chunks.append((tiles[i : i + 1], ks[i], r0, min(TILE_SIZE, r0 + rows)))
            i += 1
            continue
        j = i + 1
        while j < n and (j - i + 1) * pix * ks[j] <= CHUNK_ELEMENTS:
            j += 1
        chunks.append((tiles[i:j], ks[j - 1], 0, TILE_SIZE))
        i = j
    return chunks


# ----------------------------------------------------------------------- compositing


class _Chunk:
    """One chunk's pixel x Gaussian quantities, evaluated as gsplat's kernel does.

    Pixels form a (rows x 16) grid per tile, so offsets are kept per row (``dy``,
    (T, Y, K)) and per column (``dx``, (T, X, K)) and only their combinations are
    full (T, Y*X, K) tensors. ``alpha`` is zero where a Gaussian is skipped (below
    1/255, or after the pixel saturated), ``t_before`` is the transmittance in front
    of each Gaussian and ``t_final`` the transmittance left behind the last one.
    """

    def __init__(self, plan, chunk, m2, cn, op):
        tiles, k_max, r0, r1 = chunk
        device = tiles.device
        dtype = m2.dtype
        ks = torch.arange(k_max, device=device)
        counts = plan.tile_counts[tiles]
        pos = plan.tile_offsets[tiles][:, None] + ks[None, :]
        kmask = ks[None, :] < counts[:, None]
        pos.masked_fill_(~kmask, 0)
        gids = plan.gauss_ids[pos]  # (T, K)

        per_cam = plan.tiles_y * plan.tiles_x
        cam = tiles // per_cam
        ty = (tiles % per_cam) // plan.tiles_x
        tx = tiles % plan.tiles_x
        ys = ty[:, None] * TILE_SIZE + torch.arange(r0, r1, device=device)[None, :]  # (T, Y)
        xs = tx[:, None] * TILE_SIZE + torch.arange(TILE_SIZE, device=device)[None, :]  # (T, X)
        inside = (ys < plan.height)[:, :, None] & (xs < plan.width)[:, None, :]  # (T, Y, X)
        pix = (cam[:, None, None] * plan.height + ys[:, :, None]) * plan.width + xs[:, None, :]
        T, Y, X = inside.shape
        self.gids = gids
        self.inside = inside.reshape(T, Y * X)
        self.pix = pix.reshape(T, Y * X).masked_fill(~self.inside, 0)

        mx = m2[gids, 0]
        my = m2[gids, 1]
        self.ca = cn[gids, 0]
        self.cb = cn[gids, 1]
        self.cc = cn[gids, 2]
        self.op = op[gids].masked_fill(~kmask, 0.0)  # padding never contributes
        self.dx = (xs.to(dtype) + 0.5)[:, :, None] - mx[:, None, :]  # (T, X, K) pixel - mean
        self.dy = (ys.to(dtype) + 0.5)[:, :, None] - my[:, None, :]  # (T, Y, K)

        # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, assembled from row and column terms.
        sigma = (self.cb[:, None, :] * self.dy)[:, :, None, :] * self.dx[:, None, :, :]
        sigma += (0.5 * self.ca[:, None, :] * self.dx * self.dx)[:, None, :, :]
        sigma += (0.5 * self.cc[:, None, :] * self.dy * self.dy)[:, :, None, :]
        sigma = sigma.reshape(T, Y * X, k_max)
        vis = torch.exp(-sigma)
        raw = vis * self.op[:, None, :]
        alpha = raw.clamp_max(ALPHA_MAX)
        alpha.masked_fill_((raw < ALPHA_THRESHOLD) | (sigma < 0), 0.0)
        # Transmittance is non-increasing, so "would drop to <= 1e-4" marks the Gaussian where
        # the pixel stops and every one after it, exactly as the sequential kernel's early exit.
        one_minus = 1.0 - alpha
        t_after = torch.cumprod(one_minus, dim=-1)
        saturated = t_after <= TRANSMITTANCE_MIN
        if bool(saturated.any()):
            alpha.masked_fill_(saturated, 0.0)
            one_minus = 1.0 - alpha
            t_after = torch.cumprod(one_minus, dim=-1)
        self.shape = (T, Y, X, k_max)
        self.vis = vis
        self.raw = raw
        self.alpha = alpha
        self.one_minus = one_minus
        self.t_final = t_after[..., -1]  # (T, P)
        self.t_before = torch.cat([torch.ones_like(t_after[..., :1]), t_after[..., :-1]], dim=-1)


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back alpha compositing of projected Gaussians over the binned tiles.

    A custom Function so that backward recomputes each chunk rather than autograd
    storing every pixel x Gaussian intermediate of the whole image set; its gradients
    are gsplat's (including no gradient through the 0.999 clamp).
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, backgrounds, plan: _TilePlan):
        C, N, D = colors.shape
        H, W = plan.height, plan.width
        m2 = means2d.reshape(C * N, 2)
        cn = conics.reshape(C * N, 3)
        op = opacities.reshape(C * N)
        col = colors.reshape(C * N, D)

        out = torch.zeros(C * H * W, D, dtype=colors.dtype, device=colors.device)
        t_img = torch.ones(C * H * W, dtype=colors.dtype, device=colors.device)
        for chunk in plan.chunks:
            ch = _Chunk(plan, chunk, m2, cn, op)
            rgb = torch.bmm(ch.alpha * ch.t_before, col[ch.gids])  # (T, P, D)
            out[ch.pix[ch.inside]] = rgb[ch.inside]
            t_img[ch.pix[ch.inside]] = ch.t_final[ch.inside]

        out = out.reshape(C, H, W, D)
        t_img = t_img.reshape(C, H, W, 1)
        if backgrounds is not None:
            out = out + t_img * backgrounds[:, None, None, :]
        alphas = 1.0 - t_img
        ctx.plan = plan
        ctx.has_bg = backgrounds is not None
        ctx.save_for_backward(
            means2d, conics, opacities, colors, backgrounds if backgrounds is not None else alphas, alphas
        )
        return out, alphas

    @staticmethod
    def backward(ctx, v_out, v_alphas):
        means2d, conics, opacities, colors, bg_or_dummy, alphas = ctx.saved_tensors
        backgrounds = bg_or_dummy if ctx.has_bg else None
        plan: _TilePlan = ctx.plan
        C, N, D = colors.shape
        m2 = means2d.reshape(C * N, 2)
        cn = conics.reshape(C * N, 3)
        op = opacities.reshape(C * N)
        col = colors.reshape(C * N, D)

        v_out = v_out.contiguous()
        v_rgb_img = v_out.reshape(-1, D)
        v_a_img = v_alphas.reshape(-1)
        if backgrounds is not None:
            bg_dot = (v_out * backgrounds[:, None, None, :]).sum(-1).reshape(-1)
        else:
            bg_dot = torch.zeros_like(v_a_img)

        v_m2 = torch.zeros_like(m2)
        v_cn = torch.zeros_like(cn)
        v_op = torch.zeros_like(op)
        v_col = torch.zeros_like(col)
        for chunk in plan.chunks:
            ch = _Chunk(plan, chunk, m2, cn, op)
            T, Y, X, K = ch.shape
            ids = ch.gids.reshape(-1)
            g_rgb = v_rgb_img[ch.pix] * ch.inside[..., None]  # (T, P, D)
            w = ch.alpha * ch.t_before
            v_col.index_add_(0, ids, torch.bmm(w.transpose(1, 2), g_rgb).reshape(-1, D))

            # dL/d alpha_k = T_k c_k.g - (sum_{j>k} w_j c_j.g + T_final (bg.g - g_alpha)) / (1 - alpha_k)
            c_dot = torch.bmm(g_rgb, col[ch.gids].transpose(1, 2))  # (T, P, K)
            behind = torch.cumsum(w * c_dot, dim=-1)
            tail = ch.t_final * (bg_dot[ch.pix] - v_a_img[ch.pix]) * ch.inside
            total = behind[..., -1] + tail
            behind.neg_().add_(total[..., None])  # sum over j > k, plus the tail term
            v_alpha = ch.t_before * c_dot - behind / ch.one_minus
            # Only Gaussians that contributed, and not through the 0.999 clamp.
            v_alpha.masked_fill_((ch.alpha <= 0) | (ch.raw > ALPHA_MAX), 0.0)

            u = ch.vis * v_alpha  # d L / d opacity per pixel; d L / d sigma = -opacity * u
            v_op.index_add_(0, ids, u.sum(1).reshape(-1))
            u4 = u.reshape(T, Y, X, K)
            u_cols = u4.sum(1)  # (T, X, K)
            u_rows = u4.sum(2)  # (T, Y, K)
            s_x = (u_cols * ch.dx).sum(1)
            s_xx = (u_cols * ch.dx * ch.dx).sum(1)
            s_y = (u_rows * ch.dy).sum(1)
            s_yy = (u_rows * ch.dy * ch.dy).sum(1)
            s_xy = ((u4 * ch.dx[:, None, :, :]).sum(2) * ch.dy).sum(1)
            neg_op = -ch.op
            # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with dx = pixel - mean.
            v_cn_chunk = torch.stack([0.5 * s_xx, s_xy, 0.5 * s_yy], dim=-1) * neg_op[..., None]
            v_m2_chunk = torch.stack(
                [-(ch.ca * s_x + ch.cb * s_y), -(ch.cb * s_x + ch.cc * s_y)], dim=-1
            ) * neg_op[..., None]
            v_cn.index_add_(0, ids, v_cn_chunk.reshape(-1, 3))
            v_m2.index_add_(0, ids, v_m2_chunk.reshape(-1, 2))

        v_bg = None
        if backgrounds is not None and ctx.needs_input_grad[4]:
            v_bg = (v_out * (1.0 - alphas)).sum(dim=(1, 2))
        return (
            v_m2.reshape(C, N, 2),
            v_cn.reshape(C, N, 3),
            v_op.reshape(C, N),
            v_col.reshape(C, N, D),
            v_bg,
            None,
        )


# ---------------------------------------------------------------------------- entry


def rasterize_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    render_mode: str = "RGB",
    backgrounds: Optional[Tensor] = None,
    radius_clip: float = 0.0,
) -> Tuple[Tensor, Tensor, Dict]:
    """Render N Gaussians into C pinhole cameras with gsplat 1.5.3's classic rasterizer maths.

    Same contract as :func:`backend.kernels.rasterize` (see there for shapes and
    conventions). Works on any device torch supports; gradients flow to means,
    quats, scales, opacities, colors and backgrounds.
    """
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, render_mode, backgrounds)
    dtype = means.dtype
    quats, scales, opacities, colors, viewmats, Ks = (
        t.to(dtype) for t in (quats, scales, opacities, colors, viewmats, Ks)
    )
    if backgrounds is not None:
        backgrounds = backgrounds.to(dtype)
    C = viewmats.shape[0]
    N = means.shape[0]

    radii, means2d, depths, conics = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip,
    )
    opac_c = opacities[None, :].expand(C, N)
    if colors.dim() == 2:
        colors = colors[None].expand(C, N, colors.shape[-1])

    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)
    else:
        feats = colors

    plan = _bin_tiles(means2d, radii, depths, width, height)
    render_colors, render_alphas = _CompositeTiles.apply(
        means2d, conics, opac_c, feats.contiguous(), backgrounds, plan
    )
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )

    meta = {
        "radii": radii.amax(dim=-1),
        "radii_xy": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac_c,
        "tiles_per_gauss": plan.tiles_per_gauss,
        "n_isects": int(plan.gauss_ids.numel()),
        "tile_size": TILE_SIZE,
        "tile_width": plan.tiles_x,
        "tile_height": plan.tiles_y,
        "width": width,
        "height": height,
        "n_cameras": C,
    }
    return render_colors, render_alphas, meta
