"""One table of a quality benchmark over many clips (scripts/gpu_benchmark.sh): per clip and mean, the
held-out figures, the training PSNR and, on ground-truth clips, the novel views and 3D tracks, with the
targets of #20 checked on every clip (not only on the mean).

    python scripts/benchmark_table.py RESULTS_DIR [--out RESULTS_DIR/benchmark]   # .md and .json

RESULTS_DIR holds what gpu_benchmark.sh leaves there, per clip NAME:
    NAME_eval.json            python -m backend.evaluate --out (every clip)
    NAME_gt_eval/gt_eval.json python -m backend.evaluate_gt (ground-truth clips only)
    NAME_events.jsonl         the run's progress events (its stage durations give the fit time)
    NAME_status.txt           one word: "ok", or why the clip has no result ("fit-failed", "timeout", ...)

A clip whose status is not ``ok`` stays in the table, marked, so that a failure is never a missing row.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eval_table import _f, load_eval  # the same reading and number format as the per-run table

# #20's acceptance, on every clip: held-out masked PSNR, each object's held-out IoU and area ratio; on a
# ground-truth clip the novel views' PSNR inside the true masks, and the 3D track error of visible points
# at most half of TRACK_ERROR_BEFORE, the figure measured before #20 (docs/results.md, learned scale, 0.270)
MIN_PSNR = 24.0
MIN_IOU = 0.85
MAX_AREA_RATIO = 1.10
MIN_NOVEL_PSNR = 20.0
TRACK_ERROR_BEFORE = 0.270


@dataclass
class ClipRow:
    """One clip's figures (None where undefined or not measured) and the targets it misses."""

    clip: str
    status: str
    objects: int = 0
    holdout_frames: int = 0
    psnr: float | None = None
    # the held-out PSNR on the union eroded by 2 px and on that 2 px band inside its border (backend.evaluate):
    # where a change of the masked PSNR comes from (a silhouette that spills covers the band for free)
    psnr_interior: float | None = None
    psnr_edge: float | None = None
    ssim: float | None = None
    iou_min: float | None = None
    iou: dict[str, float | None] = field(default_factory=dict)
    area_ratio_max: float | None = None
    train_psnr: float | None = None
    novel_psnr: float | None = None
    track_error: float | None = None
    fit_s: float | None = None
    short: list[str] = field(default_factory=list)

    @property
    def meets(self) -> bool:
        return self.status == "ok" and not self.short


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def fit_seconds(events: Path) -> float | None:
    """The sum of the run's stage durations, from its progress events; None without a finished stage."""
    if not events.is_file():
        return None
    total, seen = 0.0, False
    for line in events.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(e, dict) and e.get("type") == "stage" and e.get("status") == "end" and "duration_s" in e:
            total, seen = total + float(e["duration_s"]), True
    return total if seen else None


def clip_row(results: Path, clip: str, track_error_before: float = TRACK_ERROR_BEFORE) -> ClipRow:
    """Read one clip's files from ``results`` and check its targets."""
    status_file = results / f"{clip}_status.txt"
    status = status_file.read_text().strip() if status_file.is_file() else "ok"
    row = ClipRow(clip, status or "ok", fit_s=fit_seconds(results / f"{clip}_events.jsonl"))
    ev_path = results / f"{clip}_eval.json"
    if row.status != "ok" or not ev_path.is_file():
        row.status = row.status if row.status != "ok" else "no evaluation"
        return row
    ev = load_eval(ev_path)
    splits = ev.get("splits") or {}
    if "holdout" not in splits:
        raise ValueError(f"{ev_path}: no held-out split; run the benchmark with --holdout")
    held = splits["holdout"]
    row.holdout_frames = int(held.get("count", 0) or 0)
    row.psnr, row.ssim = _num(held.get("psnr_masked")), _num(held.get("ssim_masked"))
    row.psnr_interior, row.psnr_edge = _num(held.get("psnr_interior")), _num(held.get("psnr_edge"))
    row.iou = {k: _num(v) for k, v in (held.get("iou") or {}).items()}
    row.objects = len(row.iou)
    ious = [v for v in row.iou.values() if v is not None]
    row.iou_min = min(ious) if len(ious) == len(row.iou) and ious else None
    ratios = [_num(v) for v in (held.get("area_ratio") or {}).values()]
    row.area_ratio_max = max(ratios) if ratios and None not in ratios else None
    row.train_psnr = _num((splits.get("train") or {}).get("psnr_masked"))
    if row.psnr is None or row.psnr < MIN_PSNR:
        row.short.append(f"PSNR {_f(row.psnr, 2)}")
    row.short += [f"IoU {k} {_f(v, 3)}" for k, v in row.iou.items() if v is None or v < MIN_IOU]
    if row.area_ratio_max is None or row.area_ratio_max > MAX_AREA_RATIO:
        row.short.append(f"area ratio {_f(row.area_ratio_max, 2)}")
    gt_path = results / f"{clip}_gt_eval" / "gt_eval.json"
    if gt_path.is_file():
        gt = load_eval(gt_path)
        row.novel_psnr = _num(gt["novel_views"]["summary"]["psnr_masked"])
        row.track_error = _num(gt["tracks_3d"]["visible"]["epe_mean"])
        if row.novel_psnr is None or row.novel_psnr < MIN_NOVEL_PSNR:
            row.short.append(f"novel PSNR {_f(row.novel_psnr, 2)}")
        if row.track_error is None or row.track_error > track_error_before / 2:
            row.short.append(f"3D track error {_f(row.track_error, 3)}")
    return row


def clips_in(results: Path) -> list[str]:
    """Every clip with a status or an evaluation file in ``results``, sorted."""
    names = {p.name[: -len("_eval.json")] for p in results.glob("*_eval.json")}
    names |= {p.name[: -len("_status.txt")] for p in results.glob("*_status.txt")}
    return sorted(names)


def mean_row(rows: list[ClipRow]) -> dict:
    """The mean of each figure over the clips that have it, and how many clips meet every target."""
    def mean(key: str) -> float | None:
        vals = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return statistics.fmean(vals) if vals else None
    keys = ("psnr", "psnr_interior", "psnr_edge", "ssim", "iou_min", "area_ratio_max", "train_psnr", "novel_psnr",
            "track_error", "fit_s")
    return {**{k: mean(k) for k in keys}, "clips": len(rows), "clips_meeting_targets": sum(r.meets for r in rows)}


def markdown(rows: list[ClipRow]) -> str:
    lines = [f"Targets on every clip: held-out masked PSNR ≥ {MIN_PSNR:g} dB, every object's IoU ≥ {MIN_IOU:g}, "
             f"area ratio ≤ {MAX_AREA_RATIO:g}; on ground-truth clips novel-view PSNR ≥ {MIN_NOVEL_PSNR:g} dB and "
             f"3D track error ≤ {TRACK_ERROR_BEFORE / 2:g} (half of {TRACK_ERROR_BEFORE:g}).", "",
             "| clip | objects | held-out PSNR | interior / edge | SSIM | IoU (lowest; per object) | "
             "area ratio (highest) | training PSNR | novel-view PSNR | 3D track error | fit s | targets |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.clip} | | | | | | | | | | {_f(r.fit_s, 0)} | no result: {r.status} |")
            continue
        per = " / ".join(_f(v, 3) for v in r.iou.values())
        iou = f"{_f(r.iou_min, 3)}" + (f" ({per})" if len(r.iou) > 1 else "")
        verdict = "met" if r.meets else "short: " + ", ".join(r.short)
        lines.append(f"| {r.clip} | {r.objects} | {_f(r.psnr, 2)} | {_f(r.psnr_interior, 2)} / {_f(r.psnr_edge, 2)} | "
                     f"{_f(r.ssim, 3)} | {iou} | "
                     f"{_f(r.area_ratio_max, 2)} | {_f(r.train_psnr, 2)} | {_f(r.novel_psnr, 2)} | "
                     f"{_f(r.track_error, 3)} | {_f(r.fit_s, 0)} | {verdict} |")
    m = mean_row(rows)
    lines.append(f"| **mean** | | {_f(m['psnr'], 2)} | {_f(m['psnr_interior'], 2)} / {_f(m['psnr_edge'], 2)} | "
                 f"{_f(m['ssim'], 3)} | {_f(m['iou_min'], 3)} | "
                 f"{_f(m['area_ratio_max'], 2)} | {_f(m['train_psnr'], 2)} | {_f(m['novel_psnr'], 2)} | "
                 f"{_f(m['track_error'], 3)} | {_f(m['fit_s'], 0)} | {m['clips_meeting_targets']} of {m['clips']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="the folder gpu_benchmark.sh wrote its results to")
    p.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json (default RESULTS/benchmark)")
    a = p.parse_args(argv)
    if not a.results.is_dir():
        print(f"error: {a.results}: no such folder", file=sys.stderr)
        return 2
    clips = clips_in(a.results)
    if not clips:
        print(f"error: {a.results}: no clip results (NAME_eval.json or NAME_status.txt)", file=sys.stderr)
        return 2
    try:
        rows = [clip_row(a.results, c) for c in clips]
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown(rows)
    print(text, end="")
    out = a.out or a.results / "benchmark"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"rows": [asdict(r) | {"meets_targets": r.meets} for r in rows],
                                                    "mean": mean_row(rows)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
