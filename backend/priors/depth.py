"""Depth for the per-object depth factors of stage 2 (docs/method.md §4.4): where it comes from.

Stage 2 needs one number per object and frame: the camera distance of the object's visible surface,
``(K, T)``. It is the masked median of a depth map where one exists, in this order of preference:

1. ``--depth_dir``: a folder of per-frame depth maps named like the frames (trailing frame number):
   16-bit PNG/TIFF, ``.npy`` or ``.exr`` (OpenCV), with the frames' aspect ratio. Values are depth, or
   disparity with ``--depth_is_disparity``; 0, negative and non-finite values mean "unknown" (a map with
   no known value at all is refused). Empty, truncated, complex, boolean or text maps are refused.
2. ``--depth_model``: a local depth-estimation model in the transformers layout (config.json,
   preprocessor_config.json, weights), run on every frame. Relative models (Depth Anything, DPT)
   predict disparity, which is inverted; models whose config says ``depth_estimation_type: metric``
   predict depth.
3. MegaSAM's ``depths`` (``--cam_path``), metric and consistent with its cameras.
4. None: the heuristic below.

Maps of unknown scale (1 and 2, unless they come with MegaSAM cameras, which fix the scale) are scaled
so that the median object depth equals the reference: MegaSAM's object depths when its cameras are in
use, else the static camera's scene depth. Only the relative order and the change over time matter then.

Heuristic (no depth at all): objects are ordered by two cues from the masks alone.
- Ground contact: an object whose lowest mask row (in its reference frame) is lower in the image
  stands nearer the camera (objects on a common ground plane seen from above the ground);
  ``log depth = −spread · (bottom/H − mean)``.
- Mutual occlusion: each object's mask is carried to the next (and the previous) training frame by its
  own motion (``own_motion``, a translation robust to partial occlusion); where the prediction of b is
  not seen but object a is, a hides b. Pixel counts in both directions give a signed confidence
  ``c_ab ∈ (−1, 1)``.
The per-object log depths ``z`` minimise ``Σ_k (z_k − g_k)² + w Σ_ab |c_ab| (z_b − z_a − m·c_ab)²``
(g from ground contact, margin ``m`` and weight ``w`` from ``DepthPriorConfig``): occlusion evidence
overrides ground contact where it is strong. Depths are constant over time and centred on the scene
depth. Known limits: objects that deform, rotate or change scale a lot between frames mispredict their
own masks and add noise to the evidence; objects that never touch in the image are ordered by ground
contact alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError

DEPTH_EXTS = (".png", ".tif", ".tiff", ".npy", ".exr")
ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as the frame's own
_NUMBERED = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class DepthMaps:
    """Per-frame depth maps at the clip's working size: (T, h, w) float32, ≤ 0 where unknown."""

    depths: np.ndarray
    metric: bool  # True: camera distances in the cameras' units; False: correct up to one scale
    source: str  # for the manifest, e.g. "depth maps from clip/depth (16-bit PNG)"


# ---------------------------------------------------------------------------------------------
# reading maps


def read_depth_file(path: Path) -> np.ndarray:
    """One depth map (h, w) float32 from a PNG/TIFF (8/16-bit or float), npy or EXR file."""
    path = Path(path)
    hint = "save depth maps as 16-bit PNG, float .npy (h, w) or single-channel EXR"
    ext = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: depth map not found", hint)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the depth map is empty (0 bytes)", hint)
    if ext == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{path}: not a readable npy file, or truncated ({e})", hint) from e
    else:
        if ext == ".exr":
            os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # OpenCV reads EXR only when asked to
        data = np.fromfile(str(path), dtype=np.uint8)
        d = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH) if data.size else None
        if d is None:
            raise InputError(f"{path}: cannot be read as a depth map", hint)
    d = np.asarray(d)
    if d.ndim == 3:
        d = d[..., 0]  # single value replicated over channels; take the first
    if d.ndim != 2 or d.size == 0 or d.dtype.kind not in "uif":  # not complex, bool, strings or objects
        raise InputError(f"{path}: a depth map must be one real number per pixel, got shape {d.shape} {d.dtype}",
                         hint)
    return d.astype(np.float32)


def _numbered_files(folder: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in DEPTH_EXTS:
            continue
        m = _NUMBERED.search(p.stem)
        if m is None:
            continue
        n = int(m.group(1))
        if n in out:
            raise InputError(f"{p}: frame number {n} also used by {out[n].name}", "keep one depth map per frame")
        out[n] = p
    return out


def load_depth_folder(folder: str | Path, frame_numbers: list[int], width: int, height: int,
                      disparity: bool = False) -> DepthMaps:
    """Depth maps for the clip's frames from ``folder`` (names end in the frame number, like the masks),
    resized to ``width`` × ``height`` (nearest). Disparity is inverted. Raises InputError naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--depth_dir {folder}: folder not found", "pass a folder of per-frame depth maps")
    files = _numbered_files(folder)
    if not files:
        raise InputError(f"{folder}: no depth maps ({', '.join(DEPTH_EXTS)}) whose names end in a frame number",
                         "name the maps like the frames, e.g. 00042.png")
    missing = [n for n in frame_numbers if n not in files]
    if missing:
        raise InputError(f"{folder}: no depth map for frame {missing[0]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                         "give one depth map per frame, named with the frame's number")
    maps, kinds = [], set()
    for n in frame_numbers:
        d = read_depth_file(files[n])
        kinds.add(files[n].suffix.lower())
        hd, wd = d.shape
        # the working size is rounded from the clip's, so its aspect ratio is off by up to a pixel's worth
        tolerance = ASPECT_TOLERANCE + 1.0 / min(width, height, wd, hd)
        if abs((wd / hd) / (width / height) - 1) > tolerance:
            raise InputError(f"{files[n]}: the depth map is {wd}x{hd}, the clip {width}x{height} at its working "
                             "size (another aspect ratio)", "give depth maps of this clip's frames, uncropped")
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        if not (d > 0).any():
            raise InputError(f"{files[n]}: the depth map has no positive value", "check the file's contents")
        if disparity:
            d = np.where(d > 0, 1.0 / np.maximum(d, 1e-12), 0.0).astype(np.float32)
        maps.append(cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST))
    what = "disparity" if disparity else "depth"
    return DepthMaps(np.stack(maps), metric=False,
                     source=f"{what} maps from {folder} ({', '.join(sorted(kinds))}; masked median, scaled)")


# ---------------------------------------------------------------------------------------------
# a depth model through transformers


def check_depth_model(path: str | Path) -> Path:
    """The model folder if it looks like a transformers depth model; InputError naming it otherwise."""
    path = Path(path).expanduser()
    hint = ("pass a local folder saved with save_pretrained (config.json, preprocessor_config.json and the "
            "weights) of a depth-estimation model, e.g. Depth Anything V2 Small")
    if not path.is_dir():
        raise InputError(f"--depth_model {path}: folder not found", hint)
    for f in ("config.json", "preprocessor_config.json"):
        if not (path / f).is_file():
            raise InputError(f"--depth_model {path}: {f} is missing", hint)
    return path


@torch.no_grad()
def run_depth_model(path: str | Path, frames: np.ndarray, device: torch.device | str = "cpu",
                    batch: int = 4, disparity_floor: float = 1e-3) -> DepthMaps:
    """Depth maps (T, h, w) for ``frames`` (T, h, w, 3) uint8 from a local transformers depth model.

    Relative models predict disparity: depth = 1 / max(disparity, floor·max disparity of the frame).
    """
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    path = check_depth_model(path)
    try:
        processor = AutoImageProcessor.from_pretrained(path)
        model = AutoModelForDepthEstimation.from_pretrained(path).to(device).eval()
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"--depth_model {path}: could not be loaded ({type(e).__name__}: {e})",
                         "pass a depth-estimation model saved with transformers' save_pretrained") from e
    model.requires_grad_(False)
    metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"
    T, h, w = frames.shape[:3]
    out = np.zeros((T, h, w), np.float32)
    for s in range(0, T, batch):
        chunk = [frames[t] for t in range(s, min(T, s + batch))]
        inputs = processor(images=chunk, return_tensors="pt").to(device)
        pred = model(**inputs).predicted_depth
        pred = torch.nn.functional.interpolate(pred[:, None].float(), (h, w), mode="bilinear",
                                               align_corners=False)[:, 0]
        if not metric:
            floor = disparity_floor * pred.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
            pred = 1.0 / torch.maximum(pred, floor)
        out[s:s + len(chunk)] = pred.cpu().numpy()
    kind = "metric depth" if metric else "disparity, inverted"
    # even a metric model's units are not the fit's (the static virtual camera has its own), so the maps
    # are scaled like relative ones
    return DepthMaps(out, metric=False, source=f"depth model {path} ({kind}; masked median, scaled)")


# ---------------------------------------------------------------------------------------------
# per-object depths


def masked_medians(masks: np.ndarray, depths: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(K, T) median of the known (> 0) depth inside each object's (eroded where big enough) mask.

    Frames where the object is not visible, or where its mask holds no known depth, take values
    interpolated from the frames that have one; an object with no value at all gets NaN.
    """
    K, T = masks.shape[:2]
    out = np.full((K, T), np.nan)
    kernel = np.ones((3, 3), np.uint8)
    for k in range(K):
        for t in np.flatnonzero(visible[k]):
            m = masks[k, t].astype(bool)
            eroded = cv2.erode(m.astype(np.uint8), kernel).astype(bool)
            sel = eroded if eroded.sum() >= 10 else m
            vals = depths[t][sel]
            vals = vals[np.isfinite(vals) & (vals > 0)]
            if vals.size:
                out[k, t] = float(np.median(vals))
        known = np.isfinite(out[k])
        if known.any():
            idx = np.arange(T)
            out[k] = np.interp(idx, idx[known], out[k, known])
    return out


EVIDENCE_SIDE = 128  # occlusion evidence is counted on masks downscaled to at most this side


def _shifted(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    M = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(mask.astype(np.uint8), M, mask.shape[::-1], flags=cv2.INTER_NEAREST) > 0


def _bbox(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def own_motion(src: np.ndarray, dst: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """The translation that carries an object's mask ``src`` onto its mask ``dst`` one frame later, robust to
    the part of it that another object hides at ``dst`` (``others``: every other object's mask there).

    Candidates are the shifts of each bounding-box edge and of the centre (an occluder moves some edges
    but rarely all) and zero; the best one lands as much of ``src`` as possible on ``dst`` and as little
    on the background (landing on another object is allowed: it may be in front).
    """
    if not src.any() or not dst.any():
        return 0.0, 0.0
    a, b = _bbox(src), _bbox(dst)
    dxs = {0.0, b[0] - a[0], b[2] - a[2], (b[0] + b[2] - a[0] - a[2]) / 2}
    dys = {0.0, b[1] - a[1], b[3] - a[3], (b[1] + b[3] - a[1] - a[3]) / 2}
    background = ~(dst | others)
    best, score = (0.0, 0.0), -np.inf
    for dx in sorted(dxs):
        for dy in sorted(dys):
            moved = _shifted(src, dx, dy)
            sc = float((moved & dst).sum()) - float((moved & background).sum())
            if sc > score + 1e-9:
                best, score = (dx, dy), sc
    return best


def occlusion_evidence(masks: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(K, K) pixel counts: E[a, b] = pixels where object b's own motion says b should be in the next (or
    previous) training frame, b is not seen there, and object a is: evidence that a is in front of b.

    Each object is carried from one frame to its neighbour by ``own_motion``; where its prediction is
    covered by another object, that object hides it. Objects moving apart or revealing each other give
    no evidence either way. Masks are downscaled to at most ``EVIDENCE_SIDE`` pixels a side.
    """
    K, T, h, w = masks.shape
    f = min(1.0, EVIDENCE_SIDE / max(h, w))
    if f < 1.0:
        size = (max(1, round(w * f)), max(1, round(h * f)))
        masks = np.stack([[cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0 for m in mk]
                          for mk in masks])
    E = np.zeros((K, K))
    frames = np.asarray(frames)
    for s, t in zip(frames[:-1], frames[1:]):
        for src, dst in ((s, t), (t, s)):
            for b in range(K):
                if not masks[b, src].any():
                    continue
                others = np.zeros_like(masks[b, dst])
                for a in range(K):
                    if a != b:
                        others |= masks[a, dst]
                dx, dy = own_motion(masks[b, src], masks[b, dst], others)
                hidden = _shifted(masks[b, src], dx, dy) & ~masks[b, dst]
                if not hidden.any():
                    continue
                for a in range(K):
                    if a != b:
                        E[a, b] += float((hidden & masks[a, dst]).sum())
    return E


def heuristic_depths(masks: np.ndarray, bottoms: np.ndarray, frames: np.ndarray, height: int, base_depth: float,
                     spread: float, margin: float, weight: float, min_pixels: float) -> tuple[np.ndarray, np.ndarray]:
    """(K,) depths from ground contact and mutual occlusion (see the module docstring), and the (K, K)
    signed occlusion confidence ``c`` (c[a, b] > 0: a in front of b).

    ``bottoms`` (K,) is each object's lowest mask row (exclusive) in its reference frame, in pixels.
    ``min_pixels`` damps the confidence of a handful of pixels: c = (n_ab − n_ba) / (n_ab + n_ba + min_pixels).
    """
    K = masks.shape[0]
    b = np.asarray(bottoms, float) / height
    g = -spread * (b - b.mean())
    E = occlusion_evidence(masks, frames)
    C = (E - E.T) / (E + E.T + min_pixels)
    A = np.eye(K)
    rhs = g.copy()
    for a in range(K):
        for c in range(a + 1, K):
            conf = abs(C[a, c])
            if conf == 0:
                continue
            # residual r = z_c − z_a − margin·C[a, c], weight w·|C|
            wgt = weight * conf
            target = margin * C[a, c]
            A[a, a] += wgt
            A[c, c] += wgt
            A[a, c] -= wgt
            A[c, a] -= wgt
            rhs[a] -= wgt * target
            rhs[c] += wgt * target
    z = np.linalg.solve(A, rhs)
    return base_depth * np.exp(z - z.mean()), C


def scale_to(depths: np.ndarray, reference: float) -> np.ndarray:
    """Depths of unknown scale multiplied so that their median equals ``reference``."""
    med = float(np.nanmedian(depths))
    if not np.isfinite(med) or med <= 0:
        return depths
    return depths * (reference / med)


def object_depths(masks: np.ndarray, visible: np.ndarray, maps: DepthMaps | None, *, reference: float,
                  bottoms: np.ndarray, frames: np.ndarray, height: int, spread: float, margin: float,
                  weight: float, min_pixels: float, ids: list[str] | None = None) -> tuple[np.ndarray, str]:
    """(K, T) camera distance of each object per frame, and a description of where it came from.

    With ``maps``: masked medians (scaled to ``reference`` unless metric). Objects the maps say nothing
    about fall back to the heuristic, scaled alongside. Without maps: the heuristic, constant over time.
    """
    K, T = masks.shape[:2]
    heur, C = heuristic_depths(masks, bottoms, frames, height, reference, spread, margin, weight, min_pixels)
    names = ids if ids is not None else [str(k) for k in range(K)]
    order = " < ".join(names[k] for k in np.argsort(heur))
    if maps is None:
        return (np.repeat(heur[:, None], T, 1),
                f"heuristic: ground contact and mutual occlusion in the masks (near to far: {order})")
    d = masked_medians(masks, maps.depths, visible)
    if not maps.metric:
        d = scale_to(d, reference)
    lost = ~np.isfinite(d).all(1)
    if lost.any():
        d[lost] = np.repeat(heur[lost, None], T, 1)
    note = f"; objects {np.flatnonzero(lost).tolist()} from the heuristic" if lost.any() else ""
    return d, maps.source + note
