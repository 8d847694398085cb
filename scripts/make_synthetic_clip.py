"""Built-in sample clip: a small synthetic multi-object video with real occlusion and ground truth.

Why it exists
    The project turns a video plus per-object masks into per-object animated 3D Gaussians. The README
    demo and the CPU tests need such an input, and nothing generated is committed, so the project makes
    its own: a short clip whose objects cross each other (so one really hides part of another for a
    few frames) together with the masks a video segmenter would give and the exact scene behind it.

What the clip is (a small but physically consistent 2.5D world)
    * A static pinhole camera at the world origin looking down +z, OpenCV axes (x right, y down,
      z forward), so camera space is world space. Vertical field of view 49.1 degrees, square pixels,
      principal point at the image centre::

          fy = fx = (H / 2) / tan(49.1deg / 2),   cx = W / 2,   cy = H / 2

      ``K`` maps camera-space points to continuous pixel coordinates in which pixel (row i, col j)
      covers [j, j+1) x [i, i+1) and has its centre at (j + 0.5, i + 0.5) (the convention of gsplat
      and most Gaussian-splatting code); ``W / 2, H / 2`` is then exactly the image centre.
    * A textured background plane far away (z = 20): smooth colour gradient plus a low-contrast
      checker and low-frequency noise, so it is not flat.
    * K (1..5) objects: thin fronto-parallel textured cards (striped disc, checkered rounded
      rectangle, radial-gradient ellipse, dotted hexagon, banded diamond), each in a distinct saturated
      colour and shaded like a slightly domed surface. Object k sits at its own depth z_k(t) (depth
      ranges of different objects never overlap, so the depth order is well defined), moves along a
      straight image-space path through the middle of the frame (paths of different objects cross),
      rotates slowly in its plane, and has a fixed world-space size, so its apparent size is
      ``f * R_k / z_k(t)`` (size proportional to 1 / depth).
    * Rendering: painter's algorithm by depth at 4x4 supersampling; RGB frames are the block mean.
      Masks are the VISIBLE (modal) pixels of each object, like a video segmenter gives: a pixel
      belongs to an object when at least half of its 16 subsamples show that object (an exact
      half-half split between two objects goes to the nearer one; at the rare junction of three
      labels in one pixel the label seen by most subsamples wins), so object masks never overlap,
      and the background mask (id 000) is 255 exactly where no object mask is set.

    The layout is drawn from ``seed`` and re-drawn (deterministically) until every object is clearly
    visible in frame 0, every object stays mostly inside the frame and never disappears completely,
    and, with two or more objects, some object is at least 20% hidden by another for several frames
    (min(3, frames // 4) of them, so very short clips of 1-3 frames need not show occlusion).

A moving camera (``--camera_motion pan``) translates sideways along ``camera_path`` (no rotation,
no change of depth): a card at depth z shifts by ``-f * c / z`` in the image and keeps its size, and
the background plane shifts by whole supersamples of one larger canvas, so every frame stays exact.
Its world is the frame-0 camera moved by a fixed rotation and offset (``world_from_camera0``). The
clip then also gets ``megasam.npz`` in MegaSAM's format (``images`` (T,H,W,3) uint8, ``depths``
(T,H,W) float16 z-depth of the visible surface, ``intrinsic`` (3,3) K, ``cam_c2w`` (T,4,4) OpenCV
axes) and ``background.png``, frame 0's background without objects (the inpainted-background input).

Output layout (the project's input layout)::

    OUT_DIR/JPEGImages/00000.png ...      RGB frames, 8-bit PNG
    OUT_DIR/Annotations/000/00000.png ... background mask (255 where no object is visible)
    OUT_DIR/Annotations/001/00000.png ... one folder per object, binary 0/255 single-channel PNGs
    OUT_DIR/ground_truth.json             scene ground truth (see ``make_clip``)
    OUT_DIR/clip.mp4                      only with --video: the same frames, mp4v, 12 fps
    OUT_DIR/megasam.npz, background.png   only with --camera_motion pan (above)

Usage::

    python scripts/make_synthetic_clip.py OUT_DIR [--width 96] [--height 96] [--frames 16]
                                                  [--objects 3] [--seed 0] [--video]
                                                  [--camera_motion {static,pan}] [--camera_pan 0.3]

Same arguments give byte-identical PNGs. Only numpy and OpenCV are needed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FPS = 12
FOVY_DEG = 49.1
SUPERSAMPLE = 4
BACKGROUND_DEPTH = 20.0
MAX_OBJECTS = 5
MIN_SIZE = 32

OCCLUSION_THRESHOLD = 0.2  # a frame counts as an occlusion frame when some object is >= 20% hidden
MAX_OCCLUDED = 0.85  # no object is ever hidden more than this (its mask never vanishes)
MAX_TRUNCATED = 0.25  # at most this much of an object's area may lie outside the frame
MIN_VISIBLE_FRAME0 = 0.8  # every object shows at least this fraction of its area in frame 0
MAX_ATTEMPTS = 200

CAMERA_MOTIONS = ("static", "pan")
MEGASAM_NAME = "megasam.npz"  # moving camera only: the cameras and depths in MegaSAM's npz format
BACKGROUND_NAME = "background.png"  # moving camera only: the clean background of frame 0
# The moving camera's world is not its frame-0 camera (as MegaSAM's world need not be): a fixed
# rotation about y and an offset, so that a camera-to-world matrix confused with its inverse shows.
WORLD_ROTATION_DEG = 20.0
WORLD_OFFSET = (0.5, -0.2, 1.0)

SHAPES = ("striped disc", "checkered rounded rectangle", "radial-gradient ellipse",
          "dotted hexagon", "banded diamond")
COLORS = (  # (name, sRGB in 0..1): saturated and far from the muted background
    ("red", (0.90, 0.12, 0.10)),
    ("green", (0.10, 0.72, 0.18)),
    ("blue", (0.12, 0.30, 0.95)),
    ("yellow", (0.98, 0.80, 0.05)),
    ("magenta", (0.82, 0.12, 0.80)),
)

_FRAME_NAME = re.compile(r"^[0-9]{5}\.png$")
_OBJECT_DIR = re.compile(r"^[0-9]{3}$")


def intrinsics(width: int, height: int) -> np.ndarray:
    """The 3x3 pinhole matrix of the clip's camera (see the module docstring for the convention)."""
    f = (height / 2.0) / math.tan(math.radians(FOVY_DEG) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------------------------------
# Shapes and textures, in the object's own frame: (a, b) in units of the circumradius, all shapes
# fit inside the unit circle so ``radius_px`` is a true bounding radius.


def _inside(shape: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if shape == 0:  # disc
        return a * a + b * b <= 0.97 ** 2
    if shape == 1:  # rounded rectangle, half sizes 0.9 x 0.6, corner radius 0.25
        c = 0.25
        qa = np.maximum(np.abs(a) - (0.9 - c), 0.0)
        qb = np.maximum(np.abs(b) - (0.6 - c), 0.0)
        return (np.abs(a) <= 0.9) & (np.abs(b) <= 0.6) & (qa * qa + qb * qb <= c * c)
    if shape == 2:  # ellipse, semi-axes 1 x 0.62
        return a * a + (b / 0.62) ** 2 <= 1.0
    if shape == 3:  # regular hexagon, circumradius 0.97
        h = 0.97 * math.sqrt(3.0) / 2.0
        inside = np.abs(b) <= h
        for ang in (math.pi / 6.0, 5.0 * math.pi / 6.0):
            inside &= np.abs(a * math.cos(ang) + b * math.sin(ang)) <= h
        return inside
    if shape == 4:  # diamond (rhombus), half diagonals 0.97 x 0.68
        return np.abs(a) / 0.97 + np.abs(b) / 0.68 <= 1.0
    raise ValueError(f"unknown shape index {shape}")


def _texture(shape: int, color: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RGB (..., 3) in 0..1 of the object's surface at local coordinates (a, b)."""
    white = np.ones(3)
    col = np.broadcast_to(color, a.shape + (3,)).copy()
    if shape == 0:  # stripes across the disc
        s = (np.sin(2.0 * math.pi * 2.5 * a) > 0.0)[..., None]
        col = np.where(s, col, 0.35 * col)
    elif shape == 1:  # checker
        s = ((np.floor(a / 0.4) + np.floor(b / 0.4)) % 2 == 0)[..., None]
        col = np.where(s, col, 0.45 * col + 0.55 * white)
    elif shape == 2:  # radial gradient: bright centre, dark rim
        g = np.clip(np.sqrt(a * a + (b / 0.62) ** 2), 0.0, 1.0)[..., None]
        col = col * (1.0 - 0.7 * g) + 0.45 * white * (1.0 - g) ** 2
    elif shape == 3:  # white dots on a grid
        da = np.mod(a, 0.36) - 0.18
        db = np.mod(b, 0.36) - 0.18
        s = (da * da + db * db < 0.085 ** 2)[..., None]
        col = np.where(s, 0.2 * col + 0.8 * white, col)
    elif shape == 4:  # concentric diamond bands
        s = (np.floor((np.abs(a) / 0.97 + np.abs(b) / 0.68) / 0.22) % 2 == 0)[..., None]
        col = np.where(s, col, 0.4 * col)
    # Shading of a slightly domed surface lit from the camera.
    rho2 = np.clip(a * a + b * b, 0.0, 1.0)
    col = col * (0.72 + 0.28 * np.sqrt(1.0 - rho2))[..., None]
    return np.clip(col, 0.0, 1.0)


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Supersampled RGB of the far background plane: gradient + low-contrast checker + noise."""
    s = SUPERSAMPLE
    hs, ws = height * s, width * s
    y = (np.arange(hs) + 0.5) / hs
    x = (np.arange(ws) + 0.5) / ws
    xx, yy = np.meshgrid(x, y)
    top_left = np.array([0.52, 0.58, 0.66])
    top_right = np.array([0.62, 0.64, 0.70])
    bottom_left = np.array([0.66, 0.62, 0.56])
    bottom_right = np.array([0.78, 0.71, 0.60])
    w = [((1 - xx) * (1 - yy))[..., None], (xx * (1 - yy))[..., None],
         ((1 - xx) * yy)[..., None], (xx * yy)[..., None]]
    bg = w[0] * top_left + w[1] * top_right + w[2] * bottom_left + w[3] * bottom_right
    cell = max(width, height) / 8.0  # checker cell in pixels
    checker = ((np.floor(xx * width / cell) + np.floor(yy * height / cell)) % 2) * 2.0 - 1.0
    bg += 0.035 * checker[..., None]
    for grid, grey_amp, colour_amp in ((5, 0.05, 0.015), (14, 0.03, 0.01)):
        coarse = rng.random((grid, grid, 4)).astype(np.float32)
        noise = cv2.resize(coarse, (ws, hs), interpolation=cv2.INTER_CUBIC).astype(np.float64) - 0.5
        bg += 2.0 * grey_amp * noise[..., 3:4] + 2.0 * colour_amp * noise[..., :3]
    return np.clip(bg, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# The moving camera


def camera_path(width: int, height: int, frames: int, pan: float) -> np.ndarray:
    """(frames, 3) translation of the moving camera from its frame-0 position, camera-0 axes.

    A pan of ``pan`` scene units to the right over the clip with a small vertical arc
    (``-pan/4 * sin(pi t)``, upwards in the middle), no rotation and no change of depth, so the
    fronto-parallel cards stay fronto-parallel at their own depth. Each translation is rounded so
    that the far background plane moves by a whole number of supersamples
    (``translation * f / BACKGROUND_DEPTH * SUPERSAMPLE`` is an integer), which lets it be cut
    exactly from one larger canvas; the cards are drawn at their exact positions.
    """
    f = intrinsics(width, height)[1, 1]
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    raw = np.stack([pan * t, -0.25 * pan * np.sin(np.pi * t), np.zeros_like(t)], axis=1)
    unit = BACKGROUND_DEPTH / (f * SUPERSAMPLE)
    return np.round(raw / unit) * unit


def world_from_camera0() -> np.ndarray:
    """(4, 4) pose of the frame-0 camera in the moving clip's world (OpenCV camera axes)."""
    a = math.radians(WORLD_ROTATION_DEG)
    g = np.eye(4)
    g[:3, :3] = [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
    g[:3, 3] = WORLD_OFFSET
    return g


def camera_to_world(camera: np.ndarray) -> np.ndarray:
    """(frames, 4, 4) camera-to-world of the moving camera: ``world_from_camera0() @ [I | c(t)]``."""
    c2w = np.repeat(np.eye(4)[None], len(camera), axis=0)
    c2w[:, :3, 3] = camera
    return world_from_camera0()[None] @ c2w


# --------------------------------------------------------------------------------------------------
# Scene layout


@dataclass(frozen=True)
class _Object:
    shape: int
    color_name: str
    color: tuple[float, float, float]
    depth_base: float  # z at mid-clip
    depth_drift: float  # z goes from depth_base - drift to depth_base + drift over the clip
    world_radius: float  # circumradius in scene units
    start_px: tuple[float, float]  # image position of the centre at t = 0
    end_px: tuple[float, float]  # image position of the centre at t = 1
    pace: float  # time warp exponent: the object is at start + (end - start) * t ** pace
    angle0: float  # in-plane rotation at t = 0 (radians)
    spin: float  # in-plane rotation over the whole clip (radians)


def _draw_layout(rng: np.random.Generator, width: int, height: int, objects: int) -> list[_Object]:
    """Random scene: objects start spread around the frame and move to roughly opposite sides."""
    f = intrinsics(width, height)[1, 1]
    nominal = min(width, height) * (0.22 - 0.02 * objects)  # apparent radius at mid-clip, px
    reach_x = width / 2.0 - nominal
    reach_y = height / 2.0 - nominal
    ranks = rng.permutation(objects)  # depth layer of each object (0 = nearest)
    base_angle = rng.uniform(0.0, 2.0 * math.pi)
    out = []
    for k in range(objects):
        depth_base = 3.0 + 1.4 * ranks[k]
        drift = rng.uniform(0.35, 0.55) * rng.choice([-1.0, 1.0])
        r_px = nominal * rng.uniform(0.85, 1.15)
        phi = base_angle + 2.0 * math.pi * k / objects + rng.uniform(-0.3, 0.3)
        psi = phi + math.pi + rng.uniform(-0.6, 0.6)
        rho0, rho1 = rng.uniform(0.75, 1.0, size=2)
        name, color = COLORS[k]
        out.append(_Object(
            shape=k, color_name=name, color=color,
            depth_base=depth_base, depth_drift=drift,
            world_radius=r_px * depth_base / f,
            start_px=(width / 2.0 + rho0 * reach_x * math.cos(phi),
                      height / 2.0 + rho0 * reach_y * math.sin(phi)),
            end_px=(width / 2.0 + rho1 * reach_x * math.cos(psi),
                    height / 2.0 + rho1 * reach_y * math.sin(psi)),
            pace=float(np.exp(rng.uniform(-0.4, 0.4))),
            angle0=rng.uniform(0.0, 2.0 * math.pi),
            spin=rng.uniform(0.4, 1.0) * rng.choice([-1.0, 1.0]),
        ))
    return out


def _trajectory(obj: _Object, t: float, width: int, height: int) -> tuple[float, float, float, float, float]:
    """(u, v, z, radius_px, angle) of an object at normalised time t in [0, 1]."""
    f = intrinsics(width, height)[1, 1]
    w = t ** obj.pace
    u = obj.start_px[0] + (obj.end_px[0] - obj.start_px[0]) * w
    v = obj.start_px[1] + (obj.end_px[1] - obj.start_px[1]) * w
    z = obj.depth_base + obj.depth_drift * (2.0 * t - 1.0)
    return u, v, z, f * obj.world_radius / z, obj.angle0 + obj.spin * t


def _local_grid(u: float, v: float, r: float, angle: float):
    """Supersample indices of an object's bounding box and its local (a, b) coordinates there."""
    s = SUPERSAMPLE
    x0 = math.floor((u - r) * s - 0.5)
    x1 = math.ceil((u + r) * s - 0.5) + 1
    y0 = math.floor((v - r) * s - 0.5)
    y1 = math.ceil((v + r) * s - 0.5) + 1
    xs = (np.arange(x0, x1) + 0.5) / s
    ys = (np.arange(y0, y1) + 0.5) / s
    dx = (xs[None, :] - u) / r
    dy = (ys[:, None] - v) / r
    c, sn = math.cos(angle), math.sin(angle)
    a = c * dx + sn * dy
    b = -sn * dx + c * dy
    return (x0, x1, y0, y1), a, b


def _clip_box(box, ws: int, hs: int):
    x0, x1, y0, y1 = box
    cx0, cx1 = max(x0, 0), min(x1, ws)
    cy0, cy1 = max(y0, 0), min(y1, hs)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))


def _rasterize(layout: list[_Object], width: int, height: int, frames: int, camera: np.ndarray | None = None):
    """Per frame: the supersampled id buffer (0 = background, k+1 = object k) and per-object stats.

    ``camera`` (frames, 3) is the camera's translation from its frame-0 position (moving camera); a
    card at depth z then appears shifted by -f·c/z, with its size unchanged (pure translation)."""
    s = SUPERSAMPLE
    hs, ws = height * s, width * s
    n = len(layout)
    states = np.zeros((frames, n, 5))
    total = np.zeros((frames, n))
    in_frame = np.zeros((frames, n))
    visible = np.zeros((frames, n))
    ids = np.zeros((frames, hs, ws), dtype=np.uint8)
    for fi in range(frames):
        t = fi / (frames - 1) if frames > 1 else 0.0
        for k, obj in enumerate(layout):
            states[fi, k] = _trajectory(obj, t, width, height)
            if camera is not None:
                f = intrinsics(width, height)[1, 1]
                states[fi, k, 0] -= f * camera[fi, 0] / states[fi, k, 2]
                states[fi, k, 1] -= f * camera[fi, 1] / states[fi, k, 2]
        for k in np.argsort(-states[fi, :, 2], kind="stable"):  # far to near
            u, v, _z, r, ang = states[fi, k]
            box, a, b = _local_grid(u, v, r, ang)
            inside = _inside(layout[k].shape, a, b)
            total[fi, k] = inside.sum()
            clipped = _clip_box(box, ws, hs)
            if clipped is None:
                continue
            dst, src = clipped
            part = inside[src]
            in_frame[fi, k] = part.sum()
            ids[fi][dst][part] = k + 1
        counts = np.bincount(ids[fi].ravel(), minlength=n + 1)
        visible[fi] = counts[1:n + 1]
    occluded = (in_frame - visible) / np.maximum(total, 1)
    truncated = (total - in_frame) / np.maximum(total, 1)
    return ids, states, total, occluded, truncated


def _acceptable(occluded: np.ndarray, truncated: np.ndarray, frames: int) -> bool:
    visible = 1.0 - occluded - truncated
    if np.any(visible[0] < MIN_VISIBLE_FRAME0):
        return False
    if np.any(truncated > MAX_TRUNCATED) or np.any(occluded > MAX_OCCLUDED):
        return False
    if occluded.shape[1] >= 2:
        needed = min(3, frames // 4)
        if int(np.sum(occluded.max(axis=1) >= OCCLUSION_THRESHOLD)) < needed:
            return False
    return True


def _masks(ids: np.ndarray, depths: np.ndarray, width: int, height: int) -> np.ndarray:
    """(objects, H, W) bool visible masks from the supersampled id buffer.

    Each pixel gets the label (background or object) seen by most of its subsamples; ties go to an
    object over the background and to the nearer of two objects. Where only one object and the
    background meet this is exactly "the object covers at least 50% of the pixel"; at junctions of
    several objects it never leaves a pixel that is fully covered by objects as background.
    """
    s = SUPERSAMPLE
    n = len(depths)
    counts = np.stack([(ids == i).reshape(height, s, width, s).sum(axis=(1, 3)) for i in range(n + 1)])
    priority = np.zeros(n + 1, dtype=np.int64)
    priority[1 + np.argsort(-depths, kind="stable")] = np.arange(1, n + 1)  # nearest = highest
    label = np.argmax(counts.astype(np.int64) * (n + 2) + priority[:, None, None], axis=0)
    return label[None] == np.arange(1, n + 1)[:, None, None]


def _shade(ids: np.ndarray, layout: list[_Object], states: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """8-bit RGB frame (H, W, 3) from one supersampled id buffer."""
    s = SUPERSAMPLE
    hs, ws = ids.shape
    col = bg.copy()
    for k, obj in enumerate(layout):
        u, v, _z, r, ang = states[k]
        box, a, b = _local_grid(u, v, r, ang)
        clipped = _clip_box(box, ws, hs)
        if clipped is None:
            continue
        dst, src = clipped
        mine = ids[dst] == k + 1
        if not mine.any():
            continue
        tex = _texture(obj.shape, np.asarray(obj.color), a[src][mine], b[src][mine])
        col[dst][mine] = tex
    rgb = col.reshape(hs // s, s, ws // s, s, 3).mean(axis=(1, 3))
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Output


def _clear_stale(out_dir: Path) -> None:
    """Remove files of an earlier clip in OUT_DIR (only names of this layout are touched)."""
    img_dir = out_dir / "JPEGImages"
    if img_dir.is_dir():
        for p in img_dir.iterdir():
            if p.is_file() and _FRAME_NAME.match(p.name):
                p.unlink()
    ann_dir = out_dir / "Annotations"
    if ann_dir.is_dir():
        for d in ann_dir.iterdir():
            if d.is_dir() and _OBJECT_DIR.match(d.name):
                for p in d.iterdir():
                    if p.is_file() and _FRAME_NAME.match(p.name):
                        p.unlink()
                if not any(d.iterdir()):
                    d.rmdir()
    for name in ("clip.mp4", "ground_truth.json", MEGASAM_NAME, BACKGROUND_NAME):
        p = out_dir / name
        if p.is_file():
            p.unlink()


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def _write_video(path: Path, frames_rgb: list[np.ndarray], width: int, height: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(FPS), (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open an mp4v writer for {path}")
    try:
        for rgb in frames_rgb:
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def make_clip(out_dir, *, width: int = 96, height: int = 96, frames: int = 16, objects: int = 3,
              seed: int = 0, video: bool = False, camera_motion: str = "static",
              camera_pan: float = 0.3) -> dict:
    """Generate the synthetic clip into ``out_dir`` and return its ground truth plus the output paths.

    ``camera_motion="pan"`` moves the camera along ``camera_path(..., camera_pan)`` (see the module
    docstring) and also writes ``megasam.npz`` and ``background.png``; the default ``"static"``
    writes exactly what earlier versions wrote.

    ``ground_truth.json`` holds ``width``, ``height``, ``frames``, ``fps`` (12), ``camera`` (``K`` 3x3,
    ``convention`` "opencv", ``fovy_deg`` 49.1, ``c2w`` identity, ``background_depth``), ``objects``
    and ``occlusion_frames``. Each object has ``id`` ("001".."00K"), ``name``, ``shape``, ``color``
    (RGB 0..1), ``world_radius`` and per frame: ``depth`` (z), ``center_px`` ([u, v], continuous pixel
    coordinates, pixel centres at +0.5), ``radius_px`` (apparent circumradius, f * world_radius / z),
    ``position`` (camera/world-space centre [x, y, z]), ``angle_rad`` (in-plane rotation),
    ``area_px`` (full amodal area in pixels, including any part outside the frame),
    ``occluded_fraction`` (share of the amodal area hidden by other objects) and
    ``truncated_fraction`` (share outside the frame). ``occlusion_frames`` lists the frames where some
    object is at least 20% hidden by another. All fractions are measured on the 4x4 supersampled grid.

    The returned dict is the parsed JSON plus ``paths``: ``out_dir``, ``frames_dir``,
    ``annotations_dir``, ``ground_truth``, ``video`` (None without ``video=True``), ``frames`` (the
    frame files) and ``masks`` (object id -> list of mask files, "000" is the background).
    """
    width, height, frames, objects, seed = int(width), int(height), int(frames), int(objects), int(seed)
    if width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(f"width and height must be at least {MIN_SIZE} px, got {width}x{height}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if not 1 <= objects <= MAX_OBJECTS:
        raise ValueError(f"objects must be in 1..{MAX_OBJECTS}, got {objects}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if camera_motion not in CAMERA_MOTIONS:
        raise ValueError(f"camera_motion must be one of {', '.join(CAMERA_MOTIONS)}, got {camera_motion!r}")
    if not math.isfinite(camera_pan):
        raise ValueError(f"camera_pan must be finite, got {camera_pan}")
    moving = camera_motion == "pan"
    camera = camera_path(width, height, frames, float(camera_pan)) if moving else None

    rng = np.random.default_rng(seed)
    for _attempt in range(MAX_ATTEMPTS):
        layout = _draw_layout(rng, width, height, objects)
        ids, states, total, occluded, truncated = _rasterize(layout, width, height, frames, camera)
        if _acceptable(occluded, truncated, frames):
            break
    else:
        raise RuntimeError(
            f"no acceptable layout in {MAX_ATTEMPTS} draws for {width}x{height}, {frames} frames, "
            f"{objects} objects, seed {seed}")
    if moving:
        # the background plane moves by whole supersamples (camera_path): cut each frame's view from
        # one canvas padded by the largest shift
        f = intrinsics(width, height)[1, 1]
        shifts = np.rint(camera[:, :2] * f / BACKGROUND_DEPTH * SUPERSAMPLE).astype(int)  # (T, 2) supersamples
        pad = int(math.ceil(np.abs(shifts).max() / SUPERSAMPLE)) + 1
        canvas = _background(width + 2 * pad, height + 2 * pad, rng)
        hs, ws = height * SUPERSAMPLE, width * SUPERSAMPLE
        views = [canvas[pad * SUPERSAMPLE + dy:pad * SUPERSAMPLE + dy + hs, pad * SUPERSAMPLE + dx:
                        pad * SUPERSAMPLE + dx + ws] for dx, dy in shifts]
    else:
        bg = _background(width, height, rng)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(out_dir)
    frames_dir = out_dir / "JPEGImages"
    ann_dir = out_dir / "Annotations"
    frames_dir.mkdir(exist_ok=True)
    obj_ids = [f"{k:03d}" for k in range(objects + 1)]
    for oid in obj_ids:
        (ann_dir / oid).mkdir(parents=True, exist_ok=True)

    frame_paths: list[str] = []
    mask_paths: dict[str, list[str]] = {oid: [] for oid in obj_ids}
    rgb_frames = []
    depth_maps: list[np.ndarray] = []
    for fi in range(frames):
        name = f"{fi:05d}.png"
        rgb = _shade(ids[fi], layout, states[fi], views[fi] if moving else bg)
        rgb_frames.append(rgb)
        p = frames_dir / name
        _write_png(p, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frame_paths.append(str(p))
        masks = _masks(ids[fi], states[fi, :, 2], width, height)
        stack = [~masks.any(axis=0)] + list(masks)
        if moving:
            depth = np.full((height, width), BACKGROUND_DEPTH)
            for k in range(objects):
                depth[masks[k]] = states[fi, k, 2]
            depth_maps.append(depth)
        for oid, m in zip(obj_ids, stack):
            p = ann_dir / oid / name
            _write_png(p, m.astype(np.uint8) * 255)
            mask_paths[oid].append(str(p))

    video_path = None
    if video:
        video_path = out_dir / "clip.mp4"
        _write_video(video_path, rgb_frames, width, height)

    K = intrinsics(width, height)
    megasam_path = background_path = None
    if moving:
        c2w = camera_to_world(camera)
        megasam_path = out_dir / MEGASAM_NAME
        # MegaSAM's layout: frames, z-depth maps (float16 as MegaSAM writes), K at this resolution,
        # camera-to-world with OpenCV camera axes
        np.savez(megasam_path, images=np.stack(rgb_frames), depths=np.stack(depth_maps).astype(np.float16),
                 intrinsic=K.astype(np.float32), cam_c2w=c2w.astype(np.float32))
        s = SUPERSAMPLE
        clean = views[0].reshape(height, s, width, s, 3).mean(axis=(1, 3))  # what an inpainter would give
        background_path = out_dir / BACKGROUND_NAME
        _write_png(background_path, cv2.cvtColor(np.clip(np.rint(clean * 255.0), 0, 255).astype(np.uint8),
                                                 cv2.COLOR_RGB2BGR))
    area_scale = 1.0 / SUPERSAMPLE ** 2
    gt_objects = []
    for k, obj in enumerate(layout):
        st = states[:, k]
        gt_objects.append({
            "id": obj_ids[k + 1],
            "name": f"{obj.color_name} {SHAPES[obj.shape]}",
            "shape": SHAPES[obj.shape],
            "color": [_r(c, 4) for c in obj.color],
            "world_radius": _r(obj.world_radius),
            "depth": [_r(z) for z in st[:, 2]],
            "center_px": [[_r(u), _r(v)] for u, v in st[:, :2]],
            "radius_px": [_r(r) for r in st[:, 3]],
            "position": [[_r((u - K[0, 2]) * z / K[0, 0]), _r((v - K[1, 2]) * z / K[1, 1]), _r(z)]
                         for u, v, z in st[:, :3]],
            "angle_rad": [_r(a) for a in st[:, 4]],
            "area_px": [_r(a * area_scale, 4) for a in total[:, k]],
            "occluded_fraction": [_r(x) for x in occluded[:, k]],
            "truncated_fraction": [_r(x) for x in truncated[:, k]],
        })
        if moving:
            cam_pos = np.array(gt_objects[-1]["position"]) + camera
            world = cam_pos @ world_from_camera0()[:3, :3].T + world_from_camera0()[:3, 3]
            gt_objects[-1]["world_position"] = [[_r(x) for x in p] for p in world]
    occlusion_frames = [int(fi) for fi in np.nonzero(occluded.max(axis=1) >= OCCLUSION_THRESHOLD)[0]] \
        if objects >= 2 else []
    gt = {
        "width": width,
        "height": height,
        "frames": frames,
        "fps": FPS,
        "seed": seed,
        "camera": {
            "K": K.tolist(),
            "convention": "opencv",
            "fovy_deg": FOVY_DEG,
            "c2w": np.eye(4).tolist(),
            "background_depth": BACKGROUND_DEPTH,
        },
        "objects": gt_objects,
        "occlusion_frames": occlusion_frames,
    }
    if moving:
        gt["camera"].update({
            "motion": camera_motion,
            "pan": float(camera_pan),
            "c2w": c2w[0].tolist(),  # frame 0's; the world is not the first camera (world_from_camera0)
            "c2w_per_frame": c2w.tolist(),
            "translation": camera.tolist(),  # from the frame-0 camera, in its axes
        })
    gt_path = out_dir / "ground_truth.json"
    gt_path.write_text(json.dumps(gt, indent=1) + "\n", encoding="utf-8")

    result = json.loads(gt_path.read_text(encoding="utf-8"))
    result["paths"] = {
        "out_dir": str(out_dir),
        "frames_dir": str(frames_dir),
        "annotations_dir": str(ann_dir),
        "ground_truth": str(gt_path),
        "video": None if video_path is None else str(video_path),
        "frames": frame_paths,
        "masks": mask_paths,
    }
    if moving:
        result["paths"]["megasam"] = str(megasam_path)
        result["paths"]["background_image"] = str(background_path)
    return result


def _int_in_range(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the built-in synthetic multi-object clip (RGB frames, per-object "
                    "visible masks, ground truth) with objects that cross and occlude each other.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write JPEGImages/, "
                        "Annotations/, ground_truth.json (and clip.mp4) into")
    parser.add_argument("--width", type=_int_in_range(MIN_SIZE), default=96,
                        help=f"frame width in pixels (>= {MIN_SIZE}, default 96)")
    parser.add_argument("--height", type=_int_in_range(MIN_SIZE), default=96,
                        help=f"frame height in pixels (>= {MIN_SIZE}, default 96)")
    parser.add_argument("--frames", type=_int_in_range(1), default=16,
                        help="number of frames (default 16)")
    parser.add_argument("--objects", type=_int_in_range(1, MAX_OBJECTS), default=3,
                        help=f"number of objects, 1..{MAX_OBJECTS} (default 3)")
    parser.add_argument("--seed", type=_int_in_range(0), default=0,
                        help="random seed; same arguments give byte-identical PNGs (default 0)")
    parser.add_argument("--video", action="store_true",
                        help=f"also write clip.mp4 (mp4v, {FPS} fps)")
    parser.add_argument("--camera_motion", choices=CAMERA_MOTIONS, default="static",
                        help="static (default): the camera never moves; pan: it translates sideways "
                             f"(--camera_pan) and the clip also gets {MEGASAM_NAME} (MegaSAM's npz: "
                             f"images, depths, intrinsic, cam_c2w) and {BACKGROUND_NAME} (frame 0 without "
                             "objects, the inpainted-background input)")
    parser.add_argument("--camera_pan", type=float, default=0.3,
                        help="with --camera_motion pan: the camera's sideways travel over the clip in "
                             "scene units (the nearest cards sit at depth 3 to 4; default 0.3)")
    args = parser.parse_args(argv)
    gt = make_clip(args.out_dir, width=args.width, height=args.height, frames=args.frames,
                   objects=args.objects, seed=args.seed, video=args.video,
                   camera_motion=args.camera_motion, camera_pan=args.camera_pan)
    names = ", ".join(f"{o['id']} {o['name']}" for o in gt["objects"])
    print(f"wrote {gt['frames']} frames of {gt['width']}x{gt['height']} to {gt['paths']['out_dir']}")
    print(f"objects: {names}")
    print(f"occlusion frames (some object >= {OCCLUSION_THRESHOLD:.0%} hidden): {gt['occlusion_frames']}")
    if gt["paths"]["video"]:
        print(f"video: {gt['paths']['video']}")
    if "megasam" in gt["paths"]:
        print(f"cameras: {gt['paths']['megasam']}, background: {gt['paths']['background_image']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
