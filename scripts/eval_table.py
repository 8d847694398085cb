"""Side-by-side table of several runs' evaluations (``python -m backend.evaluate --out``), and whether
each meets the acceptance targets of the crossing clip (#3: every object's IoU and the masked PSNR on the
withheld frames).

    python scripts/eval_table.py runs/a_eval.json runs/b_eval.json --out sweep   # sweep.md and sweep.json

A run is named after its file (``NAME_eval.json`` → NAME). Figures come from the split ``--split``
(``holdout``, the default, needs runs made with ``--holdout``; ``train``; or ``all``), with the training
frames' PSNR beside them, so that a table in docs/results.md is copied, not transcribed.

With several runs (seeds of one setting) the table ends with the mean of each acceptance figure, its
standard error and its lowest value across the runs: one run of a thin object's IoU varies by a few
hundredths between seeds, so whether a setting meets a target is a statement about that mean.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

SPLITS = ("holdout", "train", "all")


def run_name(path: Path) -> str:
    name = path.stem
    return name[: -len("_eval")] if name.endswith("_eval") else name


def load_eval(path: Path) -> dict:
    """An evaluation file's contents, with a clear error for a file that is not one."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable evaluation JSON ({err})") from err


def split_of(e: dict, path: Path, split: str) -> dict:
    """The summary of ``split`` in evaluation ``e`` (read from ``path``), with a clear error if it lacks it."""
    if split == "all":
        if "summary" not in e:
            raise ValueError(f"{path}: no 'summary'; is it the output of python -m backend.evaluate --out?")
        return e["summary"]
    splits = e.get("splits") or {}
    if split not in splits:
        raise ValueError(f"{path}: no '{split}' split (the run withheld no frames?); "
                         "use --split all, or evaluate a run made with --holdout")
    return splits[split]


def summarise(paths: list[Path], split: str, min_psnr: float, min_iou: float) -> list[dict]:
    """One row per run: its figures on ``split`` and whether they meet the targets."""
    rows = []
    for path in paths:
        e = load_eval(path)
        s = split_of(e, path, split)
        train = (e.get("splits") or {}).get("train", {}).get("psnr_masked")
        # an undefined figure (null: e.g. an object with no mask in these frames) cannot meet a target
        short = [] if _at_least(s["psnr_masked"], min_psnr) else [f"PSNR {_f(s['psnr_masked'], 2)}"]
        short += [f"{k} {_f(v, 3)}" for k, v in s["iou"].items() if not _at_least(v, min_iou)]
        rows.append({"run": run_name(path), "psnr": s["psnr_masked"], "ssim": s["ssim_masked"], "iou": s["iou"],
                     "area_ratio": s["area_ratio"], "missed": s.get("missed"),
                     "psnr_interior": s.get("psnr_interior"), "psnr_edge": s.get("psnr_edge"),
                     "train_psnr": train, "meets_targets": not short, "short": short})
    return rows


def across_runs(rows: list[dict], min_psnr: float, min_iou: float) -> dict:
    """Mean, standard error of the mean and lowest value over the runs of the masked PSNR and each
    object's IoU, and whether the means meet the targets. A figure undefined in any run is undefined here."""

    def stats(values: list[float | None]) -> dict:
        if any(v is None for v in values):
            return {"mean": None, "se": None, "min": None}
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
        return {"mean": statistics.fmean(values), "se": se, "min": min(values)}

    out = {"runs": len(rows), "psnr": stats([r["psnr"] for r in rows]),
           "iou": {k: stats([r["iou"].get(k) for r in rows]) for k in rows[0]["iou"]}}
    out["means_meet_targets"] = (_at_least(out["psnr"]["mean"], min_psnr)
                                 and all(_at_least(v["mean"], min_iou) for v in out["iou"].values()))
    return out


def _at_least(value: float | None, target: float) -> bool:
    return value is not None and value >= target


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _per_object(d: dict | None, digits: int) -> str:
    return " / ".join(_f(v, digits) for v in d.values()) if d else "-"


def markdown(rows: list[dict], split: str, min_psnr: float, min_iou: float) -> str:
    objects = " / ".join(rows[0]["iou"]) if rows else ""
    lines = [f"Frames: {split}. Targets: masked PSNR ≥ {min_psnr:g} dB, every object's IoU ≥ {min_iou:g}.", "",
             f"| run | masked PSNR | SSIM | IoU {objects} | area ratio | missed | PSNR interior / edge | "
             "training PSNR | targets |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        edge = f"{_f(r['psnr_interior'], 2)} / {_f(r['psnr_edge'], 2)}"
        verdict = "met" if r["meets_targets"] else "short: " + ", ".join(r["short"])
        lines.append(f"| {r['run']} | {_f(r['psnr'], 2)} | {_f(r['ssim'], 3)} | {_per_object(r['iou'], 3)} | "
                     f"{_per_object(r['area_ratio'], 2)} | {_per_object(r['missed'], 3)} | {edge} | "
                     f"{_f(r['train_psnr'], 2)} | {verdict} |")
    met = sum(r["meets_targets"] for r in rows)
    lines += ["", f"{met} of {len(rows)} runs meet every target."]
    if len(rows) > 1:
        a = across_runs(rows, min_psnr, min_iou)
        cells = [a["psnr"], *a["iou"].values()]
        digits = [2] + [3] * len(a["iou"])
        lines += ["", f"| across the {len(rows)} runs | masked PSNR | IoU {objects} |", "|---|---|---|"]
        for what, key in (("mean", "mean"), ("standard error of the mean", "se"), ("lowest", "min")):
            vals = [_f(c[key], d) for c, d in zip(cells, digits)]
            lines.append(f"| {what} | {vals[0]} | {' / '.join(vals[1:])} |")
        verdict = "meet" if a["means_meet_targets"] else "do not meet"
        lines += ["", f"The means {verdict} every target."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("evals", nargs="+", type=Path, help="evaluation JSON files (python -m backend.evaluate --out)")
    p.add_argument("--split", default="holdout", choices=SPLITS)
    p.add_argument("--min_psnr", type=float, default=26.0)
    p.add_argument("--min_iou", type=float, default=0.85)
    p.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json as well as printing")
    a = p.parse_args(argv)
    try:
        rows = summarise(a.evals, a.split, a.min_psnr, a.min_iou)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown(rows, a.split, a.min_psnr, a.min_iou)
    print(text, end="")
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(text)
        summary = {"split": a.split, "min_psnr": a.min_psnr, "min_iou": a.min_iou, "runs": rows}
        if len(rows) > 1:
            summary["across_runs"] = across_runs(rows, a.min_psnr, a.min_iou)
        a.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
