"""Reads a MegaSAM camera file (``--cam_path``): per-frame intrinsics, poses and depth maps.

MegaSAM writes an npz with ``images`` (T,H,W,3) uint8, ``depths`` (T,H,W), ``intrinsic`` (3,3) at
its own processing resolution, and ``cam_c2w`` (T,4,4) camera-to-world with OpenCV camera axes.
Everything is validated (a readable, complete npz; keys; floating-point arrays, not integers, complex numbers
or strings; shapes; finiteness; frame count) before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from .npz import read_arrays

REQUIRED_KEYS = ("depths", "intrinsic", "cam_c2w")
MIN_DEPTH_SIDE = 2  # pixels: a smaller depth map cannot carry MegaSAM's intrinsics to the clip


@dataclass(frozen=True)
class MegasamCameras:
    """Cameras rescaled to a target image size, plus depth maps resampled to it."""

    K: np.ndarray  # (T, 3, 3) at the target size
    c2w: np.ndarray  # (T, 4, 4) OpenCV axes
    depths: np.ndarray  # (T, h, w) float32 at the target size


def load_megasam(path: str | Path, num_frames: int, width: int, height: int) -> MegasamCameras:
    """Load and validate ``path`` for a clip of ``num_frames`` frames fitted at ``width`` × ``height``."""
    path = Path(path)
    hint = "pass the npz that MegaSAM wrote for this clip (keys images, depths, intrinsic, cam_c2w)"
    arrays = read_arrays(path, REQUIRED_KEYS, hint, not_found="camera file not found",
                         dtypes={"depths": np.float32, "intrinsic": np.float64, "cam_c2w": np.float64})
    depths, K, c2w = arrays["depths"], arrays["intrinsic"], arrays["cam_c2w"]
    if K.shape != (3, 3):
        raise InputError(f"{path}: intrinsic has shape {K.shape}, expected (3, 3)", hint)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise InputError(f"{path}: cam_c2w has shape {c2w.shape}, expected (T, 4, 4)", hint)
    if depths.ndim != 3 or min(depths.shape[1:]) < MIN_DEPTH_SIDE:
        raise InputError(f"{path}: depths has shape {depths.shape}, expected (T, H, W) with H and W at least "
                         f"{MIN_DEPTH_SIDE}", hint)
    for name, a in (("intrinsic", K), ("cam_c2w", c2w), ("depths", depths)):
        if not np.isfinite(a).all():
            raise InputError(f"{path}: {name} contains NaN or infinity", hint)
    if c2w.shape[0] != num_frames or depths.shape[0] != num_frames:
        raise InputError(f"{path}: {c2w.shape[0]} camera poses and {depths.shape[0]} depth maps for a clip of "
                         f"{num_frames} frames", "run MegaSAM on exactly the frames of this clip")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{path}: intrinsic focal lengths must be positive", hint)
    if (depths <= 0).any():
        raise InputError(f"{path}: depths must be positive", hint)
    R = c2w[:, :3, :3]
    if not np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-3) or not np.allclose(c2w[:, 3], [0, 0, 0, 1]):
        raise InputError(f"{path}: cam_c2w are not rigid camera-to-world matrices", hint)
    hm, wm = depths.shape[1:]
    Ks = np.repeat(K[None], num_frames, 0)
    Ks[:, 0] *= width / wm  # intrinsics are at MegaSAM's processing resolution
    Ks[:, 1] *= height / hm
    resized = np.stack([cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST) for d in depths])
    return MegasamCameras(K=Ks, c2w=c2w, depths=resized.astype(np.float32))


def object_depths_from_maps(masks: np.ndarray, depths: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(K, T) median depth inside each object's mask (eroded where it is big enough).

    Frames where an object is not visible take the nearest visible frame's value by interpolation.
    """
    K, T = masks.shape[:2]
    out = np.zeros((K, T))
    kernel = np.ones((3, 3), np.uint8)
    for k in range(K):
        for t in np.flatnonzero(visible[k]):
            m = masks[k, t]
            eroded = cv2.erode(m.astype(np.uint8), kernel).astype(bool)
            sel = eroded if eroded.sum() >= 10 else m  # thin objects: use the whole mask
            out[k, t] = float(np.median(depths[t][sel]))
        idx = np.arange(T)
        out[k] = np.interp(idx, idx[visible[k]], out[k, visible[k]])
    return out
