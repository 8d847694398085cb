"""Baking: evaluate the fitted model at every frame into plain arrays (the bundle's per-frame data).

This is the arrow "deformation → baked result": after it, nothing needs torch or the model.
"""

from __future__ import annotations

import numpy as np
import torch

from genmojo_blender.core import bundle as fmt

from .io.bundle_writer import BakedObject, CanonicalArrays

# Distinct display colours for objects in Blender (cycled when there are more objects).
PALETTE = [(0.90, 0.30, 0.25), (0.25, 0.60, 0.95), (0.35, 0.80, 0.35), (0.95, 0.75, 0.20),
           (0.70, 0.40, 0.90), (0.20, 0.80, 0.80), (0.95, 0.50, 0.70), (0.60, 0.60, 0.60)]


@torch.no_grad()
def bake_objects(model, visible: np.ndarray, device: torch.device, chunk: int = 8) -> list[BakedObject]:
    """Every object's Gaussians at every frame. ``visible`` (K, T) comes from the masks.

    ``model`` is either optimizer's scene: it has ``object_ids``, ``world_at(frames)`` (a
    ``GaussianBatch`` per object) and ``canonical(k)``.
    """
    T = visible.shape[1]
    parts: list[list] = [[] for _ in model.object_ids]
    for s in range(0, T, chunk):
        frames = torch.arange(s, min(T, s + chunk), device=device)
        for k, g in enumerate(model.world_at(frames)):
            parts[k].append(g)
    out = []
    for k, oid in enumerate(model.object_ids):
        canon = model.canonical(k)
        cat = {name: torch.cat([getattr(p, name) for p in parts[k]]).float().cpu().numpy()
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
