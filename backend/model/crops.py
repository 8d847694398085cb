"""Object-centric crops: the square window around an object that its canonical model is fitted in.

Stage 1 sees each object through a square crop centred on its mask's bounding box in its reference
frame, with the object's larger side filling ``margin`` of the crop (0.65 in the spec). The side is
measured in pixels, so wide objects in landscape video keep the same margin as in square video (the
public code measures it in normalised units, which clips wide objects [quirk]). Stage 2 derives each
frame's crop scale from the same rule with a looser margin, never smaller than the reference crop,
so an object that is partly hidden (smaller box) does not appear to shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A square window in image pixels: centre (cx, cy) and side length, any of it may be off-image."""

    cx: float
    cy: float
    side: float


def crop_box(bbox: np.ndarray, margin: float, min_side: float = 0.0) -> CropBox:
    """The square window around ``bbox`` (x0, y0, x1, y1; x1/y1 exclusive) whose side is
    ``max(bbox side) / margin``, at least ``min_side``."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    side = max(max(x1 - x0, y1 - y0) / margin, min_side, 1.0)
    return CropBox(cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, side=side)


def crop_object(frame: np.ndarray, mask: np.ndarray, box: CropBox, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``box`` to ``size``² pixels: the object on white (float RGB in [0,1]) and its mask.

    Pixels outside the frame are white in the image and empty in the mask (bilinear sampling).
    """
    s = box.side / size  # input pixels per crop pixel
    # crop pixel centre (j + 0.5) maps to input coordinate cx - side/2 + (j + 0.5)·s
    M = np.array([[s, 0.0, box.cx - box.side / 2 + 0.5 * s - 0.5],
                  [0.0, s, box.cy - box.side / 2 + 0.5 * s - 0.5]], dtype=np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    m = cv2.warpAffine(mask.astype(np.float32), M, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0.0)
    rgb = frame.astype(np.float32) / 255.0
    white_bg = rgb * mask[..., None] + (1.0 - mask[..., None].astype(np.float32))
    img = cv2.warpAffine(white_bg, M, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(1.0, 1.0, 1.0))
    return np.clip(img, 0, 1), np.clip(m, 0, 1)
