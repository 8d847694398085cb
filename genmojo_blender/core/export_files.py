"""Where an export writes, checked before anything is written (numpy-free, no bpy).

Every GenMOJO export follows the project's rule for user files: nothing that exists is replaced
unless the user asked for it (the exporters' Overwrite option). ``check_targets`` is called with
every path an export is about to write, before any of them is written, so a refusal leaves the
disk as it was. Each file is then written to a hidden temporary sibling and renamed into place
(``write_atomic``), so an interrupted export never leaves a truncated file under the final name.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

# How many existing files a refusal names before it says "and N more".
NAMES_IN_MESSAGE = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExportError(ValueError):
    """An export cannot run as asked (nothing to export, a file in the way, a bad option)."""


def safe_name(name: str) -> str:
    """A file-name-safe version of a Blender object name (letters, digits, ``._-``)."""
    cleaned = _UNSAFE.sub("_", name).strip("._")
    return cleaned or "object"


def frame_file(folder: str | os.PathLike, stem: str, frame: int, ext: str) -> Path:
    """``folder/stem_0001.ext``: one file of a per-frame sequence, numbered by Blender frame."""
    return Path(folder) / f"{stem}_{int(frame):04d}{ext}"


def check_targets(paths: list[Path], *, overwrite: bool) -> None:
    """Refuse (ExportError) when a path is a folder, or exists and ``overwrite`` is off."""
    if not paths:
        raise ExportError("the export would write no files")
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise ExportError(f"{folders[0]} is a folder; choose a file name for the export")
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise ExportError(f"two exported files would both be called {dup}; give the objects distinct names")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing[:NAMES_IN_MESSAGE])
        more = f" and {len(existing) - NAMES_IN_MESSAGE} more" if len(existing) > NAMES_IN_MESSAGE else ""
        raise ExportError(f"{names}{more} already exist{'s' if len(existing) == 1 else ''}; "
                          "choose another place or turn on Overwrite to replace them")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
