"""scripts/pack_bench.py: benchmark clips copied at the fit's working size read back as the loader reads the originals."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import pack_bench  # noqa: E402

from backend.io.clip import load_clip  # noqa: E402


def _clip(root: Path, w: int, h: int, frames: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations" / "001").mkdir(parents=True)
    (root / "MegaSAM_Outputs").mkdir()
    (root / "MegaSAM_Outputs" / "note.txt").write_text("kept as it is")
    yy, xx = np.mgrid[:h, :w]
    for t in range(frames):
        img = (rng.random((h, w, 3)) * 8 + np.stack([xx, yy, xx + yy], -1) % 190).astype(np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / f"{t:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
        # a thin, slanted object: its resized mask depends on the exact resampling
        m = (np.abs((xx - 40 - 7 * t) - 0.37 * (yy - h / 2)) < 2.6) & (np.abs(yy - h / 2) < h / 3)
        cv2.imwrite(str(root / "Annotations" / "001" / f"{t:05d}.png"), m.astype(np.uint8) * 255)
    return root


def test_packed_clip_reads_back_with_the_same_masks_and_nearly_the_same_frames(tmp_path):
    src = _clip(tmp_path / "src" / "wide", 854, 480)
    pack_bench.main([str(tmp_path / "dest"), str(src), "--max_side", "360"])
    dest = tmp_path / "dest" / "wide"
    a = load_clip(src / "JPEGImages", src / "Annotations", max_side=360)
    b = load_clip(dest / "JPEGImages", dest / "Annotations", max_side=360)
    assert b.frames.shape == a.frames.shape == (3, 202, 360, 3)
    assert cv2.imread(str(dest / "JPEGImages" / "00000.jpg")).shape[:2] == (202, 360)  # stored at the working size
    assert np.array_equal(a.masks, b.masks) and a.masks.any()
    assert np.abs(a.frames.astype(int) - b.frames).mean() < 4  # one JPEG re-encoding
    assert (dest / "MegaSAM_Outputs" / "note.txt").read_text() == "kept as it is"


def test_a_clip_already_small_enough_is_copied_unchanged(tmp_path):
    src = _clip(tmp_path / "src" / "small", 64, 48, frames=2)
    pack_bench.main([str(tmp_path / "dest"), str(src), "--max_side", "360"])
    for f in sorted(src.rglob("*")):
        if f.is_file():
            assert (tmp_path / "dest" / "small" / f.relative_to(src)).read_bytes() == f.read_bytes()


def test_refuses_to_write_over_an_existing_clip_or_to_read_a_non_clip(tmp_path, capsys):
    src = _clip(tmp_path / "src" / "wide", 200, 100, frames=1)
    (tmp_path / "dest" / "wide").mkdir(parents=True)
    (tmp_path / "dest" / "wide" / "mine.txt").write_text("the user's")
    with pytest.raises(SystemExit):
        pack_bench.main([str(tmp_path / "dest"), str(src)])
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "dest" / "wide" / "mine.txt").read_text() == "the user's"
    with pytest.raises(SystemExit):
        pack_bench.main([str(tmp_path / "dest2"), str(tmp_path / "src")])
    assert "not a clip" in capsys.readouterr().err
    assert not (tmp_path / "dest2").exists()
