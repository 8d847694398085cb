"""One frame of Gaussians ready to be written out by a splat exporter (numpy only, no bpy).

The bundle stores Gaussians in its own conventions (``docs/bundle-format.md``): world space of the
bundle (OpenCV axes: y down, z forward), unit quaternions w, x, y, z, natural-log standard
deviations, display-referred sRGB colour in [0, 1] and opacity after the sigmoid. The exporters
(``splat_ply``, ``gltf_splats``, ``usd_splats``) each need some other encoding; this module holds
the value they share (``SplatFrame``), moving it into another space (``transform``) and the
encodings themselves (``sh_dc``, ``logit``, ...), so the conversions are written once.

Moving Gaussians by an affine map ``x -> A x + t``: centres map directly. The covariance
``R S² Rᵀ`` becomes ``A R S² Rᵀ Aᵀ``. When ``A`` is a similarity (a rotation, possibly a
reflection, times one scale ``c``, as every transform of an imported result is unless the user
stretched it) the quaternion is composed with ``A``'s rotation and the log scales shift by
``log c``: the axis order and values stay exactly the bundle's. A reflection is a rotation times
``-I``, which leaves a Gaussian unchanged, so it is handled the same way. Any other ``A`` (a
non-uniform scale) is factorised per Gaussian by an SVD of ``A R S``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import ObjectFrames, StaticGaussians
from .camera import OPENCV_WORLD_TO_BLENDER, quaternion_to_rotation, rotation_to_quaternion

# Degree-0 real spherical harmonic, Y_00 = 1 / (2 sqrt(pi)); 3DGS stores colour as rgb = 0.5 + C0 * f_dc.
SH_C0 = 0.28209479177387814
# Opacities are clipped to [OPACITY_EPS, 1 - OPACITY_EPS] before the logit, so 0 and 1 stay finite.
OPACITY_EPS = 1e-6
# A linear map counts as a similarity when AᵀA is within this fraction of c²·I.
SIMILARITY_TOLERANCE = 1e-6

# Blender's world (Z up) to glTF's (Y up, -Z forward): the axis change Blender's glTF exporter makes.
BLENDER_TO_GLTF = np.array([[1.0, 0.0, 0.0, 0.0],
                            [0.0, 0.0, 1.0, 0.0],
                            [0.0, -1.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 1.0]])
# The bundle's world to Blender's, as the importer's root Empty does it.
BUNDLE_TO_BLENDER = OPENCV_WORLD_TO_BLENDER


@dataclass(frozen=True)
class SplatFrame:
    """N Gaussians at one instant, in the bundle's encodings (see the module docstring)."""

    means: np.ndarray  # (N, 3) float32
    quats: np.ndarray  # (N, 4) float32, w x y z
    log_scales: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) float32, sRGB in [0, 1]
    opacities: np.ndarray  # (N,) float32 in [0, 1]

    @property
    def count(self) -> int:
        return int(self.means.shape[0])


def frame_of(frames: ObjectFrames, index: int) -> SplatFrame:
    """Frame ``index`` (0-based clip frame) of an object's baked Gaussians."""
    return SplatFrame(means=frames.means[index], quats=frames.quats[index],
                      log_scales=frames.log_scales[index], colors=frames.colors[index],
                      opacities=frames.opacities[index])


def static_frame(g: StaticGaussians) -> SplatFrame:
    """The background's Gaussians (the same in every frame)."""
    return SplatFrame(means=g.means, quats=g.quats, log_scales=g.log_scales, colors=g.colors,
                      opacities=g.opacities)


def merge(frames: list[SplatFrame]) -> SplatFrame:
    """Several sets of Gaussians (in one space) as one set, in the given order."""
    if not frames:
        raise ValueError("nothing to merge: no Gaussians were given")
    return SplatFrame(**{k: np.concatenate([getattr(f, k) for f in frames], axis=0)
                         for k in ("means", "quats", "log_scales", "colors", "opacities")})


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a ⊗ b of w, x, y, z quaternions (broadcasting over leading axes)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _similarity(A: np.ndarray) -> tuple[float, np.ndarray] | None:
    """(c, Q) with A = c·Q and Q a rotation, when A is a rotation or reflection times c > 0."""
    G = A.T @ A
    c2 = float(np.trace(G)) / 3.0
    if c2 <= 0 or np.abs(G - c2 * np.eye(3)).max() > SIMILARITY_TOLERANCE * c2:
        return None
    c = float(np.sqrt(c2))
    Q = A / c
    if np.linalg.det(Q) < 0:
        Q = -Q  # a reflection: -I leaves a Gaussian as it is
    return c, Q


def transform(frame: SplatFrame, matrix: np.ndarray) -> SplatFrame:
    """The Gaussians moved by the affine 4x4 ``matrix`` (centres, orientations and sizes)."""
    M = np.asarray(matrix, np.float64)
    if M.shape != (4, 4) or not np.isfinite(M).all():
        raise ValueError(f"expected a finite 4x4 matrix, got shape {M.shape}")
    A, t = M[:3, :3], M[:3, 3]
    if abs(np.linalg.det(A)) < 1e-12:
        raise ValueError("the transform flattens space (zero scale); the Gaussians cannot be moved by it")
    means = (frame.means.astype(np.float64) @ A.T + t).astype(np.float32)
    sim = _similarity(A)
    if sim is not None:
        c, Q = sim
        q = quaternion_multiply(rotation_to_quaternion(Q)[0], frame.quats)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        log_scales = frame.log_scales.astype(np.float64) + np.log(c)
    else:
        R = quaternion_to_rotation(frame.quats)
        L = A[None] @ R * np.exp(frame.log_scales.astype(np.float64))[:, None, :]
        U, S, _ = np.linalg.svd(L)
        U[np.linalg.det(U) < 0, :, 2] *= -1  # a proper rotation spans the same ellipsoid
        q = rotation_to_quaternion(U)
        log_scales = np.log(S)
    return SplatFrame(means=means, quats=q.astype(np.float32), log_scales=log_scales.astype(np.float32),
                      colors=frame.colors, opacities=frame.opacities)


def sh_dc(colors: np.ndarray) -> np.ndarray:
    """Degree-0 spherical-harmonic coefficients (3DGS ``f_dc``) of sRGB colours in [0, 1]."""
    return ((np.asarray(colors, np.float64) - 0.5) / SH_C0).astype(np.float32)


def colors_from_sh_dc(dc: np.ndarray) -> np.ndarray:
    """The inverse of ``sh_dc``."""
    return (0.5 + SH_C0 * np.asarray(dc, np.float64)).astype(np.float32)


def logit(opacities: np.ndarray) -> np.ndarray:
    """Pre-sigmoid opacities (3DGS PLY ``opacity``), clipped by OPACITY_EPS so they stay finite."""
    p = np.clip(np.asarray(opacities, np.float64), OPACITY_EPS, 1.0 - OPACITY_EPS)
    return np.log(p / (1.0 - p)).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB display values in [0, 1] to linear (IEC 61966-2-1), e.g. for glTF's COLOR_0."""
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
