"""Do a result's objects line up with the footage, and how well does its background reproduce it?

    python -m backend.check_alignment BUNDLE --mask_dir MASKS [--data_dir FRAMES] [--device auto]
                                      [--dilate_px 2] [--min_fraction 0.95] [--out report.json]

Alignment: every Gaussian of object k that the render of the bundle shows at frame t (``shown``
below), projected through the bundle's camera of frame t, should fall inside object k's mask at
frame t grown by ``--dilate_px`` pixels (``genmojo_blender.core.alignment``). The Blender test checks
the same figure through Blender's imported camera instead of the bundle's K.

Shown (the definition): the bundle's objects (not the background) are rendered together at the
clip's original size through each frame's camera; Gaussian i of object k is shown at frame t when the
manifest marks object k visible at t, its opacity is at least ``--min_opacity`` (0.1), its centre
projects inside the image in front of the camera, the render's alpha at that pixel is at least
``--min_alpha`` (0.5, the render shows something there), and its camera depth is at most
(1 + ``--depth_tol``) × the render's expected depth there (0.1: it is not hidden behind what the
render shows, e.g. another object in front).

Background (bundles of background mode): the background Gaussians alone, rendered through every
frame's camera over black, against the frames on the background mask (folder 000 of --mask_dir,
else the pixels outside every object mask), as PSNR pooled over all those pixels, PSNR over the ones
the background covers (alpha > 0.5) and that coverage, for training and withheld frames separately.

The report (JSON on stdout, and in ``--out``) also holds the command's settings. Exit status 0, or
3 when the alignment fraction is below ``--min_fraction`` (so scripts can gate on it), 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genmojo_blender.core import alignment as al
from genmojo_blender.core.bundle import Bundle, BundleError, open_bundle

from .errors import InputError
from .io.clip import load_clip
from .model.camera import Cameras
from .model.gaussians import GaussianBatch
from .model.scene import render_scene
from .optim.background import score_background
from .pipeline import resolve_device
from .previews import _batches

EXIT_BELOW = 3


@dataclass(frozen=True)
class ShownRule:
    """Which Gaussians the render shows (see the module docstring)."""

    min_opacity: float = 0.1
    min_alpha: float = 0.5
    depth_tol: float = 0.1


def bundle_cameras(bundle: Bundle) -> Cameras:
    """The bundle's cameras at the clip's original size (K as stored)."""
    m = bundle.manifest
    cam = bundle.load_camera()
    return Cameras(K=torch.from_numpy(cam.K).float(), c2w=torch.from_numpy(cam.c2w).float(), width=m.clip.width,
                   height=m.clip.height, near=m.camera.near, far=m.camera.far, source=m.camera.source)


@torch.no_grad()
def shown_gaussians(bundle: Bundle, device: torch.device, rule: ShownRule = ShownRule(),
                    chunk: int = 2) -> dict[str, np.ndarray]:
    """Per object id, (T, N) bool: the Gaussians the joint render of the objects shows at each frame."""
    m = bundle.manifest
    objects = [bundle.load_frames(o) for o in m.objects]
    cams = bundle_cameras(bundle).to(device)
    T, W, H = m.clip.frame_count, m.clip.width, m.clip.height
    out = {o.id: np.zeros((T, fr.num_gaussians), bool) for o, fr in zip(m.objects, objects)}
    for s in range(0, T, chunk):
        times = np.arange(s, min(T, s + chunk))
        fr = torch.from_numpy(times).to(device)
        vm, Ks = cams.viewmats(fr), cams.K[fr]
        batches = _batches(objects, times, device)
        r = render_scene(batches, vm, Ks, W, H, torch.zeros(len(times), 3, device=device), near=cams.near,
                         far=cams.far)
        for b, t in enumerate(times):
            for info, g in zip(m.objects, batches):
                if not info.visible[t]:
                    continue
                means = g.means[b]
                cam = means @ vm[b, :3, :3].T + vm[b, :3, 3]
                z = cam[:, 2]
                uv = cam[:, :2] / z.clamp_min(1e-12)[:, None] * Ks[b, [0, 1], [0, 1]] + Ks[b, :2, 2]
                inside = (z > cams.near) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
                x = uv[:, 0].nan_to_num(0).floor().long().clamp(0, W - 1)
                y = uv[:, 1].nan_to_num(0).floor().long().clamp(0, H - 1)
                alpha, depth = r.alpha[b, y, x], r.depth[b, y, x]
                ok = (inside & (g.opacities[b] >= rule.min_opacity) & (alpha >= rule.min_alpha)
                      & (z <= (1 + rule.depth_tol) * depth))
                out[info.id][t] = ok.cpu().numpy()
    return out


def projected_points(bundle: Bundle) -> dict[str, np.ndarray]:
    """Per object id, (T, N, 2): every Gaussian centre through its frame's bundle camera (pixels)."""
    cam = bundle.load_camera()
    out = {}
    for o in bundle.manifest.objects:
        means = bundle.load_frames(o).means
        out[o.id] = np.stack([al.project(cam.K[t], cam.c2w[t], means[t])[0] for t in range(len(means))])
    return out


def load_reference(bundle: Bundle, mask_dir: Path, data_dir: Path | None):
    """The clip at its original size (frames and masks) for the bundle, checked against it."""
    m = bundle.manifest
    src = Path(data_dir) if data_dir is not None else Path(m.clip.source)
    clip = load_clip(src, mask_dir, max_side=max(m.clip.width, m.clip.height), fps=m.clip.fps)
    ids = [o.id for o in m.objects]
    if clip.object_ids != ids:
        raise InputError(f"{mask_dir}: objects {clip.object_ids}, the bundle has {ids}",
                         "pass the mask folder the bundle was made from")
    if (clip.width, clip.height) != (m.clip.width, m.clip.height) or clip.num_frames != m.clip.frame_count:
        raise InputError(f"{src}: {clip.num_frames} frames of {clip.width}x{clip.height}, the bundle has "
                         f"{m.clip.frame_count} of {m.clip.width}x{m.clip.height}",
                         "pass the frames the bundle was made from (--data_dir)")
    return clip


def background_report(bundle: Bundle, clip, device: torch.device) -> dict | None:
    """The background's masked PSNR through the real cameras, for training and withheld frames."""
    g = bundle.load_background()
    if g is None:
        return None
    cams = bundle_cameras(bundle).to(device)
    mask = clip.background if clip.background is not None else ~clip.masks.any(0)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)[None]

    batch = GaussianBatch(means=t(g.means), quats=t(g.quats), log_scales=t(g.log_scales), colors=t(g.colors),
                          opacities=t(g.opacities))
    frames = torch.from_numpy(clip.frames).to(device).float() / 255
    masks = torch.from_numpy(mask).to(device)
    held = set(bundle.manifest.run.holdout_frames)
    out = {"mask": "folder 000" if clip.background is not None else "pixels outside every object mask",
           "num_gaussians": g.num_gaussians}
    for name, ids in (("train", [i for i in range(clip.num_frames) if i not in held]), ("held_out", sorted(held))):
        ids = [i for i in ids if mask[i].any()]
        if ids:
            out[name] = score_background(batch, cams, frames, masks, ids).to_dict()
    return out


def check(bundle_path: Path, mask_dir: Path, *, data_dir: Path | None = None, device: str = "auto",
          dilate_px: float = 2.0, rule: ShownRule = ShownRule()) -> dict:
    """The full report for one bundle (see the module docstring)."""
    try:
        bundle = open_bundle(bundle_path)
    except BundleError as e:
        raise InputError(str(e), "pass a result folder written by the backend") from e
    dev = resolve_device(device)
    clip = load_reference(bundle, Path(mask_dir), data_dir)
    shown = shown_gaussians(bundle, dev, rule)
    uv = projected_points(bundle)
    masks = {oid: clip.masks[k] for k, oid in enumerate(clip.object_ids)}
    res = al.mask_alignment(uv, shown, masks, dilate_px)
    report = {"bundle": str(Path(bundle_path).resolve()), "mask_dir": str(Path(mask_dir).resolve()),
              "camera": bundle.manifest.camera.source, "shown_rule": rule.__dict__,
              "alignment": res.to_dict(), "background": background_report(bundle, clip, dev)}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.check_alignment", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="the result folder (or its manifest.json)")
    p.add_argument("--mask_dir", type=Path, required=True, help="the per-object masks the result was made from")
    p.add_argument("--data_dir", type=Path, default=None,
                   help="the frames (default: the manifest's clip.source)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dilate_px", type=float, default=2.0, help="grow each mask by this many pixels (default 2)")
    p.add_argument("--min_opacity", type=float, default=ShownRule.min_opacity)
    p.add_argument("--min_alpha", type=float, default=ShownRule.min_alpha)
    p.add_argument("--depth_tol", type=float, default=ShownRule.depth_tol)
    p.add_argument("--min_fraction", type=float, default=0.95,
                   help="exit 3 when the aligned fraction is below this (default 0.95)")
    p.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    a = p.parse_args(argv)
    try:
        report = check(a.bundle, a.mask_dir, data_dir=a.data_dir, device=a.device, dilate_px=a.dilate_px,
                       rule=ShownRule(a.min_opacity, a.min_alpha, a.depth_tol))
    except InputError as e:
        print(f"check_alignment: {e}" + (f"\n  hint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1)
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n", encoding="utf-8")
    frac = report["alignment"]["fraction"]
    return 0 if frac is not None and frac >= a.min_fraction else EXIT_BELOW


if __name__ == "__main__":
    sys.exit(main())
