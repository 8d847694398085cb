"""scripts/eval_table.py: several runs' evaluations side by side, and which meet the acceptance targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from backend.evaluate import json_safe, summarise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import eval_table  # noqa: E402

IDS = ["001", "002"]


def _frame(t: int, holdout: bool, psnr: float, iou: tuple[float, float]) -> dict:
    per = lambda a, b: dict(zip(IDS, (a, b)))
    return {"frame": t, "holdout": holdout, "psnr_masked": psnr, "ssim_masked": 0.9, "iou": per(*iou),
            "area_ratio": per(1.1, 1.2), "spill": per(0.1, 0.2), "missed": per(0.01, 0.0),
            "psnr_object": per(psnr, psnr), "psnr_interior": psnr + 1, "psnr_edge": psnr - 3,
            "jitter_px": per(0.5, 1.5)}


def _write(path: Path, frames: list[dict], holdout: bool = True) -> Path:
    """An evaluation file as backend.evaluate writes it, summarised by its own code."""
    groups = ({"holdout": [f for f in frames if f["holdout"]], "train": [f for f in frames if not f["holdout"]]}
              if holdout else {"all": frames})
    e = {"summary": summarise(frames, IDS), "splits": {k: summarise(v, IDS) for k, v in groups.items()},
         "per_frame": frames}
    path.write_text(json.dumps(json_safe(e)))
    return path


def test_the_table_says_which_runs_meet_the_targets_and_by_how_much_the_others_fall_short(tmp_path, capsys):
    good = _write(tmp_path / "good_eval.json", [_frame(0, False, 28.0, (0.9, 0.9)), _frame(1, True, 26.5, (0.86, 0.88)),
                                                 _frame(2, True, 27.5, (0.90, 0.90))])
    short = _write(tmp_path / "short_eval.json", [_frame(0, False, 27.0, (0.9, 0.9)), _frame(1, True, 25.0, (0.9, 0.83)),
                                                   _frame(2, True, 26.0, (0.9, 0.84))])
    assert eval_table.main([str(good), str(short), "--out", str(tmp_path / "sweep")]) == 0
    rows = {r["run"]: r for r in json.loads((tmp_path / "sweep.json").read_text())["runs"]}
    assert rows["good"]["meets_targets"] and rows["good"]["psnr"] == 27.0 and rows["good"]["train_psnr"] == 28.0
    assert not rows["short"]["meets_targets"]
    assert rows["short"]["short"] == ["PSNR 25.50", "002 0.835"]
    assert np.isclose(rows["good"]["iou"]["001"], 0.88)
    text = (tmp_path / "sweep.md").read_text()
    assert "| good | 27.00 |" in text and "short: PSNR 25.50, 002 0.835" in text
    assert "1 of 2 runs meet every target." in text
    assert text == capsys.readouterr().out
    # across the two runs: PSNR (27.0 + 25.5) / 2, 002's IoU (0.89 + 0.835) / 2 short of 0.85
    across = json.loads((tmp_path / "sweep.json").read_text())["across_runs"]
    assert across["runs"] == 2 and np.isclose(across["psnr"]["mean"], 26.25)
    assert np.isclose(across["psnr"]["se"], 0.75) and np.isclose(across["psnr"]["min"], 25.5)
    assert np.isclose(across["iou"]["002"]["mean"], 0.8625) and np.isclose(across["iou"]["002"]["min"], 0.835)
    assert across["means_meet_targets"]
    assert "| mean | 26.25 | 0.890 / 0.863 |" in text and "| lowest | 25.50 | 0.880 / 0.835 |" in text
    assert "The means meet every target." in text


def test_a_run_without_withheld_frames_is_refused_for_the_holdout_split_naming_the_file(tmp_path, capsys):
    plain = _write(tmp_path / "plain_eval.json", [_frame(0, False, 28.0, (0.9, 0.9))], holdout=False)
    assert eval_table.main([str(plain)]) == 2
    err = capsys.readouterr().err
    assert "plain_eval.json" in err and "'holdout'" in err and "--split all" in err
    assert eval_table.main([str(plain), "--split", "all"]) == 0
    assert "| plain | 28.00 |" in capsys.readouterr().out


def test_an_undefined_figure_does_not_meet_a_target(tmp_path):
    frames = [_frame(0, False, 28.0, (0.9, 0.9)), _frame(1, True, 27.0, (0.9, float("nan")))]
    path = _write(tmp_path / "nan_eval.json", frames)
    rows = eval_table.summarise([path], "holdout", 26.0, 0.85)
    assert not rows[0]["meets_targets"] and rows[0]["short"] == ["002 -"]


def test_means_below_a_target_say_so_and_a_single_run_has_no_summary(tmp_path):
    a = _write(tmp_path / "a_eval.json", [_frame(0, False, 28.0, (0.9, 0.9)), _frame(1, True, 26.5, (0.9, 0.86))])
    b = _write(tmp_path / "b_eval.json", [_frame(0, False, 28.0, (0.9, 0.9)), _frame(1, True, 26.5, (0.9, 0.82))])
    rows = eval_table.summarise([a, b], "holdout", 26.0, 0.85)
    across = eval_table.across_runs(rows, 26.0, 0.85)
    assert np.isclose(across["iou"]["002"]["mean"], 0.84) and not across["means_meet_targets"]
    assert "The means do not meet every target." in eval_table.markdown(rows, "holdout", 26.0, 0.85)
    assert "across the" not in eval_table.markdown(rows[:1], "holdout", 26.0, 0.85)
    nan = _write(tmp_path / "nan_eval.json", [_frame(0, False, 28.0, (0.9, 0.9)), _frame(1, True, 27.0, (0.9, float("nan")))])
    undefined = eval_table.across_runs(eval_table.summarise([a, nan], "holdout", 26.0, 0.85), 26.0, 0.85)
    assert undefined["iou"]["002"]["mean"] is None and not undefined["means_meet_targets"]
