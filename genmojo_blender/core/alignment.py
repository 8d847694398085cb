"""Do the imported objects line up with the plate? Projected points against the objects' masks. numpy only.

The check behind "objects line up with the footage in Blender": every Gaussian of object k that the
render shows at frame t, projected through frame t's camera, should land inside object k's mask at
frame t, up to a small tolerance (the mask grown by ``dilate_px`` pixels). The projection may come
from the bundle's pinhole cameras (``project``) or from Blender's own camera
(``bpy_extras.object_utils.world_to_camera_view``, turned into pixels by ``from_normalized_view``);
which points count as shown is the caller's (the backend's render decides it, see
``backend/check_alignment.py``). Free of ``bpy`` and of torch, so the backend, Blender and plain tests
share it.

Pixel convention: continuous coordinates in pixels of the mask's size, x right and y down, pixel
(row i, column j) covering [j, j+1) x [i, i+1), its centre at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def disk_offsets(radius_px: float) -> list[tuple[int, int]]:
    """Integer (dy, dx) offsets with dx² + dy² ≤ radius² (the disk a mask is grown by)."""
    r = int(math.floor(radius_px))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dx * dx + dy * dy <= radius_px ** 2]


def dilate(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """``mask`` (..., H, W) bool grown by a disk of ``radius_px`` pixels (Euclidean, pixel centres);
    pixels beyond the image border never count as set."""
    m = np.asarray(mask, bool)
    if radius_px <= 0:
        return m.copy()
    H, W = m.shape[-2:]
    out = np.zeros_like(m)
    for dy, dx in disk_offsets(radius_px):
        ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        out[..., yd, xd] |= m[..., ys, xs]
    return out


def project(K: np.ndarray, c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (..., 3) through one pinhole camera (K 3x3, camera-to-world 4x4 with OpenCV
    axes) → pixel coordinates (..., 2) and camera depth z (...,). Points at z ≤ 0 get NaN pixels."""
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    p = np.asarray(points, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = p[..., 0] / z, p[..., 1] / z
    K = np.asarray(K, np.float64)
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], -1)
    uv[z <= 0] = np.nan
    return uv, z


def from_normalized_view(view: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Blender's ``world_to_camera_view`` result (..., 3) — x, y in [0, 1] across the frame from its
    bottom-left corner, and the distance in front of the camera — as pixel coordinates (..., 2) in
    this module's convention and that depth (...,)."""
    v = np.asarray(view, np.float64)
    uv = np.stack([v[..., 0] * width, (1.0 - v[..., 1]) * height], -1)
    uv[v[..., 2] <= 0] = np.nan
    return uv, v[..., 2]


def in_mask(mask: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Whether each point uv (N, 2) lies in the image and on a set pixel of ``mask`` (H, W)."""
    H, W = mask.shape
    ok = np.isfinite(uv).all(-1) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    out = np.zeros(len(uv), bool)
    if ok.any():
        x = np.floor(uv[ok, 0]).astype(np.int64)
        y = np.floor(uv[ok, 1]).astype(np.int64)
        out[ok] = mask[y, x]
    return out


@dataclass
class Alignment:
    """How many shown points landed in their object's grown mask: ``inside`` of ``counted``, per
    object (id → (inside, counted)) and per frame (T,) summed over objects."""

    inside: int = 0
    counted: int = 0
    per_object: dict[str, tuple[int, int]] = field(default_factory=dict)
    per_frame_inside: list[int] = field(default_factory=list)
    per_frame_counted: list[int] = field(default_factory=list)
    dilate_px: float = 2.0

    @property
    def fraction(self) -> float:
        """inside / counted (NaN when no point counted)."""
        return self.inside / self.counted if self.counted else float("nan")

    def to_dict(self) -> dict:
        return {"fraction": round(self.fraction, 6) if self.counted else None, "inside": self.inside,
                "counted": self.counted, "dilate_px": self.dilate_px,
                "per_object": {k: {"inside": a, "counted": b, "fraction": round(a / b, 6) if b else None}
                               for k, (a, b) in self.per_object.items()},
                "per_frame": [{"inside": a, "counted": b} for a, b in zip(self.per_frame_inside,
                                                                          self.per_frame_counted)]}


def mask_alignment(points_uv: dict[str, np.ndarray], shown: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                   dilate_px: float = 2.0) -> Alignment:
    """Count, over objects and frames, the shown points that fall inside their object's mask grown by
    ``dilate_px`` pixels.

    Per object id: ``points_uv[id]`` (T, N, 2) pixel coordinates at each frame, ``shown[id]`` (T, N)
    bool which points count (the render shows them), ``masks[id]`` (T, H, W) bool its mask per frame.
    """
    ids = list(points_uv)
    if set(shown) != set(ids) or set(masks) != set(ids):
        raise ValueError("points, shown flags and masks must cover the same objects")
    T = None
    res = Alignment(dilate_px=float(dilate_px))
    for oid in ids:
        uv, sh, m = np.asarray(points_uv[oid], np.float64), np.asarray(shown[oid], bool), np.asarray(masks[oid], bool)
        if uv.ndim != 3 or uv.shape[-1] != 2 or sh.shape != uv.shape[:2] or m.ndim != 3 or m.shape[0] != uv.shape[0]:
            raise ValueError(f"object {oid}: points {uv.shape}, shown {sh.shape} and masks {m.shape} do not fit "
                             "(T, N, 2), (T, N), (T, H, W)")
        if T is None:
            T = uv.shape[0]
            res.per_frame_inside, res.per_frame_counted = [0] * T, [0] * T
        elif uv.shape[0] != T:
            raise ValueError(f"object {oid}: {uv.shape[0]} frames, other objects {T}")
        grown = dilate(m, dilate_px)
        a = b = 0
        for t in range(T):
            sel = sh[t]
            n = int(sel.sum())
            if n == 0:
                continue
            k = int(in_mask(grown[t], uv[t][sel]).sum())
            a, b = a + k, b + n
            res.per_frame_inside[t] += k
            res.per_frame_counted[t] += n
        res.per_object[oid] = (a, b)
        res.inside += a
        res.counted += b
    return res
