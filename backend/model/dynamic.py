"""A moving object of the method: frozen canonical Gaussians, a deformation field, a scene placement.

The deformation field changes the canonical Gaussians over time in object units (motion, scale,
rotation, colour). The placement then puts the object into the frame's camera:

    p = d_t · (s_t · x + T_t)        camera space of frame t (OpenCV axes), then world = c2w_t · p
    σ = σ_object · s_t · d_t

``s_t`` is the object's crop scale from its 2D box times a learned per-frame correction (the spec
keeps it fixed; ``Stage2Config.lr_scale``), ``T_t`` the position of its centre for a
camera at the object-centric distance (learned, initialised on the ray through the box centre) and
``d_t`` a depth factor that slides the object along the camera rays, changing its depth but not its
image (learned, initialised from a depth source). The public code sizes splats with frame 0's depth
factor at every frame [quirk]; ``scale_first_depth`` reproduces that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .deformation_field import DeformationDelta, DeformationField
from .frame_fill import FrameFill
from .gaussians import CanonicalGaussians, GaussianBatch
from .geometry import quat_multiply, quat_normalize, rotmat_to_quat


class ScenePlacement(nn.Module):
    """Per-frame crop scale s (T,), translation T (T,3) and depth factor d (T,).

    T and d are learned. s is the spec's fixed crop scale times ``exp(log_scale)``, a learned per-frame
    correction that starts at 0 and stays there unless the fit's optimiser is given it
    (``Stage2Config.lr_scale``): the apparent size of an object then need not be produced by its
    deformation field, whose rigidity and scale terms resist shrinking it.
    ``trained`` (T,) marks the frames the fit sees; the others read their translation, depth factor and
    scale correction interpolated from trained neighbours (``FrameFill``).
    """

    def __init__(self, scale: torch.Tensor, translation: torch.Tensor, depth: torch.Tensor,
                 trained: np.ndarray | None = None):
        super().__init__()
        self.register_buffer("scale", scale.float().clone())
        self.log_scale = nn.Parameter(torch.zeros_like(self.scale))
        self.translation = nn.Parameter(translation.float().clone())
        self.depth = nn.Parameter(depth.float().clone())
        self.fill = FrameFill(np.ones(scale.shape[0], bool) if trained is None else trained)

    @property
    def num_frames(self) -> int:
        return int(self.scale.shape[0])

    def at(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scale (B,), translation (B,3) and depth factor (B,) at ``frames``."""
        s = self.scale[frames] * torch.exp(self.fill(self.log_scale, frames))
        return s, self.fill(self.translation, frames), self.fill(self.depth, frames)


@dataclass
class ObjectState:
    """An object at B frames: the world-space Gaussians and the deformation's own changes.

    ``d_log_scales`` (B,N,3) and ``d_colors`` (B,N,3) are the field's outputs (object units), used
    by the scale- and colour-change regularisers.
    """

    world: GaussianBatch
    d_log_scales: torch.Tensor
    d_colors: torch.Tensor


class DynamicObject(nn.Module):
    """One object: canonical Gaussians (geometry frozen, colour learned), its field and placement."""

    def __init__(self, canonical: CanonicalGaussians, field: DeformationField, placement: ScenePlacement,
                 *, scale_first_depth: bool = False):
        super().__init__()
        self.register_buffer("means", canonical.means.detach().float().clone())
        self.register_buffer("quats", quat_normalize(canonical.quats.detach().float()).clone())
        self.register_buffer("log_scales", canonical.log_scales.detach().float().clone())
        self.register_buffer("opacities", canonical.opacities.detach().float().clone())
        self.color_logits = nn.Parameter(canonical.color_logits.detach().float().clone())
        self.field = field
        self.placement = placement
        self.scale_first_depth = scale_first_depth

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    def canonical(self) -> CanonicalGaussians:
        """The canonical Gaussians with the learned colours (for the bundle's canonical PLY)."""
        return CanonicalGaussians(means=self.means, log_scales=self.log_scales,
                                  colors=torch.sigmoid(self.color_logits), opacities=self.opacities,
                                  quats=self.quats)

    def _deform(self, frames: torch.Tensor) -> tuple[DeformationDelta, GaussianBatch]:
        """The field's deltas at ``frames`` (B,) and the deformed Gaussians in object units."""
        delta = self.field(self.means, frames)
        B, N = frames.shape[0], self.num_gaussians
        obj = GaussianBatch(means=self.means[None] + delta.d_means,
                            quats=quat_normalize(self.quats[None] + delta.d_quats),
                            log_scales=self.log_scales[None] + delta.d_log_scales,
                            colors=torch.sigmoid(self.color_logits[None] + delta.d_colors),
                            opacities=self.opacities[None].expand(B, N))
        return delta, obj

    def object_space(self, frames: torch.Tensor) -> GaussianBatch:
        """The object at ``frames`` (B,) long in its own units, without the scene placement: what the
        object-centric cameras of ``model.object_camera`` see (stage 2's novel-view guidance)."""
        return self._deform(frames)[1]

    def forward(self, frames: torch.Tensor, c2w: torch.Tensor) -> ObjectState:
        """The object at ``frames`` (B,) long, seen by cameras with camera-to-world ``c2w`` (B,4,4)."""
        delta, obj = self._deform(frames)
        B, N = frames.shape[0], self.num_gaussians
        s, trans, d = self.placement.at(frames)
        s, d = s[:, None, None], d[:, None, None]  # (B,1,1)
        cam = d * (s * obj.means + trans[:, None, :])
        R, t = c2w[:, :3, :3], c2w[:, :3, 3]
        world = torch.einsum("bij,bnj->bni", R, cam) + t[:, None, :]
        d_size = self.placement.at(torch.zeros_like(frames))[2][:, None, None] if self.scale_first_depth else d
        log_scales = obj.log_scales + torch.log(s * d_size)
        q_cam = rotmat_to_quat(R)[:, None, :].expand(B, N, 4)
        quats = quat_multiply(q_cam, obj.quats)
        return ObjectState(world=GaussianBatch(means=world, quats=quats, log_scales=log_scales, colors=obj.colors,
                                               opacities=obj.opacities),
                           d_log_scales=delta.d_log_scales, d_colors=delta.d_colors)
