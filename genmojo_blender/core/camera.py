"""Camera and axis maths between the bundle (OpenCV conventions) and Blender. numpy only.

The bundle stores a pinhole camera per frame: intrinsics ``K`` in pixels and a camera-to-world matrix
``c2w`` whose camera axes follow OpenCV (x right, y down, z forward). Blender cameras look down their
local -Z with +Y up, describe intrinsics as a focal length in millimetres on a sensor plus a lens
shift, and Blender's world is Z-up. Everything needed to go from one to the other lives here, free of
``bpy``, so it can be tested by projecting points both ways without Blender.

Conventions used by the importer (see docs/blender-extension.md):

* ``OPENCV_TO_BLENDER_CAMERA`` flips the camera's y and z axes: a Blender camera placed at
  ``c2w @ OPENCV_TO_BLENDER_CAMERA`` sees exactly what the OpenCV camera ``c2w`` sees.
* ``OPENCV_WORLD_TO_BLENDER`` is the rotation of the result's root Empty: a rotation of -90 degrees
  about X that sends OpenCV's "down" (+y) to Blender's -Z and OpenCV's "forward" (+z) to Blender's +Y.
  Children keep the bundle's raw numbers; the root alone makes the scene Z-up.
* Intrinsics use ``sensor_fit = 'HORIZONTAL'``, where both shifts are normalised by the image width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SENSOR_WIDTH_MM = 36.0

OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])

# Rx(-90 deg): OpenCV world (x right, y down, z forward) -> Blender world (x right, y forward, z up).
OPENCV_WORLD_TO_BLENDER = np.array([[1.0, 0.0, 0.0, 0.0],
                                    [0.0, 0.0, 1.0, 0.0],
                                    [0.0, -1.0, 0.0, 0.0],
                                    [0.0, 0.0, 0.0, 1.0]])
# The same rotation as Euler XYZ angles (radians), for the root Empty's rotation_euler.
OPENCV_WORLD_TO_BLENDER_EULER = (-np.pi / 2.0, 0.0, 0.0)


@dataclass(frozen=True)
class BlenderLens:
    """Blender camera data equivalent to a pinhole K for a given image size (arrays per frame)."""

    lens: np.ndarray  # (T,) focal length in mm
    shift_x: np.ndarray  # (T,) fraction of the image width
    shift_y: np.ndarray  # (T,) fraction of the image width (HORIZONTAL fit)
    sensor_width: float
    sensor_fit: str = "HORIZONTAL"


def _as_stack(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape == shape:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != shape:
        raise ValueError(f"expected {shape} or (T, {shape[0]}, {shape[1]}), got {a.shape}")
    return a


def intrinsics_to_blender(K: np.ndarray, width: int, height: int,
                          sensor_width: float = DEFAULT_SENSOR_WIDTH_MM) -> BlenderLens:
    """Focal length and lens shift for a HORIZONTAL-fit Blender camera rendering ``width x height``.

    ``lens = fx * sensor_width / W``, ``shift_x = (W/2 - cx) / W``, ``shift_y = (cy - H/2) / W``.
    Blender has a single focal length; ``fy`` is ignored here (see ``focal_aspect_mismatch``).
    """
    Ks = _as_stack(K, (3, 3))
    if width <= 0 or height <= 0:
        raise ValueError("image size must be positive")
    fx, cx, cy = Ks[:, 0, 0], Ks[:, 0, 2], Ks[:, 1, 2]
    return BlenderLens(lens=fx * sensor_width / width,
                       shift_x=(width / 2.0 - cx) / width,
                       shift_y=(cy - height / 2.0) / width,
                       sensor_width=float(sensor_width))


def blender_to_intrinsics(lens: float, shift_x: float, shift_y: float, width: int, height: int,
                          sensor_width: float = DEFAULT_SENSOR_WIDTH_MM) -> np.ndarray:
    """Inverse of ``intrinsics_to_blender`` for one frame (square pixels): the 3x3 K."""
    f = lens * width / sensor_width
    cx = width / 2.0 - shift_x * width
    cy = height / 2.0 + shift_y * width
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def focal_aspect_mismatch(K: np.ndarray) -> float:
    """Largest relative difference between fx and fy over all frames (0 for square pixels)."""
    Ks = _as_stack(K, (3, 3))
    return float(np.max(np.abs(Ks[:, 1, 1] - Ks[:, 0, 0]) / Ks[:, 0, 0]))


def opencv_c2w_to_blender_camera(c2w: np.ndarray) -> np.ndarray:
    """Blender camera matrices (T,4,4) that see what the OpenCV cameras ``c2w`` see, same world."""
    return _as_stack(c2w, (4, 4)) @ OPENCV_TO_BLENDER_CAMERA


def project_opencv(K: np.ndarray, c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (M,2) and depths (M,) of world points (M,3) seen by one OpenCV camera.

    Pixel (0, 0) is the top-left corner of the top-left pixel, u to the right and v downwards.
    """
    K = np.asarray(K, np.float64)
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    p = np.asarray(points, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    uvw = p @ K.T
    return uvw[:, :2] / uvw[:, 2:3], p[:, 2]


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z), shape (T,4), of rotation matrices (T,3,3) or (3,3).

    The input is first projected onto the nearest rotation (polar decomposition), so matrices with
    slight numerical drift or a uniform scale still give a valid rotation.
    """
    Rs = np.asarray(R, np.float64)
    if Rs.shape == (3, 3):
        Rs = Rs[None]
    U, _, Vt = np.linalg.svd(Rs)
    d = np.sign(np.linalg.det(U @ Vt))
    U[:, :, 2] *= d[:, None]
    Rs = U @ Vt
    # Symmetric 4x4 whose dominant eigenvector is the quaternion (robust for every angle).
    m = Rs
    A = np.empty((Rs.shape[0], 4, 4))
    A[:, 0, 0] = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    A[:, 1, 1] = m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2]
    A[:, 2, 2] = -m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2]
    A[:, 3, 3] = -m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]
    A[:, 0, 1] = A[:, 1, 0] = m[:, 2, 1] - m[:, 1, 2]
    A[:, 0, 2] = A[:, 2, 0] = m[:, 0, 2] - m[:, 2, 0]
    A[:, 0, 3] = A[:, 3, 0] = m[:, 1, 0] - m[:, 0, 1]
    A[:, 1, 2] = A[:, 2, 1] = m[:, 1, 0] + m[:, 0, 1]
    A[:, 1, 3] = A[:, 3, 1] = m[:, 0, 2] + m[:, 2, 0]
    A[:, 2, 3] = A[:, 3, 2] = m[:, 2, 1] + m[:, 1, 2]
    _, vecs = np.linalg.eigh(A)
    q = vecs[:, :, -1]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (T,3,3) of quaternions (T,4) given as w, x, y, z."""
    q = np.asarray(q, np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def make_quaternions_continuous(q: np.ndarray) -> np.ndarray:
    """Flip signs so consecutive quaternions lie in the same hemisphere (no spins when interpolated)."""
    q = np.array(q, np.float64).reshape(-1, 4)
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def decompose_rigid(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Locations (T,3) and sign-continuous quaternions (T,4, wxyz) of rigid 4x4 matrices (T,4,4)."""
    Ms = _as_stack(M, (4, 4))
    return Ms[:, :3, 3].copy(), make_quaternions_continuous(rotation_to_quaternion(Ms[:, :3, :3]))


def compose_rigid(location: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    """Inverse of ``decompose_rigid``: 4x4 matrices from locations (T,3) and quaternions (T,4)."""
    loc = np.asarray(location, np.float64).reshape(-1, 3)
    M = np.tile(np.eye(4), (len(loc), 1, 1))
    M[:, :3, :3] = quaternion_to_rotation(quaternion)
    M[:, :3, 3] = loc
    return M


def blender_fps(fps: float) -> tuple[int, float]:
    """Blender's (render.fps, render.fps_base) for a frame rate: 29.97 -> (30, 1.001), 12 -> (12, 1.0)."""
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"frame rate must be positive, got {fps}")
    n = max(1, int(round(fps)))
    base = n / float(fps)
    if abs(base - 1.0) < 1e-9:
        base = 1.0
    return n, base


# --------------------------------------------------------------------------------------------
# Blender's own camera solve -> the backend's cameras (a camera file, core/camera_file.py)


def blender_camera_to_opencv_c2w(matrix: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world matrices (T,4,4), in the bundle's world, of Blender camera matrices (T,4,4).

    A Blender camera looks down its local -Z with +Y up, in Blender's Z-up world. The result is the
    inverse of the importer's placement (``OPENCV_WORLD_TO_BLENDER @ c2w @ OPENCV_TO_BLENDER_CAMERA``),
    so a bundle made with these cameras brings its camera back exactly where Blender's solve had it.
    """
    M = _as_stack(matrix, (4, 4))
    return np.linalg.inv(OPENCV_WORLD_TO_BLENDER)[None] @ M @ OPENCV_TO_BLENDER_CAMERA


def tracking_intrinsics(focal_px: float, principal_px: tuple[float, float], width: int, height: int,
                        pixel_aspect: float = 1.0) -> np.ndarray:
    """The pinhole K (3,3) of a Movie Clip's tracking camera.

    ``focal_px`` is ``tracking.camera.focal_length_pixels``; ``principal_px`` is
    ``tracking.camera.principal_point_pixels``, measured from the frame's bottom-left corner with y up
    (Blender's clip coordinates), so ``cy = height - y``. Square pixels only: a pixel aspect other than 1
    raises ValueError (the bundle's camera has one focal length).
    """
    if not (focal_px > 0 and np.isfinite(focal_px)):
        raise ValueError(f"the tracking camera's focal length {focal_px} px must be positive")
    if abs(pixel_aspect - 1.0) > 1e-6:
        raise ValueError(f"the tracking camera's pixel aspect is {pixel_aspect:g}; only square pixels (1) are "
                         "supported")
    if width <= 0 or height <= 0:
        raise ValueError("image size must be positive")
    px, py = principal_px
    return np.array([[focal_px, 0.0, px], [0.0, focal_px, height - py], [0.0, 0.0, 1.0]])


def interpolate_rigid(c2w: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(T,4,4) rigid poses where frames with ``known`` False take the pose interpolated between the
    nearest known frames before and after (rotation slerp, position linear); frames before the first or
    after the last known one hold its pose. ValueError without any known frame."""
    c2w = _as_stack(c2w, (4, 4))
    known = np.asarray(known, bool)
    idx = np.flatnonzero(known)
    if idx.size == 0:
        raise ValueError("no known pose to interpolate from")
    out = c2w.copy()
    q = rotation_to_quaternion(c2w[idx, :3, :3])
    for t in np.flatnonzero(~known):
        after = int(np.searchsorted(idx, t))
        if after == 0 or after == idx.size:
            out[t] = c2w[idx[0] if after == 0 else idx[-1]]
            continue
        a, b = idx[after - 1], idx[after]
        s = (t - a) / (b - a)
        qa, qb = q[after - 1], q[after]
        if np.dot(qa, qb) < 0:
            qb = -qb
        angle = float(np.arccos(np.clip(np.dot(qa, qb), -1.0, 1.0)))
        qt = qa if angle < 1e-9 else (np.sin((1 - s) * angle) * qa + np.sin(s * angle) * qb) / np.sin(angle)
        out[t, :3, :3] = quaternion_to_rotation(qt[None])[0]
        out[t, :3, 3] = (1 - s) * c2w[a, :3, 3] + s * c2w[b, :3, 3]
    return out


@dataclass(frozen=True)
class TrackingFrame:
    """One frame of a Movie Clip's camera solve: the reconstructed camera's Blender matrix (4,4), its
    average reprojection error in pixels, and the bundles (3D points, Blender world, (N,3)) of the tracks
    with a marker on that frame."""

    matrix: np.ndarray
    error_px: float
    bundles: np.ndarray


def camera_arrays_from_tracking(frames: dict[int, TrackingFrame], num_frames: int) -> dict[str, np.ndarray]:
    """Per-frame arrays of a camera file from a camera solve: ``frames`` maps frame index (0-based, in
    the clip) to its ``TrackingFrame``; frames it lacks were not solved and are interpolated.

    Returns ``c2w`` (T,4,4, OpenCV, bundle world), ``registered``, ``error_px`` (NaN where unsolved),
    ``points`` and ``point_depth`` (median camera distance of the frame's bundles, NaN without any).
    ValueError when no frame of 0..num_frames-1 is solved.
    """
    if num_frames < 1:
        raise ValueError("the clip has no frames")
    inside = {t: f for t, f in frames.items() if 0 <= t < num_frames}
    if not inside:
        raise ValueError(f"the camera solve has no camera on frames 1-{num_frames} of the clip")
    registered = np.zeros(num_frames, bool)
    blender = np.repeat(np.eye(4)[None], num_frames, 0)
    error = np.full(num_frames, np.nan)
    points = np.zeros(num_frames, np.int64)
    depth = np.full(num_frames, np.nan)
    for t, f in inside.items():
        registered[t] = True
        blender[t] = np.asarray(f.matrix, np.float64)
        error[t] = float(f.error_px)
        b = np.asarray(f.bundles, np.float64).reshape(-1, 3)
        points[t] = len(b)
        if len(b):
            local = (b - blender[t, :3, 3]) @ blender[t, :3, :3]  # camera-local coordinates (rows)
            depth[t] = float(np.median(-local[:, 2]))  # a Blender camera looks down -Z
    c2w = interpolate_rigid(blender_camera_to_opencv_c2w(blender), registered)
    return {"c2w": c2w, "registered": registered, "error_px": error, "points": points, "point_depth": depth}
