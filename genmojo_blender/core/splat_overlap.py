"""How many splats a camera ray passes through, and the Cycles transparent bounces that needs.

The splat look (``blender/display.py``) draws each Gaussian as an ellipsoid whose material is
partly transparent on its front face and fully transparent on its back face, so a ray crossing
``n`` splats takes ``2 n`` transparent bounces. Cycles' default of 8 bounces stops after four
splats and shows the rest as black, which is why splats render darker than in EEVEE. The overlap
is estimated from the data: each Gaussian's footprint through the import camera (a box of
``SPLAT_EXTENT`` standard deviations, the ellipsoid's size, projected at its depth) is counted on a
coarse grid, and a high percentile of the covered cells sets the bounces. bpy-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLAT_EXTENT = 2.5  # semi-axes of a splat's ellipsoid in standard deviations (display.SPLAT_EXTENT)
SURFACES_PER_SPLAT = 2  # a ray enters through the front face and leaves through the back face
# The grid the footprints are counted on: its longest side in cells. A footprint smaller than a
# cell still counts in the cell of its centre, so a coarse grid only over-counts (never under).
GRID_CELLS = 96
# The ray that decides: this percentile of the covered cells. The densest 2 % of the picture may
# stay a little dark; a maximum would be set by a few cells where many tiny splats pile up.
OVERLAP_PERCENTILE = 98.0
CYCLES_MAX_BOUNCES = 1024  # the largest value Cycles accepts for transparent_max_bounces
MIN_BOUNCES = 8  # Cycles' own default: never asked to go below it


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: ``local`` is the Blender camera pose (looks along -Z, Y up) in the points'
    frame; focal length and principal point in pixels of a ``width`` x ``height`` image."""

    local: np.ndarray  # (4, 4)
    focal_px: float
    cx: float
    cy: float
    width: int
    height: int


def footprint_counts(positions: np.ndarray, sigmas: np.ndarray, camera: Camera,
                     cells: int = GRID_CELLS) -> np.ndarray:
    """Per grid cell, how many Gaussians' projected boxes cover it: an (h, w) int array.

    ``positions`` (N, 3) and ``sigmas`` (N, 3) are in the camera's frame of reference (the bundle
    world); Gaussians behind the camera are left out.
    """
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    radius = SPLAT_EXTENT * np.asarray(sigmas, np.float64).reshape(-1, 3).max(axis=1)
    w2c = np.linalg.inv(np.asarray(camera.local, np.float64))
    p = positions @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -p[:, 2]
    front = depth > 1e-6
    p, depth, radius = p[front], depth[front], radius[front]
    step = max(camera.width, camera.height) / cells
    gw, gh = max(1, int(np.ceil(camera.width / step))), max(1, int(np.ceil(camera.height / step)))
    u = (camera.focal_px * p[:, 0] / depth + camera.cx) / step
    v = (camera.cy - camera.focal_px * p[:, 1] / depth) / step
    r = camera.focal_px * radius / depth / step
    x0 = np.clip(np.floor(u - r), 0, gw).astype(np.int64)
    x1 = np.clip(np.floor(u + r) + 1, 0, gw).astype(np.int64)
    y0 = np.clip(np.floor(v - r), 0, gh).astype(np.int64)
    y1 = np.clip(np.floor(v + r) + 1, 0, gh).astype(np.int64)
    keep = (x1 > x0) & (y1 > y0)
    x0, x1, y0, y1 = x0[keep], x1[keep], y0[keep], y1[keep]
    diff = np.zeros((gh + 1, gw + 1), np.int64)  # boxes as corner increments, summed up below
    np.add.at(diff, (y0, x0), 1)
    np.add.at(diff, (y0, x1), -1)
    np.add.at(diff, (y1, x0), -1)
    np.add.at(diff, (y1, x1), 1)
    return diff.cumsum(0).cumsum(1)[:gh, :gw]


def typical_overlap(counts: np.ndarray, percentile: float = OVERLAP_PERCENTILE) -> int:
    """The splats along a ray through the densest covered cells (0 when nothing is in view)."""
    covered = counts[counts > 0]
    return int(np.ceil(np.percentile(covered, percentile))) if covered.size else 0


def transparent_bounces(overlap: int) -> int:
    """Cycles transparent bounces for rays crossing ``overlap`` splats, within Cycles' limits."""
    return int(min(CYCLES_MAX_BOUNCES, max(MIN_BOUNCES, SURFACES_PER_SPLAT * overlap)))
