"""Least-squares rigid motion per frame (weighted Kabsch), for exporting objects without morph targets.

Many game engines and DCC pipelines cannot play per-vertex morph animation. For them an object's
motion is baked into one rigid transform per frame: the rotation R_t and translation c_t that best
map the reference frame's points onto frame t's points,

    minimise  sum_i w_i || R_t p_i(ref) + c_t - p_i(t) ||^2,

solved in closed form with the weighted Kabsch method (SVD of the weighted cross-covariance, with
the determinant sign fixed so R_t is a proper rotation). The residual says how far the real,
possibly non-rigid motion is from the rigid approximation, so the exporter can warn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import make_quaternions_continuous, rotation_to_quaternion


@dataclass
class RigidTrack:
    """Rigid transforms per frame, mapping the reference frame's points onto each frame's."""

    rotations: np.ndarray  # (T, 3, 3)
    translations: np.ndarray  # (T, 3)
    rms: np.ndarray  # (T,) weighted RMS residual of the fit, scene units
    extent: float  # RMS radius of the reference points about their weighted centre

    @property
    def matrices(self) -> np.ndarray:
        """(T, 4, 4) homogeneous transforms."""
        M = np.tile(np.eye(4), (len(self.rotations), 1, 1))
        M[:, :3, :3] = self.rotations
        M[:, :3, 3] = self.translations
        return M

    def quaternions(self) -> np.ndarray:
        """(T, 4) w, x, y, z, sign-continuous so interpolation between keys never spins the long way."""
        return make_quaternions_continuous(rotation_to_quaternion(self.rotations))

    @property
    def relative_error(self) -> float:
        """Worst per-frame RMS residual relative to the object's size (0 for truly rigid motion)."""
        return float(self.rms.max() / self.extent) if self.extent > 0 else 0.0


def kabsch(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation R (3,3), translation c (3,) and weighted RMS residual of the best rigid map
    ``R @ source_i + c ~ target_i`` for points (N,3)."""
    R, c, rms = kabsch_batch(np.asarray(source)[None], np.asarray(target)[None], weights)
    return R[0], c[0], float(rms[0])


def kabsch_batch(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``kabsch`` for T pairs of point sets at once: source and target (T,N,3) (source may be
    (1,N,3) to share it); weights (N,) shared by every frame. Returns (T,3,3), (T,3), (T,)."""
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    if src.ndim != 3 or dst.ndim != 3 or src.shape[-1] != 3 or src.shape[1] != dst.shape[1]:
        raise ValueError("source and target must be (T, N, 3) with the same N")
    T = max(len(src), len(dst))
    src, dst = np.broadcast_to(src, (T, *src.shape[1:])), np.broadcast_to(dst, (T, *dst.shape[1:]))
    n = src.shape[1]
    if n == 0:
        raise ValueError("need at least one point")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).reshape(n)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    w = w / w.sum()
    cs = np.einsum("n,tni->ti", w, src)
    cd = np.einsum("n,tni->ti", w, dst)
    a = src - cs[:, None]
    b = dst - cd[:, None]
    H = np.einsum("n,tni,tnj->tij", w, a, b)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, 1, 2) @ np.swapaxes(U, 1, 2)))
    d[d == 0] = 1.0
    D = np.tile(np.eye(3), (len(d), 1, 1))
    D[:, 2, 2] = d
    R = np.swapaxes(Vt, 1, 2) @ D @ np.swapaxes(U, 1, 2)
    c = cd - np.einsum("tij,tj->ti", R, cs)
    fitted = np.einsum("tij,tnj->tni", R, src) + c[:, None]
    rms = np.sqrt(np.einsum("n,tn->t", w, np.square(fitted - dst).sum(axis=2)))
    return R, c, rms


def fit_rigid_track(positions: np.ndarray, weights: np.ndarray | None = None, *,
                    reference: int = 0) -> RigidTrack:
    """Per-frame rigid transforms of a point set over time (T,N,3) relative to frame ``reference``.

    Weights (e.g. the Gaussians' opacities) let faint, loosely constrained points count less.
    """
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError("positions must be (T, N, 3)")
    R, c, rms = kabsch_batch(pos[reference][None], pos, weights)
    w = np.ones(pos.shape[1]) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    ref = pos[reference]
    extent = float(np.sqrt(np.einsum("n,n->", w, np.square(ref - w @ ref).sum(axis=1))))
    return RigidTrack(rotations=R, translations=c, rms=rms, extent=extent)


__all__ = ["RigidTrack", "kabsch", "kabsch_batch", "fit_rigid_track"]
