"""Reads background mode's inpainted background image (``--bg_path``).

The image is the clip's reference frame (frame 0 by default) with the objects painted out, made by
any inpainting tool. It may be at any resolution with the clip's aspect ratio; it is resampled to the
fitting size. Every problem (a missing, empty, truncated or undecodable file, another aspect ratio) is an
InputError naming the file and the fix, raised before any optimisation starts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as the same frame
JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"  # a JPEG's first bytes and its end-of-image marker
JPEG_TAIL = 4096  # the end marker must lie within this many bytes of the file's end (some tools append data)


def load_background_image(path: str | Path, clip_size: tuple[int, int], work_size: tuple[int, int]) -> np.ndarray:
    """The inpainted background at the fitting size ``work_size`` (w, h): (h, w, 3) uint8 RGB.

    ``clip_size`` (w, h) is the original frames' size, whose aspect ratio the image must share."""
    path = Path(path)
    hint = ("pass the clip's first frame with the objects painted out (PNG or JPG, same aspect ratio as "
            "the frames), or run without --bg_path")
    if not path.is_file():
        raise InputError(f"{path}: background image not found", hint)
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: the background image is empty (0 bytes)", hint)
    if data[:3].tobytes() == JPEG_START and JPEG_END not in data[-JPEG_TAIL:].tobytes():
        # OpenCV decodes a cut-off JPEG without complaint, filling the missing rows with grey
        raise InputError(f"{path}: the JPEG is truncated (it has no end-of-image marker)", hint)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: not a readable image, or truncated", hint)
    h, w = img.shape[:2]
    cw, ch = clip_size
    if abs((w / h) / (cw / ch) - 1) > ASPECT_TOLERANCE:
        raise InputError(f"{path}: the background image is {w}x{h}, the clip {cw}x{ch} (another aspect ratio)",
                         "inpaint a frame of this clip without cropping it")
    ww, wh = work_size
    if (w, h) != (ww, wh):
        interp = cv2.INTER_AREA if w > ww else cv2.INTER_LINEAR
        img = cv2.resize(img, (ww, wh), interpolation=interp)
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
