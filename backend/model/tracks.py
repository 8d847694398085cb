"""Per-object 2D tracks from the masks: where each object is, how big, and when it is visible.

This is the first arrow of the data flow (clip and masks → per-object tracks). It also picks each
object's reference frame — where its mask is largest and least cut by the image border — so that an
object that enters after frame 0 is initialised where it is best seen, and fills gaps where an
object is hidden by interpolating its image position between the frames where it is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObjectTrack:
    """Image-space track of one object over the clip (working resolution, pixel centres at +0.5)."""

    id: str
    visible: np.ndarray  # (T,) bool: non-empty mask
    area: np.ndarray  # (T,) pixels
    centroid: np.ndarray  # (T, 2) u, v; interpolated where not visible
    bbox: np.ndarray  # (T, 4) x0, y0, x1, y1 (exclusive); interpolated where not visible
    border: np.ndarray  # (T,) fraction of the mask's bbox perimeter lying on the image border
    reference: int  # frame index used to initialise the object

    @property
    def num_frames(self) -> int:
        return int(self.visible.shape[0])


def _interpolate(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames where ``known`` is False; held constant beyond the ends."""
    t = np.arange(values.shape[0])
    out = values.astype(np.float64).copy()
    for c in range(values.shape[1]):
        out[:, c] = np.interp(t, t[known], values[known, c])
    return out


def track_object(obj_id: str, masks: np.ndarray) -> ObjectTrack:
    """Track of one object from its (T, h, w) bool masks (at least one non-empty)."""
    T, h, w = masks.shape
    area = masks.reshape(T, -1).sum(1)
    visible = area > 0
    centroid = np.zeros((T, 2))
    bbox = np.zeros((T, 4))
    border = np.zeros(T)
    for t in np.flatnonzero(visible):
        ys, xs = np.nonzero(masks[t])
        centroid[t] = xs.mean() + 0.5, ys.mean() + 0.5
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        bbox[t] = x0, y0, x1, y1
        rows, cols = masks[t].any(1), masks[t].any(0)
        on_border = cols[0] * rows.sum() + cols[-1] * rows.sum() + rows[0] * cols.sum() + rows[-1] * cols.sum()
        border[t] = on_border / (2 * (rows.sum() + cols.sum()))
    centroid = _interpolate(centroid, visible)
    bbox = _interpolate(bbox, visible)
    score = area * (1.0 - border) ** 2
    reference = int(np.argmax(score))
    return ObjectTrack(id=obj_id, visible=visible, area=area, centroid=centroid, bbox=bbox,
                       border=border, reference=reference)


def track_objects(object_ids: list[str], masks: np.ndarray) -> list[ObjectTrack]:
    """Tracks for all objects from (K, T, h, w) masks."""
    return [track_object(i, m) for i, m in zip(object_ids, masks)]


def ground_contact_depths(tracks: list[ObjectTrack], height: int, base_depth: float,
                          spread: float) -> np.ndarray:
    """Relative object depths from ground contact: a lower image bottom edge means nearer.

    Used when no depth source is given. Each object's bottom edge in its reference frame, as a
    fraction of the image height, is compared with the mean over objects; ``spread`` is the change of
    log depth for a bottom edge one image height lower. Returns (K,) depths around ``base_depth``.
    """
    bottoms = np.array([tr.bbox[tr.reference, 3] / height for tr in tracks])
    return base_depth * np.exp(-spread * (bottoms - bottoms.mean()))
