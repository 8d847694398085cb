"""What the Clip field means: a folder of numbered frames, one frame of such a folder, or a movie.

Blender's file browser makes picking a file easier than accepting a folder, so an artist who
browses into ``JPEGImages/`` and clicks ``00000.jpg`` means "this sequence", not "a one-image
movie". The backend reads a folder or a movie file (``backend/io/clip.py``); this maps the user's
choice onto one of the two before a run. bpy-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The frame formats the backend reads from a folder (backend/io/clip.py IMAGE_EXTS).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ClipSource:
    """The clip as the backend gets it: ``path`` is a folder (``is_sequence``) or a movie file.
    ``picked_frame`` is the image file the user chose when it stood for its folder ("" otherwise)."""

    path: str
    is_sequence: bool
    picked_frame: str = ""


def is_frame_file(path: str) -> bool:
    """True for an image file of a format the backend reads as a frame of a sequence."""
    return os.path.isfile(path) and os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def resolve_clip(path: str) -> ClipSource:
    """``path`` (absolute, may be "") as the backend's ``--data_dir``: a folder stays a folder, an
    image file becomes its folder's numbered sequence, anything else (a movie, a path that does not
    exist) is passed on unchanged for the backend's own checks to name."""
    if not path:
        return ClipSource("", False)
    if os.path.isdir(path):
        return ClipSource(path, True)
    if is_frame_file(path):
        return ClipSource(os.path.dirname(path), True, picked_frame=path)
    return ClipSource(path, False)
