"""Joint rendering of all objects at once, so that objects occlude each other correctly.

Every object's Gaussians for a frame are concatenated into one rasterizer call. Besides colour and
alpha, each Gaussian carries a one-hot object id, so the composited extra channels give, per pixel,
how much of each object is visible (they sum to the alpha): the instance image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import rasterize
from .gaussians import GaussianBatch


@dataclass
class SceneRender:
    """Rendered frames: image (B,H,W,3), alpha (B,H,W), instance (B,H,W,K), depth (B,H,W) expected depth."""

    image: torch.Tensor
    alpha: torch.Tensor
    instance: torch.Tensor
    depth: torch.Tensor


def render_scene(objects: list[GaussianBatch], viewmats: torch.Tensor, Ks: torch.Tensor, width: int,
                 height: int, backgrounds: torch.Tensor, *, near: float, far: float) -> SceneRender:
    """Render B frames of K objects. ``objects[k]`` holds object k at the B frames; viewmats (B,4,4)
    world-to-camera (OpenCV), Ks (B,3,3), backgrounds (B,3) RGB."""
    K = len(objects)
    B = viewmats.shape[0]
    dev = viewmats.device
    onehots = [torch.zeros(o.num_gaussians, K, device=dev).index_fill_(1, torch.tensor([k], device=dev), 1.0)
               for k, o in enumerate(objects)]
    ids = torch.cat(onehots, 0)
    images, alphas, insts, depths = [], [], [], []
    for b in range(B):
        means = torch.cat([o.means[b] for o in objects], 0)
        quats = torch.cat([o.quats[b] for o in objects], 0)
        scales = torch.cat([o.log_scales[b] for o in objects], 0).exp()
        opac = torch.cat([o.opacities[b] for o in objects], 0)
        cols = torch.cat([torch.cat([o.colors[b] for o in objects], 0), ids], 1)
        bg = torch.cat([backgrounds[b], torch.zeros(K, device=dev)])[None]
        out, alpha, _ = rasterize(means, quats, scales, opac, cols, viewmats[b:b + 1], Ks[b:b + 1],
                                  width, height, near_plane=near, far_plane=far, render_mode="RGB+ED",
                                  backgrounds=bg)
        images.append(out[0, ..., :3])
        insts.append(out[0, ..., 3:3 + K])
        depths.append(out[0, ..., 3 + K])
        alphas.append(alpha[0, ..., 0])
    return SceneRender(image=torch.stack(images), alpha=torch.stack(alphas), instance=torch.stack(insts),
                       depth=torch.stack(depths))
