"""The ground-truth evaluation's report: JSON, a markdown page, and its pictures (PNG).

Written by ``python -m backend.evaluate_gt``. The pictures are drawn with OpenCV (no plotting
library is needed): renders beside the truth, true and predicted tracks on one frame, and the
errors over time as line plots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from .evaluate import json_safe
from .gt_eval import THRESHOLDS_PX, GtEvaluation

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]  # RGB
MIN_PICTURE_SIDE = 256


def _upscale(img: np.ndarray, side: int = MIN_PICTURE_SIDE) -> tuple[np.ndarray, int]:
    f = max(1, int(math.ceil(side / max(img.shape[:2]))))
    return cv2.resize(img, (img.shape[1] * f, img.shape[0] * f), interpolation=cv2.INTER_NEAREST), f


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def side_by_side(truth: np.ndarray, render: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Truth | render (over black) | absolute difference x3 inside the true object pixels (grey outside),
    upscaled so the longer side is >= 256 px, RGB uint8."""
    diff = np.clip(np.abs(truth.astype(np.int32) - render.astype(np.int32)) * 3, 0, 255).astype(np.uint8)
    diff[~mask] = 128
    tiles = [_caption(_upscale(x)[0], name) for x, name in ((truth, "truth"), (render, "render"),
                                                            (diff, "|difference| x3 on the objects"))]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    return np.hstack([tiles[0], gap, tiles[1], gap, tiles[2]])


def track_picture(frame: np.ndarray, true_uv: np.ndarray, pred_uv: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The frame with true points (green; filled when visible, rings when hidden), predicted points (red)
    and a line from each true point to its prediction."""
    img, f = _upscale(frame, 512)
    img = np.ascontiguousarray(img)
    for (tu, tv), (pu, pv), vis in zip(true_uv, pred_uv, visible):
        if not (np.isfinite(tu) and np.isfinite(tv)):
            continue
        a = (int(round(tu * f)), int(round(tv * f)))
        if np.isfinite(pu) and np.isfinite(pv):
            b = (int(round(pu * f)), int(round(pv * f)))
            cv2.line(img, a, b, (255, 255, 0), 1, cv2.LINE_AA)
            cv2.circle(img, b, 2, (220, 30, 30), -1, cv2.LINE_AA)
        cv2.circle(img, a, 3, (20, 200, 20), -1 if vis else 1, cv2.LINE_AA)
    return _caption(img, "true points: green (ring = hidden); predicted: red")


def line_plot(series: dict[str, list[float]], title: str, ylabel: str, marks: list[int] = (), size=(640, 300),
              ymin: float | None = None, ymax: float | None = None) -> np.ndarray:
    """A line plot of named series over frame indices (RGB uint8); NaN values leave gaps.

    ``marks``: frame indices shaded grey (the held-out frames)."""
    w, h = size
    left, right, top, bottom = 60, 150, 28, 36
    img = np.full((h, w, 3), 255, np.uint8)
    n = max((len(v) for v in series.values()), default=0)
    vals = np.array([x for v in series.values() for x in v if x is not None and np.isfinite(x)], float)
    lo = ymin if ymin is not None else (float(vals.min()) if vals.size else 0.0)
    hi = ymax if ymax is not None else (float(vals.max()) if vals.size else 1.0)
    if hi - lo < 1e-9:
        hi = lo + 1.0

    def xy(i, y):
        x = left + (w - left - right) * (i / max(n - 1, 1))
        return int(round(x)), int(round(top + (h - top - bottom) * (1 - (y - lo) / (hi - lo))))

    for i in marks:
        x0, _ = xy(i - 0.5, lo)
        x1, _ = xy(i + 0.5, lo)
        cv2.rectangle(img, (max(x0, left), top), (min(x1, w - right), h - bottom), (225, 225, 225), -1)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for q in np.linspace(lo, hi, 5):
        _, y = xy(0, q)
        cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(img, f"{q:.3g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    step = max(1, n // 12)
    for i in range(0, n, step):
        x, _ = xy(i, lo)
        cv2.line(img, (x, h - bottom), (x, h - bottom + 4), (0, 0, 0), 1)
        cv2.putText(img, str(i), (x - 5, h - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, title, (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"frame ({ylabel} on the left)", (left, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                cv2.LINE_AA)
    for s, (name, v) in enumerate(series.items()):
        col = PALETTE[s % len(PALETTE)]
        pts = [xy(i, y) if y is not None and np.isfinite(y) else None for i, y in enumerate(v)]
        for a, b in zip(pts, pts[1:]):
            if a is not None and b is not None:
                cv2.line(img, a, b, col, 2, cv2.LINE_AA)
        for p in pts:
            if p is not None:
                cv2.circle(img, p, 3, col, -1, cv2.LINE_AA)
        ly = top + 12 + 18 * s
        cv2.line(img, (w - right + 10, ly - 4), (w - right + 30, ly - 4), col, 2)
        cv2.putText(img, name, (w - right + 34, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not be written")


def _f(x, digits=3, unit="") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}{unit}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def write_report(ev: GtEvaluation, out_dir: str | Path) -> dict[str, Path]:
    """Write ``gt_eval.json``, ``report.md`` and ``images/*.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    m = ev.metrics
    paths = {"json": out / "gt_eval.json", "report": out / "report.md"}
    paths["json"].write_text(json.dumps(json_safe(m), indent=2) + "\n", encoding="utf-8")

    pics = []
    for name, (truth, render, mask) in ev.pairs.items():
        p = out / "images" / f"{_slug(name)}.png"
        _png(p, side_by_side(truth, render, mask))
        pics.append((name, p))
    if ev.track_frame is not None:
        p = out / "images" / "tracks.png"
        _png(p, track_picture(ev.track_frame, ev.track_true, ev.track_pred, ev.track_visible))
        pics.append((f"tracks at frame {m['tracks_2d']['picture_frame']}", p))
    t3, t2 = m["tracks_3d"], m["tracks_2d"]
    held = m["holdout_frames"]
    psnr = [r["psnr_masked"] for r in m["frames"]["per_frame"]]
    p = out / "images" / "errors_over_time.png"
    plot = np.vstack([
        line_plot({"visible": t3["per_frame"]["visible"], "occluded": t3["per_frame"]["occluded"]},
                  "3D track error, median per frame (grey: held-out frames)", "scene units", held, ymin=0),
        line_plot({"delta_avg": t2["per_frame_delta_avg"]}, "2D track accuracy of visible points", "delta_avg",
                  held, ymin=0, ymax=1),
        line_plot({"PSNR": psnr}, "masked PSNR of the input frames", "dB", held)])
    _png(p, plot)
    pics.append(("errors over time", p))
    paths["images"] = out / "images"
    paths["report"].write_text(_markdown(m, [(n, q.relative_to(out).as_posix()) for n, q in pics]), encoding="utf-8")
    return paths


def _markdown(m: dict, pics: list[tuple[str, str]]) -> str:
    fr = m["frames"]
    splits = fr["splits"]
    ids = [o["id"] for o in m["objects"]]
    lines = [f"# Ground-truth evaluation of `{Path(m['bundle']).name}`", "",
             f"- bundle: `{m['bundle']}`", f"- ground truth: `{m['gt']}` ({m['size'][0]}x{m['size'][1]}, "
             f"{m['frames_count']} frames)",
             f"- run: {m['run']['optimizer']}, preset {m['run']['preset']}, {m['run']['iterations']} iterations, "
             f"cameras: {m['run']['camera_source']}",
             f"- held-out frames: {m['holdout_frames'] or 'none'}",
             "- objects: " + ", ".join(f"{o['id']} {o['name']} ({o['deformation']})" for o in m["objects"]), ""]
    for w in m["warnings"]:
        lines += [f"> **Warning:** {w}", ""]
    lines += ["## Input frames (masked PSNR/SSIM, IoU)", "",
              "| frames | count | PSNR (dB) | SSIM | " + " | ".join(f"IoU {i}" for i in ids) + " |",
              "|---|---|---|---|" + "---|" * len(ids)]
    for name, s in splits.items():
        lines.append(f"| {name} | {s['count']} | {_f(s['psnr_masked'], 2)} | {_f(s['ssim_masked'])} | "
                     + " | ".join(_f(s["iou"][i]) for i in ids) + " |")
    nv = m["novel_views"]
    lines += ["", f"## Novel views ({nv['cameras']} held-out cameras, frames {nv['frames']})", "",
              "| camera | views | PSNR in true masks (dB) | SSIM | " + " | ".join(f"IoU {i}" for i in ids) + " |",
              "|---|---|---|---|" + "---|" * len(ids)]
    for c, s in enumerate(nv["per_camera"]):
        lines.append(f"| {c} | {s['count']} | {_f(s['psnr_masked'], 2)} | {_f(s['ssim_masked'])} | "
                     + " | ".join(_f(s["iou"][i]) for i in ids) + " |")
    s = nv["summary"]
    lines.append(f"| all | {s['count']} | {_f(s['psnr_masked'], 2)} | {_f(s['ssim_masked'])} | "
                 + " | ".join(_f(s["iou"][i]) for i in ids) + " |")
    t3 = m["tracks_3d"]
    lines += ["", "## 3D tracks (scene units; relative = ÷ the object's bounding radius)", "",
              f"Reference frames (where each object's points are associated with its Gaussians): "
              f"{t3['reference_frames']}; association distance there: mean "
              f"{_f(t3['association_distance']['epe_mean'])}.", "",
              "| points | count | mean EPE | median EPE | mean relative |", "|---|---|---|---|---|"]
    for name in ("all", "visible", "occluded", "occluded_by_other"):
        s = t3[name]
        lines.append(f"| {name.replace('_', ' ')} | {s['count']} | {_f(s['epe_mean'])} | {_f(s['epe_median'])} | "
                     f"{_f(s['relative_mean'])} |")
    for name in ("visible", "occluded"):
        s = t3["holdout_frames"][name]
        lines.append(f"| {name}, held-out frames | {s['count']} | {_f(s['epe_mean'])} | {_f(s['epe_median'])} | "
                     f"{_f(s['relative_mean'])} |")
    lines += ["", "| object | mean EPE visible | mean EPE occluded | mean relative, all | centre error | "
                  "centre error, relative |", "|---|---|---|---|---|---|"]
    for oid, s in t3["per_object"].items():
        c = t3["object_centre"][oid]
        lines.append(f"| {oid} | {_f(s['visible']['epe_mean'])} | {_f(s['occluded']['epe_mean'])} | "
                     f"{_f(s['all']['relative_mean'])} | {_f(c['epe_mean'])} | {_f(c['relative_mean'])} |")
    lines += ["", "Centre error: the centre of the object's true surface points against the opacity-weighted "
                  "centre of its Gaussians, mean over frames."]
    t2 = m["tracks_2d"]
    lines += ["", f"## 2D tracks (TAP-Vid accuracy at {t2['track_side']} px on the longer side)", "",
              "| points | count | " + " | ".join(f"< {t} px" for t in THRESHOLDS_PX) + " | delta_avg |",
              "|---|---|" + "---|" * (len(THRESHOLDS_PX) + 1)]
    for name, s in (("visible", t2["visible"]), ("occluded", t2["occluded"]),
                    ("visible, held-out frames", t2["holdout_frames"]["visible"]),
                    ("occluded, held-out frames", t2["holdout_frames"]["occluded"])):
        lines.append(f"| {name} | {s['count']} | " + " | ".join(_f(s[str(t)]) for t in THRESHOLDS_PX)
                     + f" | {_f(s['delta_avg'])} |")
    lines += ["", f"Mean 2D error at the clip's size: visible {_f(t2['epe_px_visible']['epe_mean'], 2)} px, "
                  f"occluded {_f(t2['epe_px_occluded']['epe_mean'], 2)} px."]
    d = m["depth_order"]
    lines += ["", "## Depth order where objects overlap", "",
              "| frames | accuracy | coverage | overlapping pixel pairs |", "|---|---|---|---|",
              f"| all | {_f(d['summary']['accuracy'])} | {_f(d['summary']['coverage'])} | "
              f"{d['summary']['overlapping']} |",
              f"| held-out | {_f(d['holdout_frames']['accuracy'])} | {_f(d['holdout_frames']['coverage'])} | "
              f"{d['holdout_frames']['overlapping']} |", "", "## Pictures", ""]
    for name, rel in pics:
        lines += [f"**{name}**", "", f"![{name}]({rel})", ""]
    return "\n".join(lines)
