"""Writing rasterised masks into a mask folder without losing anything the user had there (bpy-free).

The extension rasterises a Mask datablock into ``<output>/<result>_masks/<object>/<frame>.png``, the
layout the backend reads. A second export into the same folder must neither overwrite masks the user
made or edited, nor leave object folders of the previous export (a layer removed since) for the
backend to read as objects. So an export:

* is written into a hidden staging folder beside the target and swapped in only when complete (a
  failure removes the staging folder and leaves the target as it was);
* records what it wrote in ``EXPORT_MARKER`` inside the folder (every file with its SHA-256);
* replaces an existing target only when it is an unmodified previous export: every file there is
  one the marker lists, with the same content. A folder without the marker (the user's own masks),
  or with a file added or edited since, is refused with ``MaskFolderError`` naming the folder and the
  first file that differs, and nothing is written.

The replaced export goes as a whole, so no stale object folder survives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .masks import object_folder, write_png

EXPORT_MARKER = ".genmojo-masks.json"
EXPORT_FORMAT = "genmojo-mask-export"
EXPORT_VERSION = 1
MAX_MARKER_BYTES = 64 * 1024 * 1024  # a marker lists one line per written PNG


class MaskFolderError(ValueError):
    """The mask folder cannot be written without losing files that are not a previous export's."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` as a relative POSIX path, the marker excluded."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != EXPORT_MARKER)


def _marker_files(folder: Path) -> dict[str, str] | None:
    """The files a previous export recorded (relative path -> SHA-256), or None without a valid marker."""
    marker = folder / EXPORT_MARKER
    try:
        if marker.stat().st_size > MAX_MARKER_BYTES:
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    files = data.get("files") if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return files


def check_export_target(folder: str | os.PathLike) -> None:
    """Raise MaskFolderError unless ``folder`` is missing or an unmodified previous export."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise MaskFolderError(f"{folder} is a file, not a mask folder; move it away or choose another result name")
    recorded = _marker_files(folder)
    if recorded is None:
        raise MaskFolderError(f"{folder} already holds masks that GenMOJO's mask export did not write; they are "
                              "left as they are: move them away, or choose another result name")
    for rel in _files(folder):
        if rel not in recorded:
            raise MaskFolderError(f"{folder}: {rel} was added after the last mask export; nothing was "
                                  "overwritten: move the folder away (or that file) and export again")
        if _digest(folder / rel) != recorded[rel]:
            raise MaskFolderError(f"{folder}: {rel} was edited after the last mask export; nothing was "
                                  "overwritten: move the folder away and export again")


def write_mask_folders(folder: str | os.PathLike, frames: list[tuple[int, str]], num_objects: int,
                       masks_at: Callable[[int], list[np.ndarray]]) -> list[str]:
    """Write ``num_objects`` object folders (001, 002, ...) of one PNG per frame into ``folder``.

    ``frames`` is [(frame, file stem)]; ``masks_at(frame)`` returns one (H, W) bool image per object.
    Checks the target first (``check_export_target``), writes everything into a staging folder and
    swaps it in. Returns the object folders' paths (as they are after the swap).
    """
    folder = Path(folder)
    check_export_target(folder)
    if num_objects < 1:
        raise ValueError("no objects to write")
    names = [object_folder(i) for i in range(num_objects)]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        for name in names:
            (staging / name).mkdir()
        recorded = {}
        for frame, stem in frames:
            images = masks_at(frame)
            if len(images) != num_objects:
                raise ValueError(f"frame {frame}: {len(images)} masks for {num_objects} objects")
            for name, img in zip(names, images):
                rel = f"{name}/{stem}.png"
                write_png(staging / rel, img)
                recorded[rel] = _digest(staging / rel)
        marker = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "objects": names,
                  "frames": [stem for _, stem in frames], "files": recorded}
        (staging / EXPORT_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        check_export_target(folder)  # once more: the user may have put files there meanwhile
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [str(folder / name) for name in names]


def _swap_in(staging: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(staging, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.rmdir(old)  # a free name beside the folder
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
