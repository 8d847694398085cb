"""Evaluation of a result bundle against its clip: masked PSNR, masked SSIM and per-object IoU per frame.

Renders the bundle's baked Gaussians (not the optimizer's model), so it measures exactly what the
user imports. ``python -m backend.evaluate --bundle DIR --data_dir ... --mask_dir ...`` prints JSON.

Only the objects are reconstructed, so image metrics look at the union of the object masks. The
prediction is the render over black and the target is the frame, both times the union mask: both images
are black outside the union, so SSIM windows straddling the mask border compare like with like (the
render's soft fringe outside the masks would otherwise count against SSIM but not PSNR; the silhouette
itself is judged by the IoU).

- ``psnr_masked``: PSNR (dB) over the union pixels (``backend.metrics.masked_psnr``).
- ``ssim_masked``: the SSIM map averaged over the union pixels (``backend.metrics.masked_ssim``).
- ``iou``: per object, pixels where its composited visibility exceeds 0.5 against its mask.
- ``area_ratio``: per object, that rendered area over the mask's area: above 1 the render spills
  over its silhouette, below 1 it falls short (what a low IoU is made of).

Diagnostics (not acceptance figures) that say where the errors are:

- ``spill`` and ``missed``: per object, rendered silhouette pixels outside the mask and mask pixels the
  silhouette does not cover, each over the mask's area (area ratio = 1 − missed + spill). A silhouette
  that is only too large has spill and no misses; one that is misplaced (motion off by a few pixels)
  has both.
- ``psnr_object``: per object, the masked PSNR inside its own mask.
- ``jitter_px``: per object, how far its Gaussians are, in pixels of the working size, from the midpoint
  of where they are one frame before and one frame after (NaN at the first and last frame). A smooth
  motion scores near 0 (on the ground-truth clip gt_medium its surface points score 0.1-1.4 px); per-frame
  wobble shows at the trained frames, while a withheld frame reads its placement interpolated from its
  neighbours and scores near 0, so the two splits differ by the wobble a held-out frame cannot follow.
- ``psnr_interior`` and ``psnr_edge``: the masked PSNR on the union eroded by ``EDGE_PX`` pixels and on
  the band of that width inside the union's border (thin objects carry much of their error there).

Frames withheld from the fit (``run --holdout N``, recorded as ``manifest.run.holdout_frames``) measure
how well the motion generalises between training frames, so they are summarised apart from the
frames the model was fitted to. ``--frames`` picks ``all`` (default), ``holdout`` or ``train``.

JSON output (NaN, e.g. IoU of an object absent from both render and mask, is written as null)::

    {
      "bundle": "/path/to/bundle",
      "size": [w, h],                          # evaluation resolution
      "frames": [0, 1, ...],                   # the evaluated frames
      "holdout_frames": [3, 7],                # withheld from the fit ([] when none were)
      "summary": SUMMARY,                      # over all evaluated frames
      "splits": {"holdout": SUMMARY, "train": SUMMARY}   # bundle with withheld frames
             or {"all": SUMMARY},                        # bundle without
      "per_frame": [{"frame": 0, "holdout": false, "psnr_masked": 31.2, "ssim_masked": 0.93,
                     "iou": {"001": 0.95, ...}, "area_ratio": {"001": 1.02, ...},
                     "spill": {"001": 0.04, ...}, "missed": {"001": 0.02, ...},
                     "psnr_object": {"001": 30.1, ...}, "psnr_interior": 33.0, "psnr_edge": 24.5}, ...]
    }
    SUMMARY = {"frames": [...], "count": n, "psnr_masked": mean, "ssim_masked": mean,
               "iou": {"001": mean, ...}, "area_ratio": {"001": mean, ...}, "spill": {...}, "missed": {...},
               "psnr_object": {...}, "psnr_interior": mean, "psnr_edge": mean}

A split appears only when some evaluated frame belongs to it (``--frames train`` gives only "train").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from genmojo_blender.core.alignment import project
from genmojo_blender.core.bundle import Bundle, BundleError, ObjectFrames, open_bundle

from .errors import GenmojoError, InputError, describe_error
from .io.clip import load_clip
from .metrics import mask_iou, masked_psnr, masked_ssim
from .model.camera import Cameras
from .model.gaussians import GaussianBatch
from .model.scene import render_scene

FRAME_SETS = ("all", "holdout", "train")


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


def select_frames(frames: str | list[int] | None, num_frames: int, holdout: list[int], where: str) -> list[int]:
    """The frame indices to evaluate: a named set (``all``, ``holdout``, ``train``) or explicit indices."""
    if frames is None or frames == "all":
        return list(range(num_frames))
    if frames == "holdout":
        if not holdout:
            raise InputError(f"{where}: the run had no --holdout, so it has no withheld frames to evaluate",
                             "evaluate --frames all (or train), or fit again with --holdout N")
        return sorted(holdout)
    if frames == "train":
        held = set(holdout)
        return [t for t in range(num_frames) if t not in held]
    if isinstance(frames, str):
        raise InputError(f"unknown frame set {frames!r}", f"use one of {', '.join(FRAME_SETS)} or a list of indices")
    sel = list(frames)
    bad = [t for t in sel if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or not 0 <= t < num_frames]
    if bad:
        raise InputError(f"frame index(es) {bad[:5]} outside the clip's {num_frames} frames",
                         f"use indices 0..{num_frames - 1}")
    return [int(t) for t in sel]


def _mean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


EDGE_PX = 2  # width of the band inside the union's border that psnr_edge looks at


def _silhouette_fractions(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """Area ratio, spill and missed of a rendered silhouette against its mask, each over the mask's area
    (all NaN for an empty mask)."""
    n = np.count_nonzero(true)
    if not n:
        return float("nan"), float("nan"), float("nan")
    return (float(np.count_nonzero(pred) / n), float(np.count_nonzero(pred & ~true) / n),
            float(np.count_nonzero(true & ~pred) / n))


def _interior(union: np.ndarray, px: int) -> np.ndarray:
    """The union eroded by ``px`` pixels (a pixel stays if its whole (2px+1)² window is inside)."""
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.erode(union.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)


def jitter_px(means: np.ndarray, cams: Cameras) -> np.ndarray:
    """(T,) for one object's baked means (T,N,3): the mean over its Gaussians in front of the camera of
    |uv_t − (uv_{t−1} + uv_{t+1})/2| in pixels of ``cams``, NaN at the first and last frame (``jitter_px`` in
    the module docstring)."""
    K, c2w = cams.K.double().cpu().numpy(), cams.c2w.double().cpu().numpy()
    uv = np.stack([project(K[t], c2w[t], means[t])[0] for t in range(means.shape[0])])
    out = np.full(means.shape[0], np.nan)
    if means.shape[0] >= 3 and means.shape[1]:
        with warnings.catch_warnings():  # a frame with every Gaussian behind the camera is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out[1:-1] = np.nanmean(np.linalg.norm(uv[1:-1] - 0.5 * (uv[2:] + uv[:-2]), axis=-1), axis=-1)
    return out


def summarise(rows: list[dict], ids: list[str]) -> dict:
    """Means of the per-frame metrics over ``rows`` (NaN entries skipped), with the frames they cover."""
    return {
        "frames": [r["frame"] for r in rows],
        "count": len(rows),
        "psnr_masked": _mean([r["psnr_masked"] for r in rows]),
        "ssim_masked": _mean([r["ssim_masked"] for r in rows]),
        "iou": {oid: _mean([r["iou"][oid] for r in rows]) for oid in ids},
        "area_ratio": {oid: _mean([r["area_ratio"][oid] for r in rows]) for oid in ids},
        "spill": {oid: _mean([r["spill"][oid] for r in rows]) for oid in ids},
        "missed": {oid: _mean([r["missed"][oid] for r in rows]) for oid in ids},
        "psnr_object": {oid: _mean([r["psnr_object"][oid] for r in rows]) for oid in ids},
        "psnr_interior": _mean([r["psnr_interior"] for r in rows]),
        "psnr_edge": _mean([r["psnr_edge"] for r in rows]),
        "jitter_px": {oid: _mean([r["jitter_px"][oid] for r in rows]) for oid in ids},
    }


def evaluate_bundle(bundle_dir: str | Path, data_dir: str | Path, mask_dir: str | Path, *, max_side: int = 720,
                    frames: str | list[int] | None = None, device: str = "cpu") -> dict:
    """Metrics per frame and per object for the selected frames, summarised overall and per split.

    ``frames``: ``"all"`` (or None), ``"holdout"``, ``"train"`` or a list of frame indices. Raises
    InputError when the clip does not match the bundle, or ``"holdout"`` is asked of a bundle whose
    run withheld no frames. The returned dict has the shape documented in the module docstring.
    """
    bundle = open_bundle(bundle_dir)
    clip = load_clip(data_dir, mask_dir, max_side=max_side)
    ids = [o.id for o in bundle.manifest.objects]
    if clip.object_ids != ids or clip.num_frames != bundle.manifest.clip.frame_count:
        raise InputError(f"{bundle_dir} was made from another clip (objects {ids}, "
                         f"{bundle.manifest.clip.frame_count} frames)",
                         "pass the --data_dir and --mask_dir the bundle was fitted to")
    holdout = sorted(set(bundle.manifest.run.holdout_frames))
    if any(t >= clip.num_frames for t in holdout):
        raise InputError(f"{bundle_dir}: withheld frames {holdout} lie outside its {clip.num_frames} frames",
                         "the manifest is inconsistent; run the fit again")
    sel = select_frames(frames, clip.num_frames, holdout, str(bundle_dir))
    held = set(holdout)

    baked = [bundle.load_frames(o) for o in bundle.manifest.objects]
    w, h = clip.work_size
    dev = torch.device(device)
    cams = bundle_cameras(bundle, w, h).to(dev)
    black = torch.zeros(1, 3, device=dev)
    jitter = {oid: jitter_px(b.means, cams) for oid, b in zip(ids, baked)}
    per_frame = []
    for t in sel:
        idx = torch.tensor([t], device=dev)
        with torch.no_grad():
            r = render_scene(frame_batches(baked, t, dev), cams.viewmats(idx), cams.K[idx], w, h, black,
                             near=cams.near, far=cams.far)
        inst = r.instance[0].cpu().numpy()
        union = clip.masks[:, t].any(0)
        pred = r.image[0].clamp(0, 1).cpu().numpy().astype(np.float64) * union[..., None]
        target = clip.frames[t].astype(np.float64) / 255 * union[..., None]
        sil = [inst[..., k] > 0.5 for k in range(len(ids))]
        true = [clip.masks[k, t].astype(bool) for k in range(len(ids))]
        inner = _interior(union, EDGE_PX)
        area_ratio, spill, missed = zip(*(_silhouette_fractions(sil[k], true[k]) for k in range(len(ids))))
        per_frame.append({
            "frame": t,
            "holdout": t in held,
            "psnr_masked": masked_psnr(pred, target, union),
            "ssim_masked": masked_ssim(pred, target, union),
            "iou": {oid: mask_iou(sil[k], true[k]) for k, oid in enumerate(ids)},
            "area_ratio": dict(zip(ids, area_ratio)),
            "spill": dict(zip(ids, spill)),
            "missed": dict(zip(ids, missed)),
            "psnr_object": {oid: masked_psnr(pred, target, true[k]) for k, oid in enumerate(ids)},  # NaN if empty
            "psnr_interior": masked_psnr(pred, target, inner),
            "psnr_edge": masked_psnr(pred, target, union & ~inner),
            "jitter_px": {oid: float(jitter[oid][t]) for oid in ids},
        })

    if holdout:
        groups = {"holdout": [r for r in per_frame if r["holdout"]],
                  "train": [r for r in per_frame if not r["holdout"]]}
    else:
        groups = {"all": per_frame}
    splits = {name: summarise(rows, ids) for name, rows in groups.items() if rows}
    return {"bundle": str(bundle.root), "size": [w, h], "frames": sel, "holdout_frames": holdout,
            "summary": summarise(per_frame, ids), "splits": splits, "per_frame": per_frame}


def json_safe(x):
    """NaN and inf (undefined metrics) become null, numpy scalars plain numbers, so the output is strict JSON."""
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="result folder written by the backend")
    p.add_argument("--data_dir", required=True, type=Path, help="the clip the bundle was made from")
    p.add_argument("--mask_dir", required=True, type=Path, help="its masks folder")
    p.add_argument("--max_side", type=int, default=720, help="evaluate at this longer side (default 720)")
    p.add_argument("--frames", default="all", choices=FRAME_SETS,
                   help="frames to evaluate: all (default; summarised per split), holdout (the frames "
                        "withheld by the run's --holdout) or train (the frames it was fitted to)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    try:
        res = evaluate_bundle(a.bundle, a.data_dir, a.mask_dir, max_side=a.max_side, frames=a.frames,
                              device=a.device)
    except (GenmojoError, BundleError) as e:
        print(describe_error(e), file=sys.stderr)
        return 2
    res = json_safe(res)
    text = json.dumps(res, indent=2)
    if a.out:
        a.out.write_text(text)
    print(json.dumps({"summary": res["summary"], "splits": res["splits"]}, indent=2) if a.out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
