"""Baking: evaluate the fitted model at every frame into plain arrays (the bundle's per-frame data).

This is the arrow "deformation → baked result": after it, nothing needs torch or the model.
"""

from __future__ import annotations

import numpy as np
import torch

from genmojo_blender.core import bundle as fmt

from .io.bundle_writer import BakedObject, CanonicalArrays
from .model.camera import Cameras
from .optim.skeleton import SceneModel, render_frames

# Distinct display colours for objects in Blender (cycled when there are more objects).
PALETTE = [(0.90, 0.30, 0.25), (0.25, 0.60, 0.95), (0.35, 0.80, 0.35), (0.95, 0.75, 0.20),
           (0.70, 0.40, 0.90), (0.20, 0.80, 0.80), (0.95, 0.50, 0.70), (0.60, 0.60, 0.60)]


@torch.no_grad()
def bake_objects(model: SceneModel, visible: np.ndarray, chunk: int = 16) -> list[BakedObject]:
    """Every object's Gaussians at every frame. ``visible`` (K, T) comes from the masks."""
    T = visible.shape[1]
    out = []
    for k, (oid, canon, motion) in enumerate(zip(model.object_ids, model.canonicals, model.motions)):
        parts = []
        for s in range(0, T, chunk):
            frames = torch.arange(s, min(T, s + chunk), device=canon.means.device)
            parts.append(motion(canon, frames))
        cat = {name: torch.cat([getattr(p, name) for p in parts]).float().cpu().numpy()
               for name in ("means", "quats", "log_scales", "colors", "opacities")}
        q = cat["quats"]
        cat["quats"] = q / np.linalg.norm(q, axis=-1, keepdims=True).clip(1e-12)
        frames_np = fmt.ObjectFrames(**cat)
        c = CanonicalArrays(means=canon.means.float().cpu().numpy(),
                               quats=canon.quats.float().cpu().numpy(),
                               log_scales=canon.log_scales.float().cpu().numpy(),
                               colors=canon.colors.float().cpu().numpy(),
                               opacities=canon.opacities.float().cpu().numpy())
        out.append(BakedObject(id=oid, name=f"object_{oid}", color=PALETTE[k % len(PALETTE)], canonical=c,
                               frames=frames_np, visible=[bool(v) for v in visible[k]]))
    return out


@torch.no_grad()
def render_preview(model: SceneModel, cameras: Cameras, plate: np.ndarray, chunk: int = 4) -> np.ndarray:
    """Input-view preview: the input frame beside the render composited over it, (T, H, 2W, 3) uint8."""
    T = plate.shape[0]
    dev = cameras.K.device
    out = np.empty((T, plate.shape[1], plate.shape[2] * 2, 3), np.uint8)
    for s in range(0, T, chunk):
        frames = torch.arange(s, min(T, s + chunk), device=dev)
        r = render_frames(model, cameras, frames)
        bg = torch.from_numpy(plate[s:s + len(frames)]).to(dev).float() / 255
        comp = (r.image + (1 - r.alpha[..., None]) * bg).clamp(0, 1)
        out[s:s + len(frames), :, :plate.shape[2]] = plate[s:s + len(frames)]
        out[s:s + len(frames), :, plate.shape[2]:] = (comp * 255 + 0.5).byte().cpu().numpy()
    return out
