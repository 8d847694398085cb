"""Scores a result bundle against a ground-truth clip (``scripts/make_gt_clip.py``) and writes a report.

``python -m backend.evaluate_gt --bundle B --gt CLIP --out DIR`` writes ``DIR/gt_eval.json`` (every
metric of ``backend/gt_eval.py``), ``DIR/report.md`` and ``DIR/images/*.png``, and prints the
headline figures as JSON. Exit codes: 0 done, 2 bad input (the message names the file and the fix).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genmojo_blender.core.bundle import BundleError

from .errors import GenmojoError, describe_error
from .evaluate import json_safe
from .gt_eval import evaluate_gt
from .gt_report import write_report


def headline(m: dict) -> dict:
    """The figures worth a glance: held-out frames, novel views, tracks and depth order."""
    splits = m["frames"]["splits"]
    frames = splits.get("holdout", splits.get("all"))
    return json_safe({
        "frames": {"split": "holdout" if "holdout" in splits else "all", "psnr_masked": frames["psnr_masked"],
                   "ssim_masked": frames["ssim_masked"], "iou": frames["iou"]},
        "novel_views": {"psnr_masked": m["novel_views"]["summary"]["psnr_masked"],
                        "iou": m["novel_views"]["summary"]["iou"]},
        "tracks_3d": {k: m["tracks_3d"][k]["epe_mean"] for k in ("visible", "occluded", "occluded_by_other")},
        "tracks_2d_delta_avg": {k: m["tracks_2d"][k]["delta_avg"] for k in ("visible", "occluded")},
        "depth_order": m["depth_order"]["summary"]["accuracy"],
        "warnings": m["warnings"],
    })


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.evaluate_gt", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="result folder written by the backend")
    p.add_argument("--gt", required=True, type=Path,
                   help="the ground-truth clip folder (written by scripts/make_gt_clip.py) the bundle was fitted to")
    p.add_argument("--out", required=True, type=Path, help="folder for gt_eval.json, report.md and images/")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--neighbours", type=int, default=1,
                   help="Gaussians whose mean centre tracks each true point (default 1: the nearest)")
    p.add_argument("--min_opacity", type=float, default=0.1,
                   help="only Gaussians at least this opaque at the reference frame carry tracks (default 0.1)")
    p.add_argument("--track_side", type=int, default=256,
                   help="2D accuracy thresholds are in pixels of an image with this longer side (default 256)")
    a = p.parse_args(argv)
    try:
        ev = evaluate_gt(a.bundle, a.gt, device=a.device, neighbours=a.neighbours, min_opacity=a.min_opacity,
                         track_side=a.track_side)
        paths = write_report(ev, a.out)
    except (GenmojoError, BundleError) as e:
        print(describe_error(e), file=sys.stderr)
        return 2
    print(json.dumps(headline(ev.metrics), indent=2))
    print(f"report: {paths['report']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
