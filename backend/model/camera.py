"""Per-frame pinhole cameras at working resolution, and their conversion to the bundle's camera."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genmojo_blender.core import bundle as fmt

from .geometry import intrinsics_from_fovy


@dataclass
class Cameras:
    """K (T,3,3) and camera-to-world c2w (T,4,4, OpenCV axes) for the working image size."""

    K: torch.Tensor
    c2w: torch.Tensor
    width: int
    height: int
    near: float
    far: float
    source: str = "virtual"
    solve: fmt.CameraSolveInfo | None = None  # per-frame quality of a solved camera (--camera solve / blender)

    @property
    def static(self) -> bool:
        return bool(torch.allclose(self.c2w, self.c2w[:1].expand_as(self.c2w)))

    def viewmats(self, frames: torch.Tensor) -> torch.Tensor:
        """World-to-camera matrices (B,4,4) for the given frame indices."""
        return torch.linalg.inv(self.c2w[frames])

    def to(self, device: torch.device) -> "Cameras":
        return Cameras(self.K.to(device), self.c2w.to(device), self.width, self.height, self.near,
                       self.far, self.source, self.solve)

    def to_bundle(self, width: int, height: int) -> tuple[fmt.CameraTrack, fmt.CameraInfo]:
        """The same cameras with intrinsics rescaled to the original clip size ``width`` × ``height``."""
        K = self.K.detach().double().cpu().numpy().copy()
        K[:, 0, :] *= width / self.width
        K[:, 1, :] *= height / self.height
        c2w = self.c2w.detach().double().cpu().numpy()
        track = fmt.CameraTrack(K=K, c2w=c2w, width=width, height=height)
        info = fmt.CameraInfo(static=self.static, source=self.source, near=self.near, far=self.far,
                              solve=self.solve)
        return track, info


def static_cameras(num_frames: int, width: int, height: int, fovy_deg: float, near: float,
                   far: float) -> Cameras:
    """A fixed camera at the world origin looking down +z, with the given vertical field of view."""
    K = intrinsics_from_fovy(fovy_deg, width, height).float()
    return Cameras(K=K[None].repeat(num_frames, 1, 1), c2w=torch.eye(4)[None].repeat(num_frames, 1, 1),
                   width=width, height=height, near=near, far=far,
                   source=f"virtual (static, vertical FoV {fovy_deg:g} deg)")

