"""Copy benchmark clips at the fit's working size, so that more of them fit in one GPU call's carry.

The GPU machine takes at most 64 MiB with each call, and the dev set's 854×480 JPEGs are about 75 MB.
The fit never sees more than ``InputConfig.max_side`` pixels on the longer side: each frame is resized
here exactly as ``backend/io/clip.py`` resizes it (INTER_AREA; masks as floats, then ≥ 0.5), so the fit
reads the same masks and frames that differ from the originals only by one JPEG re-encoding
(``--quality``). Other files of a clip (MegaSAM outputs, ground truth) are copied as they are; a clip
already at or below the size is copied unchanged. Nothing is written over: the destination clip folder
must not exist.

Usage: python scripts/pack_bench.py DEST CLIP [CLIP ...] [--max_side 720] [--quality 95]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.config import InputConfig  # noqa: E402
from backend.io.clip import _to_binary, working_size  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def pack_frame(src: Path, dst: Path, size: tuple[int, int], quality: int) -> None:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"error: {src}: not a readable image")
    if img.shape[1::-1] != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dst.with_suffix(".jpg")), img, [cv2.IMWRITE_JPEG_QUALITY, quality])


def pack_mask(src: Path, dst: Path, size: tuple[int, int]) -> None:
    raw = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise SystemExit(f"error: {src}: not a readable mask")
    m = _to_binary(raw, src, set())  # the loader's own reading of a mask file
    if m.shape[::-1] != size:
        m = cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
    cv2.imwrite(str(dst.with_suffix(".png")), m.astype(np.uint8) * 255)


def pack_clip(src: Path, dest: Path, max_side: int, quality: int) -> int:
    """Copy one clip folder; returns the bytes written."""
    frames = sorted(p for p in (src / "JPEGImages").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not frames:
        raise SystemExit(f"error: {src}/JPEGImages: no frames")
    h, w = cv2.imread(str(frames[0])).shape[:2]
    size = working_size(w, h, max_side)
    if size == (w, h):
        shutil.copytree(src, dest)
    else:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("JPEGImages", "Annotations"))
        (dest / "JPEGImages").mkdir()
        for f in frames:
            pack_frame(f, dest / "JPEGImages" / f.name, size, quality)
        for obj in sorted(p for p in (src / "Annotations").iterdir() if p.is_dir()):
            (dest / "Annotations" / obj.name).mkdir(parents=True)
            for m in sorted(p for p in obj.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                pack_mask(m, dest / "Annotations" / obj.name / m.name, size)
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", type=Path)
    p.add_argument("clips", type=Path, nargs="+")
    p.add_argument("--max_side", type=int, default=InputConfig.max_side)
    p.add_argument("--quality", type=int, default=95)
    a = p.parse_args(argv)
    for c in a.clips:
        if not (c / "JPEGImages").is_dir() or not (c / "Annotations").is_dir():
            p.error(f"{c}: not a clip (needs JPEGImages/ and Annotations/)")
        if (a.dest / c.name).exists():
            p.error(f"{a.dest / c.name} exists; remove it or choose another DEST")
    a.dest.mkdir(parents=True, exist_ok=True)
    for c in a.clips:
        n = pack_clip(c, a.dest / c.name, a.max_side, a.quality)
        print(f"{c.name}: {n / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
