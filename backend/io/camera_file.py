"""Reads the camera file the extension exports from Blender's own camera solve (``--camera blender``).

The layout is ``genmojo_blender/core/camera_file.py``'s. This module checks it against the clip (frame
count, image shape) and returns the same ``SolvedCameras`` as the COLMAP solve, at the fitting size.
Blender's units are kept (the result then lands in the artist's solved scene); the scene depth the
depth heuristic centres on is the median camera distance of the solve's bundles, or
``CameraConfig.scene_depth`` when the file has none (the description says which).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from genmojo_blender.core.camera_file import CameraFileError, read_camera_file

from ..config import CameraSolveConfig
from ..errors import InputError
from ..priors.camera_solve import SolvedCameras, check_registration

HINT = ("export the clip's solved camera from Blender (Movie Clip Editor: solve the camera, then GenMOJO › "
        "Export camera solve) and pass that file with --camera blender --camera_file")
ASPECT_TOLERANCE = 0.01  # relative difference of width/height between the file and the clip


def load_blender_cameras(path: str | Path, num_frames: int, size: tuple[int, int], work_size: tuple[int, int],
                         cfg: CameraSolveConfig, scene_depth: float,
                         warn: Callable[[str], None] = lambda m: None) -> SolvedCameras:
    """The cameras of ``path`` for a clip of ``num_frames`` frames of ``size`` (original) fitted at
    ``work_size``; InputError naming the file for anything that does not fit."""
    path = Path(path)
    try:
        cam = read_camera_file(path)
    except CameraFileError as e:
        raise InputError(str(e), HINT) from e
    if cam.num_frames != num_frames:
        raise InputError(f"{path}: {cam.num_frames} cameras for a clip of {num_frames} frames",
                         "export the camera solve of the Movie Clip that shows exactly these frames")
    (W, H), (w, h) = size, work_size
    if abs(cam.width / cam.height - W / H) > ASPECT_TOLERANCE * W / H:
        raise InputError(f"{path}: the camera file is for {cam.width}x{cam.height} images, the clip is {W}x{H}",
                         "export the camera solve of this clip's footage")
    check_registration(cam.registered, cfg, warn, what=f"the Blender camera solve in {path.name}")
    K = cam.K.copy()
    K[:, 0] *= w / cam.width
    K[:, 1] *= h / cam.height
    depths = cam.point_depth[np.isfinite(cam.point_depth) & (cam.point_depth > 0)]
    if depths.size:
        depth, origin = float(np.median(depths)), f"{path.name}, scene depth from its bundles"
        deepest = float(depths.max())
    else:
        depth, origin = float(scene_depth), f"{path.name}, no bundles: scene depth {scene_depth:g} assumed"
        deepest = depth
    return SolvedCameras(K=K, c2w=cam.c2w, registered=cam.registered.copy(), reproj_error_px=cam.error_px,
                         num_points=cam.points, scene_depth=depth, max_depth=deepest, camera_model="pinhole",
                         distortion=np.zeros(0), method="blender", origin=origin)
