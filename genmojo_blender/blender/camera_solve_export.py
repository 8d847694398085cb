"""Blender's own camera solve (a Movie Clip's tracking reconstruction) written as a camera file.

The backend reads the file with ``--camera blender --camera_file`` (layout: ``core/camera_file.py``).
What is read from bpy: ``clip.tracking.reconstruction.cameras`` (each with its clip frame, its camera
matrix in the tracking world, its average reprojection error in pixels), the tracking camera's focal
length and principal point in pixels, the clip's size, and the tracks with a bundle (their 3D points,
counted on the frames where the track has an unmuted marker). Clip frame 1 is the clip's first image,
so frame ``f`` is the backend's frame ``f - 1``. The maths (axes, intrinsics, interpolation of frames the
solve skipped) is bpy-free in ``core/camera.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import camera as cm
from ..core.camera_file import CameraFile, write_camera_file

DISTORTION_KEYS = ("k1", "k2", "k3", "division_k1", "division_k2", "nuke_k1", "nuke_k2", "brown_k1", "brown_k2",
                   "brown_k3", "brown_k4", "brown_p1", "brown_p2")


class SolveExportError(ValueError):
    """The clip has no usable camera solve; the message says what to do."""


def tracking_frames(clip) -> dict[int, cm.TrackingFrame]:
    """The solved frames of ``clip`` (0-based clip frames) with their matrices, errors and bundles."""
    rec = clip.tracking.reconstruction
    if not rec.is_valid or len(rec.cameras) == 0:
        raise SolveExportError(f"Movie Clip {clip.name!r} has no camera solve: track features and press "
                               "Solve Camera in the Movie Clip Editor first")
    seen: dict[int, list] = {}
    for track in clip.tracking.tracks:
        if not track.has_bundle:
            continue
        bundle = tuple(track.bundle)
        for marker in track.markers:
            if not marker.mute:
                seen.setdefault(int(marker.frame), []).append(bundle)
    return {int(c.frame) - 1: cm.TrackingFrame(matrix=np.array(c.matrix, np.float64),
                                               error_px=float(c.average_error),
                                               bundles=np.array(seen.get(int(c.frame), []), np.float64).reshape(-1, 3))
            for c in rec.cameras}


def export_camera_solve(clip, path: str | Path, warnings: list[str] | None = None) -> tuple[Path, CameraFile]:
    """Write ``clip``'s camera solve to ``path`` (npz); returns the path and what was written.
    Lens distortion is not carried (the backend's camera is a pinhole): a distorted solve adds a warning."""
    warnings = warnings if warnings is not None else []
    width, height = int(clip.size[0]), int(clip.size[1])
    num_frames = int(clip.frame_duration)
    if width <= 0 or height <= 0 or num_frames <= 0:
        raise SolveExportError(f"Movie Clip {clip.name!r} has no frames (is its footage missing?)")
    cam = clip.tracking.camera
    try:
        K = cm.tracking_intrinsics(float(cam.focal_length_pixels), tuple(cam.principal_point_pixels), width, height,
                                   float(cam.pixel_aspect))
        arrays = cm.camera_arrays_from_tracking(tracking_frames(clip), num_frames)
    except ValueError as e:
        raise SolveExportError(f"Movie Clip {clip.name!r}: {e}") from e
    distortion = [k for k in DISTORTION_KEYS if abs(float(getattr(cam, k, 0.0))) > 1e-9]
    if distortion:
        warnings.append(f"the solve has lens distortion ({', '.join(distortion)}), which the backend's pinhole "
                        "camera ignores: undistort the footage for an exact fit")
    skipped = int((~arrays["registered"]).sum())
    if skipped:
        warnings.append(f"{skipped} of {num_frames} frames have no solved camera; they are interpolated")
    data = CameraFile(K=np.repeat(K[None], num_frames, 0), width=width, height=height,
                      source=f"blender camera solve of {Path(clip.filepath).name or clip.name}", **arrays)
    return write_camera_file(path, data), data
