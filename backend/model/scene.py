"""Joint rendering of all objects at once, so that objects occlude each other correctly.

Every object's Gaussians are concatenated per frame and all frames go through one rasterizer call. Besides colour and
alpha, each Gaussian carries a one-hot object id, so the composited extra channels give, per pixel,
how much of each object is visible (they sum to the alpha): the instance image. Background mode's
static background Gaussians join the same call without an instance channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import rasterize_frames
from .gaussians import GaussianBatch


@dataclass
class SceneRender:
    """Rendered frames: image (B,H,W,3), alpha (B,H,W), instance (B,H,W,K), depth (B,H,W) expected depth."""

    image: torch.Tensor
    alpha: torch.Tensor
    instance: torch.Tensor
    depth: torch.Tensor


def render_scene(objects: list[GaussianBatch], viewmats: torch.Tensor, Ks: torch.Tensor, width: int,
                 height: int, backgrounds: torch.Tensor, *, near: float, far: float,
                 static: GaussianBatch | None = None) -> SceneRender:
    """Render B frames of K objects. ``objects[k]`` holds object k at the B frames; viewmats (B,4,4)
    world-to-camera (OpenCV), Ks (B,3,3), backgrounds (B,3) RGB.

    ``static`` (background mode's background Gaussians, repeated over the B frames) is composited
    in the same call, so objects and background occlude each other by depth; it has no instance
    channel, so ``instance`` still sums to the objects' share of the alpha."""
    K = len(objects)
    B = viewmats.shape[0]
    dev = viewmats.device
    parts = list(objects) + ([static] if static is not None else [])
    if not parts:
        raise ValueError("render_scene needs at least one object or a static background")
    ids = torch.cat([torch.zeros(o.num_gaussians, K, device=dev).index_fill_(1, torch.tensor([k], device=dev), 1.0)
                     for k, o in enumerate(objects)] + ([torch.zeros(static.num_gaussians, K, device=dev)]
                                                        if static is not None else []), 0)
    means = torch.cat([o.means for o in parts], 1)
    quats = torch.cat([o.quats for o in parts], 1)
    scales = torch.cat([o.log_scales for o in parts], 1).exp()
    opac = torch.cat([o.opacities for o in parts], 1)
    cols = torch.cat([torch.cat([o.colors for o in parts], 1), ids[None].expand(B, -1, -1)], 2)
    bgs = torch.cat([backgrounds, torch.zeros(B, K, device=dev)], 1)
    out, alpha = rasterize_frames(means, quats, scales, opac, cols, viewmats, Ks, width, height, near_plane=near,
                                  far_plane=far, render_mode="RGB+ED", backgrounds=bgs)
    return SceneRender(image=out[..., :3], alpha=alpha[..., 0], instance=out[..., 3:3 + K], depth=out[..., 3 + K])
