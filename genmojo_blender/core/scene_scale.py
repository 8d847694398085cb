"""Floor and real-world scale of an imported result, as bpy-free maths on point positions.

A GenMOJO result has no metric scale (a virtual camera and a depth heuristic place the objects)
and its floor is wherever the objects happen to stand. Both are fixed by moving the whole result
rigidly (floor) or scaling it uniformly (scale) about one point, camera included: every object
point and the camera then move by the same similarity transform, so every point projects to the
same pixel and the footage still lines up.

* Floor: every visible object in every frame gives a *contact point*, the mean of its lowest few
  percent of points along "up". A plane is fitted to the contacts robustly (RANSAC restricted to
  planes that tilt at most ``max_tilt_deg`` from up, then least squares on the inliers).
  Contacts along one line (one object walking straight) fix only the line: the plane is the one
  through that line that is closest to level. A single contact gives a level plane through it.
* Scale: an object's height is the median over its visible frames of the spread of its points
  along up (between two percentiles, so stray Gaussians do not count); typing the real height
  gives the factor.

Positions are (T, N, 3) arrays in one world frame (Blender's, Z up, for the importer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UP = np.array([0.0, 0.0, 1.0])


class FloorError(ValueError):
    """The points cannot give a floor or a height (no visible points, a zero height...)."""


@dataclass(frozen=True)
class FloorSettings:
    """How contact points are taken and how the floor plane is fitted to them."""

    contact_percentile: float = 2.0   # an object's contact is the mean of its lowest 2 % of points
    max_tilt_deg: float = 30.0        # floors steeper than this from "up" are not considered
    inlier_fraction: float = 0.05     # inlier distance, as a fraction of the median object height
    iterations: int = 256             # RANSAC samples
    collinear_ratio: float = 1e-3     # contacts whose 2nd spread is below this x the 1st lie on a line
    seed: int = 0                     # RANSAC's random draw (the fit is deterministic)
    refinements: int = 4              # contacts retaken along the fitted normal, at most this often
    settle_cos: float = 1e-10         # ... until the normal turns less than this (1 - cos)


@dataclass(frozen=True)
class HeightSettings:
    """Percentiles of the points along up that bound an object's height."""

    low_percentile: float = 1.0
    high_percentile: float = 99.0


@dataclass(frozen=True)
class FloorFit:
    """A floor plane: a point on it, its unit normal (pointing to the up side), and how it was found."""

    point: np.ndarray
    normal: np.ndarray
    method: str            # "plane" (RANSAC fit), "line" (contacts on a line) or "level" (one contact)
    contacts: int          # how many contact points there were
    inliers: int           # how many of them the plane kept

    @property
    def tilt_deg(self) -> float:
        return float(np.degrees(np.arccos(np.clip(self.normal @ UP, -1.0, 1.0))))

    def height_of(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of points (..., 3) above the plane."""
        return (np.asarray(points, float) - self.point) @ self.normal


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, float)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n < 1e-12:
        raise FloorError("a direction of zero length")
    return v / n


def _visible_frames(positions: np.ndarray, visible) -> list[np.ndarray]:
    positions = np.asarray(positions, float)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise FloorError(f"positions must be (frames, points, 3), got {positions.shape}")
    vis = np.ones(positions.shape[0], bool) if visible is None else np.asarray(visible, bool)
    if vis.shape != (positions.shape[0],):
        raise FloorError(f"{vis.shape[0]} visibility flags for {positions.shape[0]} frames")
    return [p[np.isfinite(p).all(1)] for p, v in zip(positions, vis) if v and positions.shape[1]]


def contact_points(objects: list[tuple[np.ndarray, object]], up=UP,
                   settings: FloorSettings = FloorSettings()) -> np.ndarray:
    """One contact point per object and visible frame: the mean of its lowest points along ``up``.

    ``objects`` holds (positions (T, N, 3), visible flags (T,) or None) per object.
    """
    up = _unit(up)
    out = []
    for positions, visible in objects:
        for p in _visible_frames(positions, visible):
            if len(p) == 0:
                continue
            h = p @ up
            low = p[h <= np.percentile(h, settings.contact_percentile)]
            out.append(low.mean(0))
    return np.asarray(out, float).reshape(-1, 3)


def object_height(positions: np.ndarray, visible=None, up=UP,
                  settings: HeightSettings = HeightSettings()) -> float:
    """An object's height along ``up``: the median over visible frames of its percentile spread."""
    up = _unit(up)
    spans = [np.percentile(p @ up, settings.high_percentile) - np.percentile(p @ up, settings.low_percentile)
             for p in _visible_frames(positions, visible) if len(p) > 1]
    if not spans:
        raise FloorError("the object has no visible frame with points: it has no height to measure")
    return float(np.median(spans))


def _plane_normal(a, b, c):
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n)
    return None if norm < 1e-12 else n / norm


def _towards(n: np.ndarray, up: np.ndarray) -> np.ndarray:
    return n if n @ up >= 0 else -n


def fit_floor(contacts: np.ndarray, up=UP, *, scale: float,
              settings: FloorSettings = FloorSettings()) -> FloorFit:
    """Fit the floor plane to contact points (M, 3). ``scale`` (a typical object height) sets the
    inlier distance; see the module docstring for the three cases."""
    up = _unit(up)
    c = np.asarray(contacts, float).reshape(-1, 3)
    c = c[np.isfinite(c).all(1)]
    if len(c) == 0:
        raise FloorError("no visible object points to find a floor from")
    if not np.isfinite(scale) or scale <= 0:
        raise FloorError(f"the objects have no height along up ({scale}): nothing sets how far off the "
                         "floor a contact may lie")
    centre = c.mean(0)
    s = np.linalg.svd(c - centre, compute_uv=False)
    if s[0] < 1e-9 * scale:
        return FloorFit(point=centre, normal=up.copy(), method="level", contacts=len(c), inliers=len(c))
    if len(c) < 3 or s[1] < settings.collinear_ratio * s[0]:
        _, _, vt = np.linalg.svd(c - centre)
        d = vt[0]
        n = up - (up @ d) * d  # the plane through the line closest to level
        return FloorFit(point=centre, normal=_unit(n), method="line", contacts=len(c), inliers=len(c))

    tol = settings.inlier_fraction * scale
    cos_max = np.cos(np.radians(settings.max_tilt_deg))
    rng = np.random.default_rng(settings.seed)
    best = None
    for _ in range(settings.iterations):
        i = rng.choice(len(c), 3, replace=False)
        n = _plane_normal(*c[i])
        if n is None:
            continue
        n = _towards(n, up)
        if n @ up < cos_max:
            continue
        inl = np.abs((c - c[i[0]]) @ n) <= tol
        if best is None or inl.sum() > best.sum():
            best = inl
    if best is None or best.sum() < 3:
        # no three contacts span a plane within the tilt limit: the level plane through the lowest
        # contacts' median height is what is left, and the method says so
        h = c @ up
        point = centre + (np.median(h) - centre @ up) * up
        return FloorFit(point=point, normal=up.copy(), method="level", contacts=len(c),
                        inliers=int((np.abs(h - np.median(h)) <= tol).sum()))
    inl = c[best]
    p = inl.mean(0)
    _, sv, vt = np.linalg.svd(inl - p)
    n = _towards(vt[2], up)
    if sv[1] < settings.collinear_ratio * sv[0]:  # the inliers alone lie on a line
        d = vt[0]
        n = _unit(up - (up @ d) * d)
        return FloorFit(point=p, normal=n, method="line", contacts=len(c), inliers=int(best.sum()))
    return FloorFit(point=p, normal=n, method="plane", contacts=len(c), inliers=int(best.sum()))


def find_floor(objects: list[tuple[np.ndarray, object]], up=UP, *,
               settings: FloorSettings = FloorSettings()) -> FloorFit:
    """The floor under ``objects`` ((positions (T, N, 3), visible) each), fitted with contacts taken
    along the floor's own normal.

    The first contacts are the lowest points along ``up``; on a tilted floor they are the lowest
    along the wrong direction, so contacts are taken again along the fitted normal and the plane
    refitted until the normal settles (``settings.refinements`` rounds at most). Fitting again
    after the floor has been aligned to ``up`` therefore finds the same plane: the alignment is
    idempotent.
    """
    up = _unit(up)
    heights = []
    for positions, visible in objects:
        try:
            heights.append(object_height(positions, visible, up))
        except FloorError:
            continue  # an object never visible gives no contacts either
    if not heights:
        raise FloorError("no visible object points to find a floor from")
    scale = float(np.median(heights))
    fit = fit_floor(contact_points(objects, up, settings), up, scale=scale, settings=settings)
    for _ in range(settings.refinements):
        if fit.method != "plane":
            break
        new = fit_floor(contact_points(objects, fit.normal, settings), up, scale=scale, settings=settings)
        settled = new.method == "plane" and float(new.normal @ fit.normal) > 1.0 - settings.settle_cos
        fit = new
        if settled:
            break
    return fit


def rotation_between(a, b) -> np.ndarray:
    """The smallest rotation (3x3) that turns direction ``a`` into direction ``b``."""
    a, b = _unit(a), _unit(b)
    v = np.cross(a, b)
    cosang = float(a @ b)
    if cosang < -1.0 + 1e-12:  # opposite: a half turn about any axis perpendicular to a
        axis = _unit(np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0]))
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + cosang)


def floor_alignment(fit: FloorFit, up=UP) -> np.ndarray:
    """A rigid 4x4 that puts the floor on the plane through the origin perpendicular to ``up``
    (Blender's Z = 0): it turns the floor about its own point and lowers that point straight down,
    so the result stays where it was in the horizontal directions."""
    up = _unit(up)
    R = rotation_between(fit.normal, up)
    p = np.asarray(fit.point, float)
    M = np.eye(4)
    M[:3, :3] = R
    target = p - (p @ up) * up
    M[:3, 3] = target - R @ p
    return M


def uniform_scale_about(pivot, factor: float) -> np.ndarray:
    """A 4x4 that scales by ``factor`` about ``pivot``."""
    if not np.isfinite(factor) or factor <= 0:
        raise FloorError(f"the scale factor must be positive, got {factor}")
    M = np.eye(4)
    M[:3, :3] *= factor
    M[:3, 3] = (1.0 - factor) * np.asarray(pivot, float)
    return M


def scale_factor(measured_height: float, real_height: float) -> float:
    """The uniform factor that makes an object of ``measured_height`` ``real_height`` tall."""
    if not np.isfinite(real_height) or real_height <= 0:
        raise FloorError(f"the real height must be a positive number of metres, got {real_height}")
    if not np.isfinite(measured_height) or measured_height <= 0:
        raise FloorError("the object has no height along up (all its points lie at one level)")
    return float(real_height / measured_height)
