"""The camera file: a solved camera handed to the backend (``--camera blender --camera_file F``).

The extension writes it from a Movie Clip's camera solve (``genmojo_blender/operators/camera_solve.py``);
the backend reads it (``backend/io/camera_file.py``). Like the bundle, the layout lives here, numpy and
standard library only, so writer and reader cannot drift apart. Format (``docs/bundle-format.md``,
"Camera files"): one npz with

====================  ===============  ======================================================================
``format``            str              ``genmojo-camera``
``version``           int              ``1``
``width``, ``height``  int              the image size ``K`` is in (the clip's frames)
``K``                 (T,3,3) float64  pinhole intrinsics in pixels, pixel centres at +0.5
``c2w``               (T,4,4) float64  camera-to-world, OpenCV camera axes, in the bundle's world (the one
                                       the importer's root Empty turns Z-up: ``camera.OPENCV_WORLD_TO_BLENDER``)
``registered``        (T,) bool        the solver placed this frame itself (False: interpolated)
``error_px``          (T,) float64     the frame's solve error in pixels (NaN where unknown)
``points``            (T,) int64       reconstructed points (tracks with a bundle) the frame sees
``point_depth``       (T,) float64     median camera distance of those points (NaN where unknown)
``source``            str              what it came from, e.g. ``blender camera solve of clip.mov``
====================  ===============  ======================================================================

It is read like the bundle, through ``bounded_io.read_npz``: every array's size, dtype and shape are
checked from the zip directory and its ``.npy`` header before anything is inflated (at most
``MAX_CAMERA_FRAMES`` frames, floats where floats are due, booleans for ``registered``, bounded text).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bounded_io
from .bundle import MAX_FRAMES
from .export_files import write_atomic

CAMERA_FILE_FORMAT = "genmojo-camera"
CAMERA_FILE_VERSION = 1
MAX_CAMERA_FRAMES = MAX_FRAMES  # as many cameras as a bundle may have frames
MAX_SOURCE_CHARS = 4096  # the ``source`` label
MAX_FORMAT_CHARS = 64
# What the reader accepts, checked before any array is inflated (core/bounded_io.py); T is the frame count.
_FLOAT = "f"
_INTEGER = "iu"
_FORMAT_SPEC = bounded_io.ArraySpec((), bounded_io.TEXT_KIND, 4 * MAX_FORMAT_CHARS)
_INT_SPEC = bounded_io.ArraySpec((), _INTEGER)
_LAYOUT = {
    "width": _INT_SPEC, "height": _INT_SPEC,
    "K": bounded_io.ArraySpec(("T", 3, 3), _FLOAT), "c2w": bounded_io.ArraySpec(("T", 4, 4), _FLOAT),
    "registered": bounded_io.ArraySpec(("T",), bounded_io.BOOL_KIND, 1),
    "error_px": bounded_io.ArraySpec(("T",), _FLOAT), "points": bounded_io.ArraySpec(("T",), _INTEGER),
    "point_depth": bounded_io.ArraySpec(("T",), _FLOAT),
    "source": bounded_io.ArraySpec((), bounded_io.TEXT_KIND, 4 * MAX_SOURCE_CHARS),
}


class CameraFileError(ValueError):
    """A camera file is unreadable or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class CameraFile:
    """The contents of a camera file (see the module docstring)."""

    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    registered: np.ndarray
    error_px: np.ndarray
    points: np.ndarray
    point_depth: np.ndarray
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.K.shape[0])


def check_camera_file(cam: CameraFile, where: str = "camera file") -> CameraFile:
    """``cam`` when its arrays are consistent; CameraFileError naming the first problem otherwise."""
    def fail(msg: str):
        raise CameraFileError(f"{where}: {msg}")

    T = cam.K.shape[0] if cam.K.ndim == 3 else -1
    if cam.K.shape != (T, 3, 3) or T < 1:
        fail(f"K has shape {cam.K.shape}, expected (T, 3, 3)")
    if cam.c2w.shape != (T, 4, 4):
        fail(f"c2w has shape {cam.c2w.shape}, expected ({T}, 4, 4)")
    for name in ("registered", "error_px", "points", "point_depth"):
        if getattr(cam, name).shape != (T,):
            fail(f"{name} has shape {getattr(cam, name).shape}, expected ({T},)")
    if cam.registered.dtype != bool:
        fail("registered must be booleans")
    if not (np.isfinite(cam.K).all() and np.isfinite(cam.c2w).all()):
        fail("K or c2w contains NaN or infinity")
    if not ((cam.K[:, 0, 0] > 0).all() and (cam.K[:, 1, 1] > 0).all()):
        fail("focal lengths must be positive")
    R = cam.c2w[:, :3, :3]
    if not (np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-4) and np.allclose(cam.c2w[:, 3], [0, 0, 0, 1])
            and (np.linalg.det(R) > 0).all()):
        fail("c2w are not rigid camera-to-world matrices")
    if not (cam.width > 0 and cam.height > 0):
        fail(f"image size {cam.width}x{cam.height} must be positive")
    if not cam.registered.any():
        fail("no frame is registered (the solve placed no camera)")
    if len(cam.source) > MAX_SOURCE_CHARS:
        fail(f"the source label has {len(cam.source)} characters, more than {MAX_SOURCE_CHARS}")
    bad = np.isfinite(cam.error_px) & (cam.error_px < 0)
    if bad.any() or (cam.points < 0).any():
        fail("error_px and points must not be negative")
    return cam


def write_camera_file(path: str | os.PathLike, cam: CameraFile) -> Path:
    """Write ``cam`` to ``path`` atomically (a temporary file renamed into place); returns the path."""
    check_camera_file(cam)
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, format=CAMERA_FILE_FORMAT, version=CAMERA_FILE_VERSION, width=cam.width,
             height=cam.height, K=cam.K.astype(np.float64), c2w=cam.c2w.astype(np.float64),
             registered=cam.registered.astype(bool), error_px=cam.error_px.astype(np.float64),
             points=cam.points.astype(np.int64), point_depth=cam.point_depth.astype(np.float64),
             source=cam.source)
    write_atomic(path, buf.getvalue())
    return path


def _read(path: Path, expected: dict[str, bounded_io.ArraySpec]) -> dict[str, np.ndarray]:
    try:
        return bounded_io.read_npz(path, expected, max_lengths={"T": MAX_CAMERA_FRAMES})
    except bounded_io.Refused as e:
        raise CameraFileError(f"{path}: {e}") from None
    except OSError as e:
        raise CameraFileError(f"{path}: cannot be read ({e})") from None


def read_camera_file(path: str | os.PathLike) -> CameraFile:
    """Read and check a camera file; CameraFileError naming the file and the problem.

    It goes through ``bounded_io.read_npz`` like the bundle: each array's size, dtype and shape are
    checked from the zip directory and its ``.npy`` header before anything is inflated, so a truncated
    file, one whose header claims more than ``MAX_CAMERA_FRAMES`` frames, or one holding Python objects
    is refused without reading its data.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraFileError(f"{path}: camera file not found")
    if path.stat().st_size == 0:
        raise CameraFileError(f"{path}: the file is empty (0 bytes)")
    try:
        fmt = _read(path, {"format": _FORMAT_SPEC})["format"]
    except CameraFileError as e:
        if "missing arrays" not in str(e):
            raise
        fmt = None
    if fmt is None or str(fmt) != CAMERA_FILE_FORMAT:
        raise CameraFileError(f"{path}: not a {CAMERA_FILE_FORMAT} file (a MegaSAM npz goes to --cam_path)")
    try:
        version = int(_read(path, {"version": _INT_SPEC})["version"])
    except CameraFileError as e:
        if "missing arrays" not in str(e):
            raise
        version = -1
    if version != CAMERA_FILE_VERSION:
        raise CameraFileError(f"{path}: camera file version {version} is not supported "
                              f"(expects {CAMERA_FILE_VERSION})")
    z = _read(path, _LAYOUT)
    cam = CameraFile(K=z["K"].astype(np.float64), c2w=z["c2w"].astype(np.float64),
                     width=int(z["width"]), height=int(z["height"]), registered=z["registered"],
                     error_px=z["error_px"].astype(np.float64), points=z["points"].astype(np.int64),
                     point_depth=z["point_depth"].astype(np.float64), source=str(z["source"]))
    return check_camera_file(cam, str(path))
