"""The object-centric cameras: how a canonical object is seen in its own crop, and from around it.

The canonical object lives around the origin (radius about 0.5) in OpenCV axes (x right, y down,
z forward). Orbit views (the novel-view prior's) are pinhole cameras at distance
``radius`` (2 in the spec) looking at the origin with the vertical field of view of the stage-1
camera (49.1° when virtual); elevation 0, azimuth 0 is the reference side.

The reference camera is the one stage 1 fits the object's crop through (``ReferenceCamera``):

- ``scene`` (default): the scene camera of the reference frame itself, restricted to the crop
  window. The object sits on the ray through the crop centre at the distance where one object unit
  covers the same pixels as in the spec's camera, so stage 2's placement (``model.dynamic``: scale,
  translation along that ray, no rotation) reproduces the reference crop exactly, wherever in the
  frame the object is. The orbit views start from the same line of sight.
- ``centred`` (the spec): a camera at ``radius`` on the −z axis with the 49.1° field of view, the
  object in the middle of its view. The spec's placement then shows the object from the direction of
  the image centre instead of its own: an object off to the side is seen obliquely and with a
  weaker perspective than it was fitted with, so depth-spread Gaussians land beside its silhouette
  (on the crossing clip the people start stage 2 at IoU 0.2–0.4 with their own masks in their
  reference frame, against 0.9 with ``scene``; docs/results.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .crops import CropBox
from .geometry import intrinsics_from_fovy

REFERENCE_CAMERAS = ("scene", "centred")


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


def _sight_angles(direction: torch.Tensor) -> tuple[float, float]:
    """(elevation°, azimuth°) of the orbit camera (``orbit_viewmat``) that looks at the origin along the
    line of sight ``direction`` (3,) (from the camera to the object, object units)."""
    x, y, z = (float(v) for v in direction)
    return math.degrees(math.atan2(y, math.hypot(x, z))), math.degrees(math.atan2(-x, z))


@dataclass(frozen=True)
class ReferenceCamera:
    """The camera an object's stage-1 crop is seen through, and the frame its orbit views turn in.

    ``viewmat`` (4,4) object units → camera (OpenCV); ``K`` (3,3) of the ``size``² crop;
    ``center_depth`` the camera-space depth of the object's origin. Orbit views are the spec's camera
    (``radius``, ``fovy_deg``) at offsets from ``elevation_deg``/``azimuth_deg``, the orbit position on
    the reference camera's line of sight: offset 0 sees the object as the crop does, and azimuth turns
    about the object's own vertical axis, as the novel-view prior expects.
    """

    viewmat: torch.Tensor
    K: torch.Tensor
    size: int
    center_depth: float
    elevation_deg: float
    azimuth_deg: float
    radius: float
    fovy_deg: float

    def orbit_K(self, size: int | None = None) -> torch.Tensor:
        """K (3,3) of the orbit views at ``size``² pixels (default the crop's)."""
        return object_intrinsics(self.size if size is None else size, self.fovy_deg)

    def orbit_viewmats(self, offsets: torch.Tensor) -> torch.Tensor:
        """World-to-camera (N,4,4) of orbit views at ``offsets`` (N,3) (Δelevation°, Δazimuth°, Δradius)."""
        e0, a0 = self.elevation_deg, self.azimuth_deg
        return torch.stack([orbit_viewmat(self.radius + float(r), e0 + float(e), a0 + float(a))
                            for e, a, r in offsets.reshape(-1, 3).tolist()])


def reference_camera(kind: str, box: CropBox, K_scene: torch.Tensor, size: int, fovy_deg: float,
                     radius: float) -> ReferenceCamera:
    """The reference camera of an object cropped by ``box`` from a frame seen with intrinsics ``K_scene``
    (3,3), fitted at ``size``² pixels; ``kind`` is one of ``REFERENCE_CAMERAS`` (module docstring)."""
    if kind == "centred":
        return ReferenceCamera(viewmat=orbit_viewmat(radius), K=object_intrinsics(size, fovy_deg), size=size,
                               center_depth=float(radius), elevation_deg=0.0, azimuth_deg=0.0,
                               radius=float(radius), fovy_deg=float(fovy_deg))
    if kind != "scene":
        raise ValueError(f"unknown reference camera {kind!r}; use one of {', '.join(REFERENCE_CAMERAS)}")
    K = K_scene.double()
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    # stage 2 places the object at scale s = side / (2·tan·fy) on the ray through the box centre at depth
    # radius (model.dynamic); seen from the camera, that is the object unscaled at depth radius / s
    s = box.side / (2 * math.tan(math.radians(fovy_deg) / 2) * fy)
    centre = torch.tensor([(box.cx - cx) / fx, (box.cy - cy) / fy, 1.0], dtype=torch.float64) * (radius / s)
    view = torch.eye(4, dtype=torch.float64)
    view[:3, 3] = centre
    # the crop window of the frame: crop pixel u covers frame pixel box.cx − side/2 + u·side/size
    k = size / box.side
    K_crop = torch.tensor([[fx * k, 0.0, (cx - box.cx + box.side / 2) * k],
                           [0.0, fy * k, (cy - box.cy + box.side / 2) * k], [0.0, 0.0, 1.0]], dtype=torch.float64)
    elevation, azimuth = _sight_angles(centre)
    return ReferenceCamera(viewmat=view.float(), K=K_crop.float(), size=size, center_depth=float(centre[2]),
                           elevation_deg=elevation, azimuth_deg=azimuth, radius=float(radius),
                           fovy_deg=float(fovy_deg))
