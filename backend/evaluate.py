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

from genmojo_blender.core.bundle import Bundle, ObjectFrames, open_bundle

from .io.clip import load_clip
from .model.camera import Cameras
from .model.gaussians import GaussianBatch
from .model.scene import render_scene


def bundle_cameras(bundle: Bundle, width: int, height: int) -> Cameras:
    """The bundle's cameras with intrinsics rescaled to ``width`` × ``height``."""
    cam = bundle.load_camera()
    K = torch.from_numpy(cam.K).float().clone()
    K[:, 0] *= width / cam.width
    K[:, 1] *= height / cam.height
    c = bundle.manifest.camera
    return Cameras(K=K, c2w=torch.from_numpy(cam.c2w).float(), width=width, height=height, near=c.near,
                   far=c.far, source=c.source)


def frame_batches(frames: list[ObjectFrames], t: int, device: torch.device) -> list[GaussianBatch]:
    """Every object's baked Gaussians at frame ``t`` as one-frame batches for ``render_scene``."""
    def one(a):
        return torch.from_numpy(a[t:t + 1]).to(device)

    return [GaussianBatch(means=one(f.means), quats=one(f.quats), log_scales=one(f.log_scales),
                          colors=one(f.colors), opacities=one(f.opacities)) for f in frames]


def evaluate_bundle(bundle_dir: str | Path, data_dir: str | Path, mask_dir: str | Path, *, max_side: int = 720,
                    frames: list[int] | None = None, device: str = "cpu") -> dict:
    """Metrics per frame and per object, and their means, for the selected frames (default: all)."""
    bundle = open_bundle(bundle_dir)
    clip = load_clip(data_dir, mask_dir, max_side=max_side)
    ids = [o.id for o in bundle.manifest.objects]
    if clip.object_ids != ids or clip.num_frames != bundle.manifest.clip.frame_count:
        raise ValueError(f"{bundle_dir} was made from another clip (objects {ids}, "
                         f"{bundle.manifest.clip.frame_count} frames)")
    baked = [bundle.load_frames(o) for o in bundle.manifest.objects]
    w, h = clip.work_size
    dev = torch.device(device)
    cams = bundle_cameras(bundle, w, h).to(dev)
    sel = list(range(clip.num_frames)) if frames is None else frames
    black = torch.zeros(1, 3, device=dev)
    per_frame = []
    for t in sel:
        idx = torch.tensor([t], device=dev)
        with torch.no_grad():
            r = render_scene(frame_batches(baked, t, dev), cams.viewmats(idx), cams.K[idx], w, h, black,
                             near=cams.near, far=cams.far)
        img, inst = r.image[0].cpu().numpy(), r.instance[0].cpu().numpy()
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
