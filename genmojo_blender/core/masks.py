"""Rasterising vector masks (Blender's Movie Clip editor Mask datablocks) into the backend's mask
folders, without bpy.

A Mask datablock is a set of layers of closed Bézier splines. The extension treats each layer as
one object: its splines are flattened into polygons (``bezier_polygon``), filled at pixel centres
(``fill_polygons``) and written as binary 8-bit PNGs (``write_png``) into ``<folder>/001/``,
``002/``, ... named like the clip's frames, which is the layout the backend reads.

Coordinates: Blender stores mask points in a square, frame-centred space normalised by the
frame's longer side, y up. ``mask_to_pixels`` maps them to pixel coordinates (x right, y down,
pixel centres at +0.5).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def cubic_bezier(p0, c0, c1, p1, samples: int) -> np.ndarray:
    """``samples`` points (samples,2) of a cubic Bézier segment, from p0 (included) towards p1
    (excluded, it starts the next segment)."""
    t = np.arange(samples, dtype=np.float64)[:, None] / samples
    p0, c0, c1, p1 = (np.asarray(v, np.float64) for v in (p0, c0, c1, p1))
    u = 1.0 - t
    return u ** 3 * p0 + 3 * u * u * t * c0 + 3 * u * t * t * c1 + t ** 3 * p1


def bezier_polygon(points: np.ndarray, handles_left: np.ndarray, handles_right: np.ndarray, *,
                   cyclic: bool = True, samples: int = 16) -> np.ndarray:
    """Flatten a Bézier spline (control points (M,2) with their handles) into a polygon (K,2).

    Segment i runs from point i (leaving along its right handle) to point i+1 (arriving along
    its left handle); a cyclic spline also closes from the last point back to the first.
    """
    P = np.asarray(points, np.float64).reshape(-1, 2)
    L = np.asarray(handles_left, np.float64).reshape(-1, 2)
    R = np.asarray(handles_right, np.float64).reshape(-1, 2)
    if len(P) < 2:
        return P.copy()
    n = len(P) if cyclic else len(P) - 1
    parts = [cubic_bezier(P[i], R[i], L[(i + 1) % len(P)], P[(i + 1) % len(P)], samples) for i in range(n)]
    if not cyclic:
        parts.append(P[-1:])
    return np.concatenate(parts)


def mask_to_pixels(co: np.ndarray, width: int, height: int) -> np.ndarray:
    """Blender mask coordinates (N,2) -> pixel coordinates (x right, y down)."""
    co = np.asarray(co, np.float64).reshape(-1, 2)
    side = float(max(width, height))
    x = (co[:, 0] - 0.5) * side + 0.5 * width
    y = 0.5 * height - (co[:, 1] - 0.5) * side
    return np.stack([x, y], -1)


def fill_polygons(polygons: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """Pixels (H,W) bool whose centres lie inside any of the polygons (each filled with the
    non-zero winding rule, so self-overlapping outlines stay solid; polygons are combined by union)."""
    out = np.zeros((height, width), bool)
    ys = np.arange(height, dtype=np.float64) + 0.5
    xs = np.arange(width, dtype=np.float64) + 0.5
    for poly in polygons:
        poly = np.asarray(poly, np.float64).reshape(-1, 2)
        if len(poly) < 3:
            continue
        a, b = poly, np.roll(poly, -1, axis=0)
        winding = np.zeros((height, width), np.int32)
        for (x0, y0), (x1, y1) in zip(a, b):
            if y0 == y1:
                continue
            lo, hi = min(y0, y1), max(y0, y1)
            rows = np.nonzero((ys >= lo) & (ys < hi))[0]
            if len(rows) == 0:
                continue
            xc = x0 + (ys[rows] - y0) * (x1 - x0) / (y1 - y0)  # crossing per row
            direction = 1 if y1 > y0 else -1
            # every pixel centre left of the crossing sees this edge to its right
            left = xs[None, :] < xc[:, None]
            winding[rows] += direction * left
        out |= winding != 0
    return out


def write_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a bool/uint8 image (H,W) as an 8-bit greyscale PNG (0 / 255 for bool)."""
    img = np.asarray(mask)
    img = (img.astype(np.uint8) * 255) if img.dtype == bool else img.astype(np.uint8)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(png)
    tmp.replace(path)


def object_folder(layer_index: int) -> str:
    """The backend's folder name for the object of mask layer ``layer_index`` (0-based): 001, ..."""
    if not 0 <= layer_index < 999:
        raise ValueError("at most 999 mask layers")
    return f"{layer_index + 1:03d}"


__all__ = ["cubic_bezier", "bezier_polygon", "mask_to_pixels", "fill_polygons", "write_png", "object_folder"]
