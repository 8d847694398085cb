"""Where the render set-up puts its sun and its shadow-catcher ground (bpy-free maths).

The set-up (``blender/render_setup.py``) lights the imported objects with one sun and lays a
shadow catcher on their floor (``core/scene_scale.find_floor``). The sun shines from above and
from behind the camera, turned a little to one side, so the objects are lit where the camera sees
them and their shadows fall on the ground beside and behind them, inside the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene_scale import UP, FloorFit, rotation_between


@dataclass(frozen=True)
class RenderSceneSettings:
    """The look of the set-up's sun, world and ground."""

    sun_elevation_deg: float = 50.0   # the sun's height above the horizon
    sun_azimuth_deg: float = 30.0     # turned this far from straight behind the camera
    sun_strength: float = 3.0         # W/m^2, Blender's unit for sun lights
    sun_angle_deg: float = 2.0        # its angular diameter: slightly soft shadows
    world_color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # a created world's ambient colour
    world_strength: float = 0.3
    ground_margin: float = 2.0        # the ground reaches this many times past camera and objects
    ground_min_heights: float = 10.0  # ... and at least this many object heights from its centre


def sun_rotation(camera_forward, up=UP, settings: RenderSceneSettings = RenderSceneSettings()) -> np.ndarray:
    """The 3x3 rotation of a sun light (which shines along its local -Z) for a camera looking along
    ``camera_forward``: downwards at the set elevation, away from the camera, turned by the azimuth."""
    up = np.asarray(up, float) / np.linalg.norm(up)
    f = np.asarray(camera_forward, float)
    h = f - (f @ up) * up
    if np.linalg.norm(h) < 1e-6:  # a camera looking straight down or up: any horizontal will do
        h = np.cross(up, [1.0, 0, 0]) if abs(up[0]) < 0.9 else np.cross(up, [0, 1.0, 0])
    h /= np.linalg.norm(h)
    az = np.radians(settings.sun_azimuth_deg)
    side = np.cross(up, h)
    h = np.cos(az) * h + np.sin(az) * side
    el = np.radians(settings.sun_elevation_deg)
    direction = -np.sin(el) * up + np.cos(el) * h
    return rotation_between([0.0, 0.0, -1.0], direction)


def ground_matrix(fit: FloorFit) -> np.ndarray:
    """The 4x4 of a ground plane (modelled in its local XY) lying on the floor ``fit``."""
    M = np.eye(4)
    M[:3, :3] = rotation_between([0.0, 0.0, 1.0], fit.normal)
    M[:3, 3] = fit.point
    return M


def ground_half_size(fit: FloorFit, points, object_height: float,
                     settings: RenderSceneSettings = RenderSceneSettings()) -> float:
    """Half the side of a square ground around ``fit.point`` that reaches past every point given
    (camera positions, object points) by the margin, and is never smaller than a few object heights."""
    p = np.asarray(points, float).reshape(-1, 3)
    reach = float(np.linalg.norm(p - fit.point, axis=1).max()) if len(p) else 0.0
    return max(settings.ground_margin * reach, settings.ground_min_heights * float(object_height))
