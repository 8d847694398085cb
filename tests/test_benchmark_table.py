"""scripts/benchmark_table.py: the per-clip table of the quality benchmark and its targets (#20)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import benchmark_table as bt  # noqa: E402


def _split(psnr, ious, ratios, count=5):
    return {"count": count, "psnr_masked": psnr, "ssim_masked": 0.9, "iou": ious, "area_ratio": ratios,
            "psnr_interior": psnr + 2.0, "psnr_edge": psnr - 5.0}


def _write_eval(folder: Path, name: str, psnr: float, ious: dict, ratios: dict, train: float = 28.0):
    ev = {"summary": {}, "splits": {"holdout": _split(psnr, ious, ratios),
                                    "train": _split(train, ious, ratios, count=15)}}
    (folder / f"{name}_eval.json").write_text(json.dumps(ev))
    (folder / f"{name}_status.txt").write_text("ok\n")
    events = [{"type": "stage", "stage": "stage1", "status": "end", "duration_s": 10.0},
              {"type": "stage", "stage": "stage2", "status": "end", "duration_s": 32.5}]
    (folder / f"{name}_events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\nnot json\n")


def test_targets_are_checked_per_clip(tmp_path):
    _write_eval(tmp_path, "good", 25.0, {"001": 0.9}, {"001": 1.05})
    _write_eval(tmp_path, "thin", 23.0, {"001": 0.9, "002": 0.7}, {"001": 1.02, "002": 1.6})
    (tmp_path / "stuck_status.txt").write_text("timeout after 540 s (RESUME=1 continues)\n")
    rows = {r.clip: r for r in (bt.clip_row(tmp_path, c) for c in bt.clips_in(tmp_path))}
    assert set(rows) == {"good", "thin", "stuck"}
    assert rows["good"].meets and rows["good"].fit_s == pytest.approx(42.5)
    thin = rows["thin"]
    assert not thin.meets
    assert thin.iou_min == pytest.approx(0.7) and thin.area_ratio_max == pytest.approx(1.6)
    assert thin.short == ["PSNR 23.00", "IoU 002 0.700", "area ratio 1.60"]
    assert rows["stuck"].status.startswith("timeout") and not rows["stuck"].meets
    m = bt.mean_row(list(rows.values()))
    assert m["psnr"] == pytest.approx(24.0)  # the stuck clip has no PSNR and is left out of the mean
    assert m["clips_meeting_targets"] == 1 and m["clips"] == 3


def test_ground_truth_targets(tmp_path):
    _write_eval(tmp_path, "gt", 25.0, {"001": 0.9}, {"001": 1.0})
    (tmp_path / "gt_gt_eval").mkdir()
    gt = {"novel_views": {"summary": {"psnr_masked": 21.0}}, "tracks_3d": {"visible": {"epe_mean": 0.2}}}
    (tmp_path / "gt_gt_eval" / "gt_eval.json").write_text(json.dumps(gt))
    row = bt.clip_row(tmp_path, "gt")
    assert row.novel_psnr == 21.0 and row.track_error == 0.2
    assert row.short == ["3D track error 0.200"]  # above half of the figure before (0.135)
    assert bt.clip_row(tmp_path, "gt", track_error_before=0.5).meets


def test_main_writes_markdown_and_json(tmp_path, capsys):
    _write_eval(tmp_path, "a", 25.0, {"001": 0.9}, {"001": 1.05})
    _write_eval(tmp_path, "b", 20.0, {"001": None}, {"001": None})
    assert bt.main([str(tmp_path)]) == 0
    md = (tmp_path / "benchmark.md").read_text()
    assert "| a | 1 | 25.00 | 27.00 / 20.00 |" in md and "| 24.50 / 17.50 |" in md  # interior / edge, and their mean
    assert "short: PSNR 20.00, IoU 001 -, area ratio -" in md
    assert "1 of 2" in md
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert [r["meets_targets"] for r in data["rows"]] == [True, False]
    assert capsys.readouterr().out == md


def test_refusals(tmp_path, capsys):
    assert bt.main([str(tmp_path / "missing")]) == 2
    assert bt.main([str(tmp_path)]) == 2
    (tmp_path / "x_eval.json").write_text(json.dumps({"splits": {"train": {}}}))
    assert bt.main([str(tmp_path)]) == 2
    assert "no held-out split" in capsys.readouterr().err
