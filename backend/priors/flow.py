"""Dense optical flow between chosen pairs of frames, with a forward–backward occlusion check.

The fitter compares where its Gaussians move between the previous training frame ``a`` and the
current one ``b`` with the apparent image motion, so it needs the forward flow a → b on frame a's
pixel grid, plus a mask of the pixels where that flow can be trusted: pixels that become hidden in
b, or that leave the frame, have no true correspondence and must not pull on the motion.

Flow for a clip is cached on disk (``cached_flow``), keyed by the frames' content and size, the pairs,
the estimator and its settings, so a second run on the same clip (another preset's fit, a resume, an
evaluation) reads it instead of recomputing it. The estimator is pluggable (``FlowEstimator``): OpenCV
DIS is built in; a learned model loaded from a local path can implement the same two-frame call.

Conventions: flow vectors are in pixels, x to the right and y down. Pixel (i, j) (row, col) has its
centre at image coordinate (j + 0.5, i + 0.5) and a flow vector moves that centre to another image
coordinate; the image covers [0, W] × [0, H]. Displacements are the same in OpenCV's integer-index
convention, so flows from OpenCV are used as they are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..io.npz import UNREADABLE, write_npz_atomic

FLOW_PRESETS = ("ultrafast", "fast", "medium")

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# DIS works on patches of 8 px over an image pyramid and refuses frames that are too small for it.
MIN_SIDE = 16


@dataclass(frozen=True)
class FlowPairs:
    """Forward optical flow for pairs of frames (a → b), in pixels (x right, y down), on frame a's grid."""

    pairs: np.ndarray  # (P, 2) int: frame indices (a, b)
    flow: np.ndarray  # (P, H, W, 2) float32
    valid: np.ndarray  # (P, H, W) bool: forward–backward consistent and landing inside frame b
    method: str  # e.g. "opencv-dis-medium"

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    def index(self, a: int, b: int) -> int:
        """Position of the pair (a, b) in ``pairs``, so callers can look a pair up by its frames."""
        hits = np.flatnonzero((self.pairs[:, 0] == a) & (self.pairs[:, 1] == b))
        if hits.size == 0:
            raise KeyError(f"no flow was computed for the frame pair ({a}, {b})")
        return int(hits[0])


class FlowEstimator(Protocol):
    """A dense two-frame flow estimator: ``name`` identifies it and its settings (it is part of the
    cache key); calling it with two (H, W, 3) uint8 RGB frames returns the flow (H, W, 2) float32 in
    pixels from the first to the second. A learned model (e.g. loaded from a local checkpoint path)
    plugs in by implementing this; the forward–backward check and the cache stay the same."""

    name: str

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


class DisFlow:
    """OpenCV's DIS optical flow on grey frames (the built-in estimator)."""

    def __init__(self, preset: str = "medium"):
        if preset not in _DIS_PRESETS:
            raise ValueError(f"unknown optical-flow preset {preset!r}; choose one of {', '.join(FLOW_PRESETS)}")
        self.preset = preset
        self.name = f"opencv-dis-{preset}"
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ga = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
        return self._dis.calc(ga, gb, None)


def make_flow_estimator(spec: str) -> FlowEstimator:
    """``dis-ultrafast`` / ``dis-fast`` / ``dis-medium`` (or a bare preset name). A path to a learned
    model is recognised but not supported yet: it raises ValueError saying so."""
    name = spec[4:] if spec.startswith("dis-") else spec
    if name in _DIS_PRESETS:
        return DisFlow(name)
    if Path(spec).expanduser().exists():
        raise ValueError(f"{spec}: learned flow models are not supported yet; implement FlowEstimator for it "
                         "(backend/priors/flow.py) or use a DIS preset")
    raise ValueError(f"unknown flow estimator {spec!r}; choose one of "
                     + ", ".join(f"dis-{p}" for p in FLOW_PRESETS))


def estimate_flow(
    frames: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    *,
    preset: str = "medium",
    fb_rel: float = 0.01,
    fb_abs: float = 0.5,
    estimator: FlowEstimator | None = None,
) -> FlowPairs:
    """Forward flow a → b and its validity mask for each requested pair of frames.

    ``frames`` is (T, H, W, 3) uint8 RGB. Pairs are explicit (not just t−1 → t) because withheld
    frames make the previous training frame of a frame lie further back. A pixel of a is valid when
    the backward flow b → a, read where the forward flow lands, brings it back to where it started
    (within ``fb_rel`` of the two flows' lengths plus ``fb_abs`` pixels) and it lands inside frame b.
    ``estimator`` replaces DIS (``preset`` is then unused). Raises ValueError naming the problem for
    unusable inputs.
    """
    frames = _check_frames(frames)
    pair_arr = _check_pairs(pairs, frames.shape[0])
    if estimator is None:
        estimator = DisFlow(preset)
    _check_tolerances(fb_rel, fb_abs)

    T, H, W = frames.shape[:3]
    P = pair_arr.shape[0]
    flow = np.zeros((P, H, W, 2), np.float32)
    valid = np.zeros((P, H, W), bool)

    for p, (a, b) in enumerate(pair_arr):
        fwd = _check_flow(estimator(frames[int(a)], frames[int(b)]), "forward")
        bwd = _check_flow(estimator(frames[int(b)], frames[int(a)]), "backward")
        if fwd.shape[:2] != (H, W):
            raise ValueError(f"the flow estimator {estimator.name} returned {fwd.shape[:2]} for {W}x{H} frames")
        flow[p] = fwd
        valid[p] = consistency_mask(fwd, bwd, rel=fb_rel, abs_tol=fb_abs)

    return FlowPairs(pairs=pair_arr, flow=flow, valid=valid, method=estimator.name)


CACHE_VERSION = 1


def flow_cache_key(frames: np.ndarray, pairs: np.ndarray, method: str, fb_rel: float, fb_abs: float) -> str:
    """A digest of everything the flow depends on: the frames' bytes and shape, the pairs, the estimator's
    name and the forward–backward tolerances (and the cache format's version)."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "shape": list(frames.shape), "method": method,
                         "fb": [float(fb_rel), float(fb_abs)]}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(pairs, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(frames).tobytes())
    return h.hexdigest()[:32]


def cached_flow(
    frames: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    cache_dir: str | Path | None,
    *,
    preset: str = "medium",
    fb_rel: float = 0.01,
    fb_abs: float = 0.5,
    estimator: FlowEstimator | None = None,
    warn: Callable[[str], None] = lambda msg: None,
) -> tuple[FlowPairs, bool]:
    """``estimate_flow`` through an on-disk cache in ``cache_dir``; returns (flow, whether it was cached).

    One ``flow-<key>.npz`` per clip and settings (``flow_cache_key``). A missing entry is computed; one that
    is empty, truncated, damaged or holds arrays of the wrong shape or dtype is reported through ``warn``,
    recomputed and replaced; an entry that cannot be written is reported through ``warn`` and the run goes
    on. Writes are atomic (a temporary file renamed into place), so a run killed while writing leaves no
    partial entry.
    """
    frames = _check_frames(frames)
    pair_arr = _check_pairs(pairs, frames.shape[0])
    if estimator is None:
        estimator = DisFlow(preset)
    if cache_dir is None:
        return estimate_flow(frames, pair_arr, fb_rel=fb_rel, fb_abs=fb_abs, estimator=estimator), False
    key = flow_cache_key(frames, pair_arr, estimator.name, fb_rel, fb_abs)
    path = Path(cache_dir) / f"flow-{key}.npz"
    if path.is_file():
        cached, problem = _read_cache_entry(path, pair_arr, frames.shape[1:3])
        if cached is not None:
            return cached, True
        warn(f"warning: ignoring the unreadable flow cache {path}: it {problem}; recomputing it")
    result = estimate_flow(frames, pair_arr, fb_rel=fb_rel, fb_abs=fb_abs, estimator=estimator)
    try:
        write_npz_atomic(path, ".flow-", pairs=result.pairs, flow=result.flow, valid=result.valid,
                         method=result.method)
    except OSError as e:
        warn(f"warning: could not cache the optical flow in {path.parent} ({e}); the run continues")
    return result, False


def _read_cache_entry(path: Path, pairs: np.ndarray, size: tuple[int, int]) -> tuple[FlowPairs | None, str]:
    """The cached flow at ``path`` if it is complete and matches the request: (flow, "") or (None, what is wrong).

    An entry may be cut short by a full disk or a killed process of an older version, or damaged later;
    whatever it holds, it is only used when every array has the expected shape and dtype and finite values."""
    H, W = size
    P = len(pairs)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            return None, "is not an npz archive"
        with z:
            arrays = {k: z[k] for k in ("pairs", "flow", "valid", "method")}
    except UNREADABLE as e:  # io/npz.py: what np.load raises for a damaged file
        return None, f"cannot be read ({type(e).__name__}: {e})"
    flow, valid, cached_pairs, method = arrays["flow"], arrays["valid"], arrays["pairs"], arrays["method"]
    if flow.dtype != np.float32 or flow.shape != (P, H, W, 2):
        return None, f"holds flow of {flow.dtype} {flow.shape}, expected float32 {(P, H, W, 2)}"
    if valid.dtype != bool or valid.shape != (P, H, W):
        return None, f"holds a validity mask of {valid.dtype} {valid.shape}, expected bool {(P, H, W)}"
    if cached_pairs.dtype.kind not in "iu" or not np.array_equal(cached_pairs, pairs):
        return None, "is for other frame pairs"
    if method.dtype.kind != "U" or method.shape != ():
        return None, f"names its estimator with {method.dtype} {method.shape}, expected a string"
    if not np.isfinite(flow).all():
        return None, "holds non-finite flow"
    return FlowPairs(pairs=pairs, flow=flow, valid=valid, method=str(method)), ""


def consistency_mask(forward: np.ndarray, backward: np.ndarray, *, rel: float, abs_tol: float) -> np.ndarray:
    """(H, W) bool on frame a's grid: where the forward flow a → b is confirmed by the backward flow b → a.

    A pixel x is kept when |f(x) + b(x + f(x))| ≤ rel·(|f(x)| + |b(x + f(x))|) + abs_tol and x + f(x)
    lies inside frame b. A pixel that is hidden in b has no true match there, so the backward flow at
    its landing point belongs to whatever covers it and does not lead back; the relative term allows
    for the larger absolute error of long displacements.
    """
    forward = _check_flow(forward, "forward")
    backward = _check_flow(backward, "backward")
    if forward.shape != backward.shape:
        raise ValueError(
            f"forward and backward flows must have the same shape, got {forward.shape} and {backward.shape}"
        )
    _check_tolerances(rel, abs_tol)

    H, W = forward.shape[:2]
    x_idx, y_idx = _landing_indices(forward)
    # The image covers [0, W] × [0, H] in image coordinates, i.e. [-0.5, W - 0.5] in pixel indices.
    inside = (x_idx >= -0.5) & (x_idx <= W - 0.5) & (y_idx >= -0.5) & (y_idx <= H - 0.5)
    back = cv2.remap(backward, x_idx, y_idx, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    err = np.linalg.norm(forward + back, axis=-1)
    tol = rel * (np.linalg.norm(forward, axis=-1) + np.linalg.norm(back, axis=-1)) + abs_tol
    return inside & np.isfinite(err) & (err <= tol)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` read at x + flow(x) for every pixel x of the flow's grid, with bilinear interpolation.

    With the forward flow a → b, warping frame b gives frame b seen on frame a's grid (≈ frame a where
    the flow is valid). Points that land outside the image take the nearest edge value; use the
    validity mask to ignore them. Accepts (H, W) or (H, W, C) images of any numeric dtype; the result
    has the flow's height and width and the image's dtype and channels.
    """
    flow = _check_flow(flow, "flow")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"image must be numeric, got dtype {image.dtype}")
    dtype = image.dtype
    # cv2.remap handles uint8, uint16, int16, float32 and float64; other types go through float.
    native = dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64)
    src = np.ascontiguousarray(image if native else image.astype(np.float64))
    x_idx, y_idx = _landing_indices(flow)
    if src.ndim == 3 and src.shape[2] > 4:
        # Some remap paths are limited to 4 channels; split to stay on the safe side.
        out = np.concatenate(
            [_remap(np.ascontiguousarray(src[..., c : c + 4]), x_idx, y_idx) for c in range(0, src.shape[2], 4)],
            axis=-1,
        )
    else:
        out = _remap(src, x_idx, y_idx)
    if native:
        return out
    if dtype == bool:
        return out >= 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def _remap(src: np.ndarray, x_idx: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
    out = cv2.remap(src, x_idx, y_idx, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if src.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[..., None]
    return out


def _landing_indices(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (column, row) where each pixel of the flow's grid lands, as float32 maps for remap."""
    H, W = flow.shape[:2]
    cols, rows = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cols + flow[..., 0], rows + flow[..., 1]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    T, H, W = frames.shape[:3]
    if T < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {T}")
    if H < MIN_SIDE or W < MIN_SIDE:
        raise ValueError(f"frames are too small for optical flow: {W}x{H}, need at least {MIN_SIDE}x{MIN_SIDE}")
    return frames


def _check_pairs(pairs: Sequence[tuple[int, int]], num_frames: int) -> np.ndarray:
    arr = np.asarray(pairs)
    if arr.size == 0:
        return np.zeros((0, 2), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must be a sequence of (a, b) frame-index pairs, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pairs must hold integer frame indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_frames)
    if bad.any():
        a, b = arr[np.flatnonzero(bad.any(axis=1))[0]]
        raise ValueError(f"pair ({a}, {b}) has a frame index out of range: the clip has frames 0..{num_frames - 1}")
    same = arr[:, 0] == arr[:, 1]
    if same.any():
        a = arr[np.flatnonzero(same)[0], 0]
        raise ValueError(f"pair ({a}, {a}) pairs a frame with itself; flow needs two different frames")
    return arr


def _check_flow(flow: np.ndarray, name: str) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"{name} flow must have shape (H, W, 2), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(f"{name} flow must be floating point, got dtype {flow.dtype}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def _check_tolerances(rel: float, abs_tol: float) -> None:
    for label, value in (("relative", rel), ("absolute", abs_tol)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"the {label} forward-backward tolerance must be a finite number >= 0, got {value}")
