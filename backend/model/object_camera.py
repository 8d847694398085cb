"""The object-centric camera: how a canonical object is seen in its own crop.

The canonical object lives around the origin (radius about 0.5) and is seen by a pinhole camera at
distance ``radius`` (2 in the spec) on the −z side, looking along +z (OpenCV axes: x right, y down,
z forward), with the scene camera's vertical field of view (49.1° when virtual). Orbit views for
previews and guidance rotate this camera about the origin.
"""

from __future__ import annotations

import math

import torch

from .geometry import intrinsics_from_fovy


def object_intrinsics(size: int, fovy_deg: float) -> torch.Tensor:
    """K (3,3) of the square ``size``² object-centric image."""
    return intrinsics_from_fovy(fovy_deg, size, size).float()


def orbit_viewmat(radius: float, elevation_deg: float = 0.0, azimuth_deg: float = 0.0) -> torch.Tensor:
    """World-to-camera (4,4) of a camera at ``radius`` from the origin looking at it.

    Elevation 0, azimuth 0 is the reference view (camera at (0, 0, −radius)). Positive elevation
    moves the camera up (−y, since y points down), positive azimuth to the object's right (+x).
    """
    e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
    # rotate the reference camera about the origin: first azimuth about y, then elevation about x
    ry = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(e), -math.sin(e)], [0.0, math.sin(e), math.cos(e)]])
    R_w2c = rx @ ry
    view = torch.eye(4)
    view[:3, :3] = R_w2c
    view[2, 3] = radius
    return view


def camera_center(viewmat: torch.Tensor) -> torch.Tensor:
    """World position (3,) of the camera of a world-to-camera matrix."""
    return -viewmat[:3, :3].T @ viewmat[:3, 3]
