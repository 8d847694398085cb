"""Preview videos of a result: the input view, a slowly rotating novel view, and 2D point tracks.

Everything here is computed from the baked per-frame arrays (one ``ObjectFrames`` per object, in
object order) and the working-resolution cameras — never from the optimizer's model — so previews
show exactly what the bundle holds and the data flows one way: baked result → previews. Frames are
rendered in chunks (bounded memory) and without gradients, on the device the caller names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from genmojo_blender.core.bundle import ObjectFrames, StaticGaussians

from .model.camera import Cameras
from .model.gaussians import GaussianBatch
from .model.scene import SceneRender, render_scene

CHUNK = 4  # frames rendered per rasterizer batch
SEARCH_RADIUS_PX = 4.0  # how far from a query point its Gaussian's projected centre may lie
MEDIAN_SAMPLES = 2_000_000  # centres used for the pivot's median (a strided subset beyond this)


# --------------------------------------------------------------------------------------------
# rendering helpers


def _batches(objects: list[ObjectFrames], times: np.ndarray, device: torch.device) -> list[GaussianBatch]:
    """Every object's baked Gaussians at the given frame indices (repeats allowed)."""
    def take(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[times], dtype=np.float32)).to(device)

    return [GaussianBatch(means=take(o.means), quats=take(o.quats), log_scales=take(o.log_scales),
                          colors=take(o.colors), opacities=take(o.opacities)) for o in objects]


def static_batch(static: StaticGaussians, frames: int, device: torch.device) -> GaussianBatch:
    """Static Gaussians (the background) repeated over ``frames`` frames, as a batch on ``device``."""
    def rep(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)
        return t[None].expand(frames, *t.shape)

    return GaussianBatch(means=rep(static.means), quats=rep(static.quats), log_scales=rep(static.log_scales),
                         colors=rep(static.colors), opacities=rep(static.opacities))


@torch.no_grad()
def _render_chunks(objects: list[ObjectFrames], times: np.ndarray, viewmats: torch.Tensor, Ks: torch.Tensor,
                   width: int, height: int, background: tuple[float, float, float], near: float, far: float,
                   device: torch.device, chunk: int = CHUNK,
                   static: StaticGaussians | None = None) -> Iterator[tuple[int, SceneRender]]:
    """Render view i with the Gaussians of frame ``times[i]`` (and the ``static`` ones, if any);
    yields (first view index, render)."""
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    for s in range(0, len(times), chunk):
        e = min(len(times), s + chunk)
        r = render_scene(_batches(objects, times[s:e], device), viewmats[s:e].float().to(device),
                         Ks[s:e].float().to(device), width, height, bg[None].repeat(e - s, 1),
                         near=near, far=far,
                         static=static_batch(static, e - s, device) if static is not None else None)
        yield s, r


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()


def _check(objects: list[ObjectFrames], cameras: Cameras) -> int:
    if not objects:
        raise ValueError("previews need at least one object")
    T = objects[0].num_frames
    if any(o.num_frames != T for o in objects) or cameras.c2w.shape[0] != T:
        raise ValueError(f"objects and cameras disagree on the frame count "
                         f"({[o.num_frames for o in objects]}, cameras {cameras.c2w.shape[0]})")
    return T


# --------------------------------------------------------------------------------------------
# input view


def input_view(objects: list[ObjectFrames], cameras: Cameras, plate: np.ndarray,
               device: torch.device, static: StaticGaussians | None = None) -> np.ndarray:
    """The input frame beside the render composited over it: (T, H, 2W, 3) uint8.

    ``plate`` (T, H, W, 3) uint8 holds the input frames at the cameras' working size. The right half
    shows how well the baked Gaussians reproduce the clip from the camera they were fitted from; with
    ``static`` (background mode) the background is rendered with the objects through the same
    (real) cameras, so the plate only shows where neither covers the image.
    """
    T = _check(objects, cameras)
    H, W = cameras.height, cameras.width
    if plate.shape != (T, H, W, 3):
        raise ValueError(f"plate has shape {plate.shape}, expected {(T, H, W, 3)}")
    out = np.empty((T, H, 2 * W, 3), np.uint8)
    out[:, :, :W] = plate
    times = np.arange(T)
    frames = torch.arange(T)
    viewmats = cameras.viewmats(frames.to(cameras.c2w.device))
    for s, r in _render_chunks(objects, times, viewmats, cameras.K, W, H, (0.0, 0.0, 0.0), cameras.near,
                               cameras.far, device, static=static):
        n = r.image.shape[0]
        bg = torch.from_numpy(plate[s:s + n]).to(device).float() / 255
        comp = r.image + (1 - r.alpha[..., None]) * bg
        out[s:s + n, :, W:] = _to_uint8(comp)
    return out


# --------------------------------------------------------------------------------------------
# rotating view


def scene_pivot(objects: list[ObjectFrames]) -> np.ndarray:
    """The point the rotating view orbits: the median of every Gaussian centre over the clip (3,).

    The median keeps a few stray Gaussians far from the scene from dragging the pivot away. Very
    large scenes use an evenly strided subset of the centres.
    """
    pts = np.concatenate([o.means.reshape(-1, 3) for o in objects], 0)
    if len(pts) > MEDIAN_SAMPLES:
        pts = pts[:: math.ceil(len(pts) / MEDIAN_SAMPLES)]
    return np.median(pts.astype(np.float64), axis=0)


def _triangle(start: float, lo: float, hi: float, step: float, n: int) -> np.ndarray:
    """n values from ``start`` moving by ``step`` per frame, bouncing between ``lo`` and ``hi``."""
    span = hi - lo
    if span <= 0:
        return np.full(n, lo)
    x = np.mod(start - lo + step * np.arange(n), 2 * span)
    return lo + np.where(x <= span, x, 2 * span - x)


def orbit_schedule(num_views: int, passes: int, azimuth_deg: float,
                   elevation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation (degrees) of each view of the rotating preview.

    Both start at 0 (the input view) and move linearly, bouncing at their ends, with a step of
    2·range/num_views per view: the azimuth sweeps 0 → +a → −a → 0 and the elevation 0 → e → 0
    over the whole video, so it ends where it began. ``passes`` is only checked here.
    """
    if passes < 1:
        raise ValueError("passes must be at least 1")
    a, e = abs(azimuth_deg), abs(elevation_deg)
    az = _triangle(0.0, -a, a, 2 * (2 * a) / num_views, num_views)
    el = _triangle(0.0, 0.0, e, 2 * e / num_views, num_views)
    return az, el


def _rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def orbit_camera(c2w: np.ndarray, pivot: np.ndarray, pullback: float, azimuth_deg: float,
                 elevation_deg: float) -> np.ndarray:
    """Camera-to-world (4,4, OpenCV axes) of one view of the rotating preview.

    The input camera is moved back along its viewing axis until its distance to ``pivot`` is
    ``pullback`` times the original, then swung rigidly about the pivot: by ``azimuth_deg`` about its
    own up axis (positive: towards its right) and by ``elevation_deg`` about its own right axis
    (positive: it rises and looks down). An input camera that looked at the pivot still does.
    """
    c2w = np.asarray(c2w, np.float64)
    R, C = c2w[:3, :3], c2w[:3, 3]
    fwd = R[:, 2]
    v = C - pivot
    a = float(v @ fwd)
    # back off by s ≥ 0 along −fwd so that |v − s·fwd| = pullback·|v|
    s = a + math.sqrt(max(a * a + (pullback * pullback - 1.0) * float(v @ v), 0.0))
    C = C - max(s, 0.0) * fwd
    # OpenCV: +x right, +y down. Turning −az about y moves the camera right; −el about x raises it.
    Q = _rot_y(-azimuth_deg) @ _rot_x(-elevation_deg)
    W = R @ Q @ R.T  # the same rotation in world coordinates
    out = np.eye(4)
    out[:3, :3] = W @ R
    out[:3, 3] = pivot + W @ (C - pivot)
    return out


def rotating_view(objects: list[ObjectFrames], cameras: Cameras, device: torch.device, *, passes: int,
                  azimuth_deg: float, elevation_deg: float, pullback: float,
                  static: StaticGaussians | None = None) -> np.ndarray:
    """A novel view swinging slowly around the scene while the clip plays: (passes·T, H, W, 3) uint8.

    The clip plays ``passes`` times on a white background; view i shows frame i mod T from that
    frame's camera (intrinsics and pose, so moving cameras work), pulled back by ``pullback`` and
    orbited about the scene pivot as ``orbit_schedule`` and ``orbit_camera`` describe. It shows the
    3D structure the input view cannot: depth, occlusion, the backs of objects. ``static`` (background
    mode's background) is drawn too; the pivot stays that of the objects.
    """
    T = _check(objects, cameras)
    n = passes * T
    az, el = orbit_schedule(n, passes, azimuth_deg, elevation_deg)
    pivot = scene_pivot(objects)
    times = np.arange(n) % T
    c2w = cameras.c2w.detach().double().cpu().numpy()
    views = np.stack([orbit_camera(c2w[t], pivot, pullback, az[i], el[i]) for i, t in enumerate(times)])
    viewmats = torch.linalg.inv(torch.from_numpy(views)).float()
    Ks = cameras.K.detach().cpu()[torch.from_numpy(times)]
    out = np.empty((n, cameras.height, cameras.width, 3), np.uint8)
    far = cameras.far * max(pullback, 1.0)  # the pulled-back camera must still reach the far side
    for s, r in _render_chunks(objects, times, viewmats, Ks, cameras.width, cameras.height, (1.0, 1.0, 1.0),
                               cameras.near, far, device, static=static):
        out[s:s + r.image.shape[0]] = _to_uint8(r.image)
    return out


# --------------------------------------------------------------------------------------------
# trajectories


@dataclass
class Tracks:
    """2D trajectories of selected Gaussians in the input view.

    points (T, M, 2) float32 pixel coordinates (pixel centres at +0.5; NaN where the centre is
    behind the camera), visible (T, M) bool, object_index (M,) which object (0-based, object
    order), gaussian_index (M,) which of its Gaussians, query_frame (M,) the frame it was chosen at.
    """

    points: np.ndarray
    visible: np.ndarray
    object_index: np.ndarray
    gaussian_index: np.ndarray
    query_frame: np.ndarray

    KEYS = ("points", "visible", "object_index", "gaussian_index", "query_frame")

    @property
    def num_tracks(self) -> int:
        return int(self.points.shape[1])

    def save_npz(self, path: str | Path) -> None:
        """Plain arrays only, so ``np.load(path, allow_pickle=False)`` reads it back."""
        np.savez(path, points=self.points.astype(np.float32), visible=self.visible.astype(bool),
                 object_index=self.object_index.astype(np.int64),
                 gaussian_index=self.gaussian_index.astype(np.int64),
                 query_frame=self.query_frame.astype(np.int64))

    @classmethod
    def load_npz(cls, path: str | Path) -> "Tracks":
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in cls.KEYS})


def _project(means: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (B,N,3) through B cameras → pixel coordinates (B,N,2) and camera depth (B,N)."""
    cam = means @ viewmats[:, :3, :3].transpose(1, 2) + viewmats[:, None, :3, 3]
    z = cam[..., 2]
    uv = cam[..., :2] / z[..., None].clamp_min(1e-12)
    uv = uv @ Ks[:, :2, :2].transpose(1, 2) + Ks[:, None, :2, 2]
    return uv, z


def _lookup(img: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of img (H,W,...) at the pixels containing uv (M,2), and whether uv lies in the image."""
    H, W = img.shape[:2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    x = uv[:, 0].nan_to_num(0).floor().long().clamp(0, W - 1)
    y = uv[:, 1].nan_to_num(0).floor().long().clamp(0, H - 1)
    return img[y, x], inside


def _near_depth(z: torch.Tensor, depth: torch.Tensor, tol: float) -> torch.Tensor:
    return (depth > 0) & ((z - depth).abs() <= tol * depth)


def query_lattice(width: int, height: int, grid: int) -> np.ndarray:
    """The grid×grid query points (grid², 2) in pixel coordinates, a margin of width/64 inside."""
    m = width / 64
    xs = np.linspace(m, width - m, grid)
    ys = np.linspace(m, height - m, grid)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1)


def _match(uv_q: torch.Tensor, depth_q: torch.Tensor, uv_g: torch.Tensor, z_g: torch.Tensor, tol: float,
           near: float, budget: int = 1 << 22) -> torch.Tensor:
    """For each query point the nearest Gaussian (index) visible there, or −1.

    Visible there: projected centre within SEARCH_RADIUS_PX and camera depth within ±tol of the
    rendered depth at the query pixel. Taking the nearest within the largest radius picks the same
    Gaussian as a search whose radius doubles from 0.25 px until something is found.
    """
    cand = torch.nonzero(z_g > near).squeeze(1)
    out = torch.full((len(uv_q),), -1, dtype=torch.long, device=uv_q.device)
    if len(cand) == 0 or len(uv_q) == 0:
        return out
    uv_c, z_c = uv_g[cand], z_g[cand]
    step = max(1, budget // len(cand))
    for s in range(0, len(uv_q), step):
        d2 = ((uv_q[s:s + step, None, :] - uv_c[None]) ** 2).sum(-1)
        ok = _near_depth(z_c[None], depth_q[s:s + step, None], tol) & (d2 <= SEARCH_RADIUS_PX ** 2)
        d2 = torch.where(ok, d2, torch.full_like(d2, float("inf")))
        best, arg = d2.min(1)
        out[s:s + step] = torch.where(best.isfinite(), cand[arg], out[s:s + step])
    return out


@torch.no_grad()
def trajectories(objects: list[ObjectFrames], cameras: Cameras, device: torch.device, *, grid: int,
                 trace: int, visible_tol: float = 0.1) -> Tracks:
    """Follow Gaussians that are seen on a lattice of image points through the clip (input view).

    For each object, at the first frame where it renders (instance weight > 0.5 somewhere), the
    lattice points it clearly covers (weight > 0.75) each pick the nearest of its Gaussians that is
    visible there. A track is that Gaussian's projected centre at every frame; it counts as visible
    where it lies in the image and its depth is within ±``visible_tol`` (relative) of the rendered
    depth at its pixel, i.e. nothing else is in front of it. ``trace`` is accepted so that callers
    pass one set of track settings; it only matters to ``trajectory_video``.
    """
    del trace
    T = _check(objects, cameras)
    W, H = cameras.width, cameras.height
    K = len(objects)
    frames = torch.arange(T, device=cameras.c2w.device)
    viewmats = cameras.viewmats(frames).float().to(device)
    Ks = cameras.K.float().to(device)
    times = np.arange(T)
    q_uv = torch.from_numpy(query_lattice(W, H, grid)).float().to(device)
    black = (0.0, 0.0, 0.0)

    # 1. query points: render until every object has been seen once
    chosen: dict[int, tuple[int, np.ndarray]] = {}  # object → (query frame, Gaussian indices)
    last_depth: tuple[int, torch.Tensor] | None = None  # reused by step 3
    for s, r in _render_chunks(objects, times, viewmats, Ks, W, H, black, cameras.near, cameras.far, device,
                               chunk=1):
        last_depth = (s, r.depth[0])
        for b in range(r.image.shape[0]):
            t = s + b
            for k in range(K):
                if k in chosen or not bool((r.instance[b, ..., k] > 0.5).any()):
                    continue
                inst, _ = _lookup(r.instance[b, ..., k], q_uv)
                q = q_uv[inst > 0.75]
                depth_q, _ = _lookup(r.depth[b], q)
                o = objects[k]
                means = torch.from_numpy(np.ascontiguousarray(o.means[t:t + 1], np.float32)).to(device)
                uv_g, z_g = _project(means, viewmats[t:t + 1], Ks[t:t + 1])
                idx = _match(q, depth_q, uv_g[0], z_g[0], visible_tol, cameras.near)
                idx = idx[idx >= 0].cpu().numpy()
                _, first = np.unique(idx, return_index=True)  # two points may pick one Gaussian
                chosen[k] = (t, idx[np.sort(first)])
        if len(chosen) == K:
            break

    obj_idx = np.concatenate([np.full(len(chosen[k][1]), k) for k in sorted(chosen)] or [np.zeros(0)])
    g_idx = np.concatenate([chosen[k][1] for k in sorted(chosen)] or [np.zeros(0)])
    q_frame = np.concatenate([np.full(len(chosen[k][1]), chosen[k][0]) for k in sorted(chosen)]
                             or [np.zeros(0)])
    obj_idx, g_idx, q_frame = obj_idx.astype(np.int64), g_idx.astype(np.int64), q_frame.astype(np.int64)
    M = len(g_idx)
    # 2. every track's centre through the clip
    centres = np.zeros((T, M, 3), np.float32)
    for k in range(K):
        sel = obj_idx == k
        if sel.any():
            centres[:, sel] = objects[k].means[:, g_idx[sel]]
    uv, z = _project(torch.from_numpy(centres).to(device), viewmats, Ks)
    uv = torch.where((z > cameras.near)[..., None], uv, torch.full_like(uv, float("nan")))
    # 3. visibility against the rendered depth of each frame
    visible = torch.zeros(T, M, dtype=torch.bool, device=device)

    def mark(t: int, depth_map: torch.Tensor) -> None:
        depth, inside = _lookup(depth_map, uv[t])
        visible[t] = inside & (z[t] > cameras.near) & _near_depth(z[t], depth, visible_tol)

    if M:
        assert last_depth is not None
        mark(*last_depth)
        rest = np.array([t for t in times if t != last_depth[0]], np.int64)
        sel = torch.from_numpy(rest).to(device)
        for s, r in _render_chunks(objects, rest, viewmats[sel], Ks[sel], W, H, black, cameras.near,
                                   cameras.far, device):
            for b in range(r.image.shape[0]):
                mark(int(rest[s + b]), r.depth[b])
    return Tracks(points=uv.float().cpu().numpy(), visible=visible.cpu().numpy(), object_index=obj_idx,
                  gaussian_index=g_idx, query_frame=q_frame)


def track_colors(tracks: Tracks, width: int) -> np.ndarray:
    """One RGB uint8 colour per track (M, 3): a rainbow by the x position of its query point."""
    import cv2

    M = tracks.num_tracks
    if M == 0:
        return np.zeros((0, 3), np.uint8)
    x = tracks.points[tracks.query_frame, np.arange(M), 0]
    level = np.clip(np.nan_to_num(x / max(width, 1)) * 255, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(level[:, None], cv2.COLORMAP_RAINBOW)[:, 0]
    return bgr[:, ::-1].copy()


def _visible_runs(v: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], v.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def trajectory_video(tracks: Tracks, frames_rgb: np.ndarray, *, trace: int) -> np.ndarray:
    """The tracks drawn over ``frames_rgb`` (T, H, W, 3) uint8: (T, H, W, 3) uint8.

    At frame t each visible track shows a dot where it is and its trail over frames t−trace..t,
    drawn between consecutive frames where it was visible. The colour follows the query point's x
    position, so neighbouring points share a hue and crossings stand out. Pass the render
    composited over the input frames, so the points sit on what they track.
    """
    import cv2

    T, H, W, _ = frames_rgb.shape
    if tracks.points.shape[0] != T:
        raise ValueError(f"tracks cover {tracks.points.shape[0]} frames, the video {T}")
    colors = [tuple(int(c) for c in rgb) for rgb in track_colors(tracks, W)]
    SHIFT = 4  # sub-pixel drawing: coordinates in 1/16 px
    fixed = np.round((tracks.points.astype(np.float64) - 0.5) * (1 << SHIFT))  # cv2 centres pixels at 0
    vis = tracks.visible & np.isfinite(tracks.points).all(-1)
    fixed = np.where(vis[..., None], fixed, 0).astype(np.int64)
    out = np.ascontiguousarray(frames_rgb.copy())
    for t in range(T):
        img = out[t]
        lo = max(0, t - trace)
        for m in np.nonzero(vis[t])[0]:
            runs = _visible_runs(vis[lo:t + 1, m])
            lines = [fixed[lo + a:lo + b, m].astype(np.int32)[:, None, :] for a, b in runs if b - a > 1]
            if lines:
                cv2.polylines(img, lines, False, colors[m], thickness=2, lineType=cv2.LINE_AA, shift=SHIFT)
            cv2.circle(img, tuple(int(v) for v in fixed[t, m]), 2 << SHIFT, colors[m], thickness=-1,
                       lineType=cv2.LINE_AA, shift=SHIFT)
    return out
