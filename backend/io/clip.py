"""Reads and validates a clip and its per-object masks into one typed value, ``Clip``.

Input layout (the seed's): a frames folder (PNG/JPG whose names end in a frame number, sorted by it,
gaps allowed) or a video file, and a masks folder with one sub-folder per object (``001``, ``002``…;
``000`` is the optional background mask) holding binary PNGs named like the frames. Every problem is
reported as an InputError naming the file and the fix, before any optimisation starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
_NUMBERED = re.compile(r"(\d+)$")
_OBJECT_DIR = re.compile(r"^\d{3}$")


@dataclass
class Clip:
    """Frames and masks at working resolution, plus what is needed to map back to the original."""

    frames: np.ndarray  # (T, h, w, 3) uint8 RGB
    masks: np.ndarray  # (K, T, h, w) bool, visible (modal) pixels of each object
    background: np.ndarray | None  # (T, h, w) bool from folder 000, if given
    object_ids: list[str]  # "001", ...
    frame_names: list[str]
    frame_numbers: list[int]
    width: int  # original size
    height: int
    fps: float
    source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[0])

    @property
    def work_size(self) -> tuple[int, int]:
        """(width, height) of the arrays, after any downscaling."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def _frame_number(path: Path) -> int | None:
    m = _NUMBERED.search(path.stem)
    return int(m.group(1)) if m else None


def _numbered_images(folder: Path, what: str) -> list[tuple[int, Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"{folder}: no PNG or JPG {what} found",
                         "put the images directly in this folder (names like 00000.png)")
    out, seen = [], {}
    for p in files:
        n = _frame_number(p)
        if n is None:
            raise InputError(f"{p}: the file name does not end in a frame number",
                             "rename the images so each name ends in its frame number, e.g. 00042.png")
        if n in seen:
            raise InputError(f"{p}: frame number {n} also used by {seen[n].name}",
                             "keep one image per frame number")
        seen[n] = p
        out.append((n, p))
    out.sort()
    return out


def _read_image(path: Path, flags: int) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    img = cv2.imdecode(data, flags) if data is not None and data.size else None
    if img is None:
        raise InputError(f"{path}: cannot be read as an image (corrupt or not an image)",
                         "re-export the file as PNG or JPG")
    return img


def _to_binary(mask: np.ndarray, path: Path, notes: set[str]) -> np.ndarray:
    """Any mask encoding -> bool. RGB takes the brightest channel, 16-bit and soft masks are scaled."""
    if mask.ndim == 3:
        if mask.shape[2] == 4 and mask[..., :3].max() == mask[..., :3].min():
            mask = mask[..., 3]  # transparent PNG whose alpha carries the mask
        else:
            mask = mask[..., :3].max(axis=2)
        notes.add("RGB masks were converted to single-channel (brightest channel)")
    if mask.dtype == np.uint16:
        m = mask.astype(np.float32) / 65535.0
        notes.add("16-bit masks were rescaled to [0, 1]")
    elif mask.dtype == np.uint8:
        m = mask.astype(np.float32) / 255.0
    elif mask.dtype == bool:
        return mask
    else:
        raise InputError(f"{path}: unsupported mask type {mask.dtype}", "save masks as 8-bit PNG (0/255)")
    soft = np.mean((m > 0.02) & (m < 0.98))
    if soft > 0.001:
        notes.add("soft (non-binary) masks were binarised at 50%")
    return m >= 0.5


def _resize_factor(w: int, h: int, max_side: int) -> float:
    return min(1.0, max_side / max(w, h))


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The (w, h) a ``width`` × ``height`` clip is fitted at: its longer side at most ``max_side``."""
    s = _resize_factor(width, height, max_side)
    return max(1, round(width * s)), max(1, round(height * s))


def _load_frames_folder(folder: Path) -> tuple[list[str], list[int], list[Path]]:
    entries = _numbered_images(folder, "frames")
    return [p.name for _, p in entries], [n for n, _ in entries], [p for _, p in entries]


def _read_video(path: Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: cannot be opened as a video", "convert it to mp4 (H.264) or an image sequence")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = []
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
            if len(frames) > max_frames:
                raise InputError(f"{path}: more than {max_frames} frames",
                                 "trim the clip to the shot you need")
    finally:
        cap.release()
    if not frames:
        raise InputError(f"{path}: no frames could be decoded", "convert it to mp4 (H.264) or an image sequence")
    return frames, fps


def load_clip(data_dir: str | os.PathLike, mask_dir: str | os.PathLike, *, max_side: int = 720,
              fps: float | None = None, default_fps: float = 24.0, min_frames: int = 2,
              max_frames: int = 2000) -> Clip:
    """Read and validate frames and masks; downscale so the longer side is at most ``max_side``."""
    data_dir, mask_dir = Path(data_dir), Path(mask_dir)
    if not data_dir.exists():
        raise InputError(f"{data_dir}: the clip does not exist", "pass --data_dir a frames folder or a video file")
    if not mask_dir.is_dir():
        raise InputError(f"{mask_dir}: the masks folder does not exist",
                         "pass --mask_dir a folder with one sub-folder per object (001, 002, ...)")

    # --- masks folder structure (cheap checks first)
    subdirs = sorted(p for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    bad = [p.name for p in subdirs if not _OBJECT_DIR.match(p.name)]
    if bad:
        raise InputError(f"{mask_dir}: sub-folder(s) {', '.join(bad)} are not object ids",
                         "name mask folders with three digits: 000 (background, optional), 001, 002, ...")
    object_dirs = [p for p in subdirs if p.name != "000"]
    if not object_dirs:
        raise InputError(f"{mask_dir}: no object mask folders (001, 002, ...)",
                         "add one sub-folder of masks per object to reconstruct")
    bg_dir = mask_dir / "000" if (mask_dir / "000").is_dir() else None

    # --- frames
    is_video = data_dir.is_file()
    if is_video:
        if data_dir.suffix.lower() not in VIDEO_EXTS:
            raise InputError(f"{data_dir}: not a frames folder or a supported video ({', '.join(VIDEO_EXTS)})",
                             "pass a folder of numbered PNG/JPG frames or an mp4/mov file")
        raw_frames, vfps = _read_video(data_dir, max_frames)
        frame_numbers = list(range(len(raw_frames)))
        frame_names = [f"{i:05d}" for i in frame_numbers]
        fps = fps or (vfps if 0 < vfps <= 1000 else default_fps)
        frame_paths = None
    else:
        frame_names, frame_numbers, frame_paths = _load_frames_folder(data_dir)
        raw_frames = None
        fps = fps or default_fps
    T = len(frame_names)
    if T < min_frames:
        raise InputError(f"{data_dir}: {T} frame(s); at least {min_frames} are needed",
                         "use a longer clip")
    if T > max_frames:
        raise InputError(f"{data_dir}: {T} frames; at most {max_frames} are supported",
                         "trim the clip to the shot you need")

    # --- mask files per object, matched to frames before reading any pixels
    def mask_files(folder: Path) -> list[Path]:
        entries = _numbered_images(folder, "masks")
        if is_video:
            if len(entries) != T:
                raise InputError(f"{folder}: {len(entries)} masks for a video of {T} frames",
                                 "provide one mask per video frame, numbered in frame order")
            return [p for _, p in entries]
        by_number = dict(entries)
        missing = [frame_names[i] for i, n in enumerate(frame_numbers) if n not in by_number]
        if missing:
            raise InputError(f"{folder}: no mask for frame(s) {', '.join(missing[:5])}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
                             "masks must be named like the frames (same frame numbers); "
                             "write an all-black mask where the object is not visible")
        extra = sorted(set(by_number) - set(frame_numbers))
        if extra:
            raise InputError(f"{folder}: masks for frame number(s) {extra[:5]} that have no frame",
                             "remove them, or add the missing frames")
        return [by_number[n] for n in frame_numbers]

    object_files = [mask_files(d) for d in object_dirs]
    bg_files = mask_files(bg_dir) if bg_dir is not None else None

    # --- pixels
    first = raw_frames[0] if is_video else _read_image(frame_paths[0], cv2.IMREAD_COLOR)
    H, W = first.shape[:2]
    s = _resize_factor(W, H, max_side)
    w, h = working_size(W, H, max_side)
    warnings: list[str] = []
    if s < 1.0:
        warnings.append(f"frames of {W}x{H} are fitted at {w}x{h} (longer side {max_side}); "
                        "results are mapped back to the original size")

    def fit(img: np.ndarray) -> np.ndarray:
        return img if s == 1.0 else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)

    frames = np.empty((T, h, w, 3), np.uint8)
    for i in range(T):
        if is_video:
            img = raw_frames[i]
            where = f"{data_dir} frame {i}"
        else:
            bgr = first if i == 0 else _read_image(frame_paths[i], cv2.IMREAD_COLOR)
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            where = str(frame_paths[i])
        if img.shape[:2] != (H, W):
            raise InputError(f"{where}: size {img.shape[1]}x{img.shape[0]} differs from the first frame's {W}x{H}",
                             "all frames must have the same size")
        frames[i] = fit(img)

    notes: set[str] = set()

    def read_masks(files: list[Path]) -> np.ndarray:
        out = np.empty((T, h, w), bool)
        for i, p in enumerate(files):
            m = _to_binary(_read_image(p, cv2.IMREAD_UNCHANGED), p, notes)
            if m.shape != (H, W):
                raise InputError(f"{p}: mask size {m.shape[1]}x{m.shape[0]} differs from the frames' {W}x{H}",
                                 "masks must have exactly the size of the frames")
            out[i] = m if s == 1.0 else cv2.resize(m.astype(np.float32), (w, h),
                                                   interpolation=cv2.INTER_AREA) >= 0.5
        return out

    masks = np.stack([read_masks(f) for f in object_files])
    for d, m in zip(object_dirs, masks):
        if not m.any():
            raise InputError(f"{d}: the object's mask is empty in every frame",
                             "remove this folder or fix its masks")
    background = read_masks(bg_files) if bg_files is not None else None
    warnings.extend(sorted(notes))
    return Clip(frames=frames, masks=masks, background=background,
                object_ids=[d.name for d in object_dirs], frame_names=frame_names,
                frame_numbers=frame_numbers, width=W, height=H, fps=float(fps),
                source=str(data_dir.resolve()), warnings=warnings)
