"""Evaluation of a result bundle against its clip: masked PSNR and per-object mask IoU per frame.

Renders the bundle's baked Gaussians (not the optimizer's model), so it measures exactly what the
user imports. ``python -m backend.evaluate --bundle DIR --data_dir ... --mask_dir ...`` prints JSON.

- masked PSNR: the render over black against the frame, over the pixels of the union of the masks.
- IoU per object: pixels where the object's composited visibility exceeds 0.5 against its mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from genmojo_blender.core.bundle import Bundle, open_bundle

from .io.clip import load_clip
from .kernels import rasterize


@torch.no_grad()
def render_bundle_frame(bundle: Bundle, frames: dict, t: int, width: int, height: int,
                        device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render frame ``t`` of a bundle at ``width`` × ``height``: image (H,W,3), alpha (H,W), instance (H,W,K)."""
    cam = bundle.load_camera()
    objs = bundle.manifest.objects
    K = len(objs)

    def cat(name):
        return torch.cat([torch.from_numpy(frames[o.id][name][t]) for o in objs]).to(device)

    ids = torch.cat([torch.nn.functional.one_hot(torch.full((o.num_gaussians,), k), K).float()
                     for k, o in enumerate(objs)]).to(device)
    colors = torch.cat([cat("colors"), ids], 1)
    Kt = torch.from_numpy(cam.K[t]).float().clone()
    Kt[0] *= width / cam.width
    Kt[1] *= height / cam.height
    viewmat = torch.linalg.inv(torch.from_numpy(cam.c2w[t]).float())
    out, alpha, _ = rasterize(cat("means"), cat("quats"), cat("log_scales").exp(), cat("opacities"), colors,
                              viewmat[None].to(device), Kt[None].to(device), width, height,
                              near_plane=bundle.manifest.camera.near, far_plane=bundle.manifest.camera.far)
    out = out[0].cpu().numpy()
    return out[..., :3], alpha[0, ..., 0].cpu().numpy(), out[..., 3:]


def evaluate_bundle(bundle_dir: str | Path, data_dir: str | Path, mask_dir: str | Path, *, max_side: int = 720,
                    frames: list[int] | None = None, device: str = "cpu") -> dict:
    """Metrics per frame and per object, and their means, for the selected frames (default: all)."""
    bundle = open_bundle(bundle_dir)
    clip = load_clip(data_dir, mask_dir, max_side=max_side)
    ids = [o.id for o in bundle.manifest.objects]
    if clip.object_ids != ids or clip.num_frames != bundle.manifest.clip.frame_count:
        raise ValueError(f"{bundle_dir} was made from another clip (objects {ids}, "
                         f"{bundle.manifest.clip.frame_count} frames)")
    arrays = {}
    for o in bundle.manifest.objects:
        f = bundle.load_frames(o)
        arrays[o.id] = {n: getattr(f, n) for n in ("means", "quats", "log_scales", "colors", "opacities")}
    w, h = clip.work_size
    dev = torch.device(device)
    sel = list(range(clip.num_frames)) if frames is None else frames
    per_frame = []
    for t in sel:
        img, alpha, inst = render_bundle_frame(bundle, arrays, t, w, h, dev)
        gt = clip.frames[t].astype(np.float32) / 255
        union = clip.masks[:, t].any(0)
        mse = float(((img - gt) ** 2).mean(-1)[union].mean()) if union.any() else float("nan")
        ious = {}
        for k, oid in enumerate(ids):
            pred, true = inst[..., k] > 0.5, clip.masks[k, t]
            u = (pred | true).sum()
            ious[oid] = float((pred & true).sum() / u) if u else float("nan")
        per_frame.append({"frame": t, "psnr_masked": -10 * np.log10(max(mse, 1e-10)), "iou": ious})
    summary = {
        "psnr_masked": float(np.nanmean([r["psnr_masked"] for r in per_frame])),
        "iou": {oid: float(np.nanmean([r["iou"][oid] for r in per_frame])) for oid in ids},
    }
    return {"bundle": str(bundle.root), "frames": sel, "size": [w, h], "summary": summary, "per_frame": per_frame}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="result folder written by the backend")
    p.add_argument("--data_dir", required=True, type=Path, help="the clip the bundle was made from")
    p.add_argument("--mask_dir", required=True, type=Path, help="its masks folder")
    p.add_argument("--max_side", type=int, default=720, help="evaluate at this longer side (default 720)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    res = evaluate_bundle(a.bundle, a.data_dir, a.mask_dir, max_side=a.max_side, device=a.device)
    text = json.dumps(res, indent=2)
    if a.out:
        a.out.write_text(text)
    print(json.dumps(res["summary"], indent=2) if a.out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
