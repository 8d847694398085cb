"""A moving camera solved from the footage's background with COLMAP (``--camera solve``).

Without MegaSAM's npz the fit would only have a static virtual camera. This module recovers one camera
per frame from the pixels outside every object mask (the objects move on their own and would pull the
solve), through pycolmap: SIFT features with the grown object masks excluded (COLMAP's per-image mask
folder, black = no features), sequential matching (video: each frame against its next ``overlap``
frames), incremental mapping with one shared camera for the clip. The result is the backend's camera
type: per-frame ``K`` and camera-to-world ``c2w`` with OpenCV axes (x right, y down, z forward), like
MegaSAM's (backend/io/megasam.py), plus what the solve knows about its quality per frame: the mean
reprojection error of the background points it triangulated, in pixels, and how many it sees.

Scale and world: a structure-from-motion solve has no unit. Its world is moved so that frame 0's
camera is the identity (as the static virtual camera) and scaled so that the median depth of the
triangulated background points equals ``scene_depth`` (the unit the rest of the fit assumes without a
metric depth). The solve has no dense depth: object depths come from ``--depth_dir``, ``--depth_model``
or the mask heuristic (backend/priors/depth.py), scaled to that same scene depth.

Frames the mapper could not register take a pose interpolated between their registered neighbours
(rotation slerp, centre linear; the clip's ends hold the nearest pose), with a warning naming them.
If too many are missing (``CameraSolveConfig.max_unregistered_fraction``, ``min_registered``) the run
stops with an error instead: a mostly interpolated camera would be worse than the static one.

The raw solve is cached in ``<out_dir>/.genmojo-cache/camera/solve-<key>.npz`` (as the optical flow is),
keyed by the frames, the feature masks, the solve's settings and pycolmap's version; an unreadable entry
is recomputed and one that cannot be written only warns. Interpolation and rescaling run after the cache,
so their settings never go stale in it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from genmojo_blender.core import bundle as fmt
from genmojo_blender.core.camera import interpolate_rigid

from ..config import CameraSolveConfig, check_section
from ..errors import InputError
from ..io.npz import UNREADABLE, write_npz_atomic

CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL")
CACHE_VERSION = 1
PYCOLMAP_HINT = "install the camera solver: pip install pycolmap==4.2.1 (requirements/cpu.txt)"


@dataclass(frozen=True)
class RawSolve:
    """What COLMAP found, in its own world and scale, per frame of the clip (T frames)."""

    K: np.ndarray  # (3, 3) the clip's one camera, at the frames' size
    distortion: np.ndarray  # (0,) or (1,): SIMPLE_RADIAL's k1
    registered: np.ndarray  # (T,) bool
    w2c: np.ndarray  # (T, 4, 4) world-to-camera (OpenCV axes); identity where not registered
    reproj_error_px: np.ndarray  # (T,) mean reprojection error of the frame's points; NaN where not registered
    num_points: np.ndarray  # (T,) int: triangulated background points the frame sees
    point_depth: np.ndarray  # (T,) median depth of those points; NaN where not registered
    max_depth: np.ndarray  # (T,) their largest depth; NaN where not registered
    camera_model: str


@dataclass(frozen=True)
class SolvedCameras:
    """The solve as the fit uses it: a camera for every frame, in scene units, frame 0 at the origin."""

    K: np.ndarray  # (T, 3, 3) at the frames' size
    c2w: np.ndarray  # (T, 4, 4) OpenCV axes
    registered: np.ndarray  # (T,) bool: False where the pose is interpolated
    reproj_error_px: np.ndarray  # (T,) NaN where not registered
    num_points: np.ndarray  # (T,) int
    scene_depth: float  # median background point depth (= the requested scene depth)
    max_depth: float  # deepest background point seen by any frame, in scene units
    camera_model: str
    distortion: np.ndarray  # (0,) or (1,)
    method: str = "colmap"  # or "blender": the file exported from Blender's camera solve
    origin: str = ""  # where a camera file came from (its own ``source``)

    @property
    def interpolated(self) -> list[int]:
        return np.flatnonzero(~self.registered).tolist()

    def solve_info(self, pixel_scale: float = 1.0) -> fmt.CameraSolveInfo:
        """The per-frame quality for the bundle's manifest (``camera.solve``), errors times ``pixel_scale``
        (from the solve's images to the clip's original pixels)."""
        return fmt.CameraSolveInfo(method=self.method, registered=[bool(r) for r in self.registered],
                                   error_px=[float(e) * pixel_scale if r and np.isfinite(e) else None
                                             for r, e in zip(self.registered, self.reproj_error_px)],
                                   points=[int(n) for n in self.num_points])

    def describe(self, pixel_scale: float = 1.0) -> str:
        """One line for the manifest and the log; errors times ``pixel_scale`` (see ``solve_info``)."""
        f = self.K[0, 0, 0], self.K[0, 1, 1]
        focal = f"focal {f[0]:.1f} px" if abs(f[0] - f[1]) < 1e-6 * f[0] else f"focal {f[0]:.1f} x {f[1]:.1f} px"
        err = self.reproj_error_px[self.registered & np.isfinite(self.reproj_error_px)] * pixel_scale
        what = f"COLMAP {self.camera_model}" if self.method == "colmap" else f"Blender camera solve, {self.origin}"
        text = (f"solved ({what}, {focal}, {int(self.registered.sum())}/{len(self.registered)} frames registered"
                + (f", reprojection error {float(np.mean(err)):.2f} px mean, {float(np.max(err)):.2f} px worst"
                   if err.size else "") + ")")
        if self.interpolated:
            text += f", interpolated frames {_frame_list(self.interpolated)}"
        return text


def _frame_list(frames: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(t) for t in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


def check_config(cfg: CameraSolveConfig) -> None:
    """Refuse unusable solve settings before any work (InputError naming the setting): the camera_solve
    section's FIELD_CHECKS, as ``config.validate`` applies them to a whole run's configuration."""
    check_section("camera_solve", cfg)


def import_pycolmap():
    """pycolmap, or an InputError saying how to install it (the solve is optional for the backend)."""
    try:
        import pycolmap
    except ImportError as e:
        raise InputError(f"--camera solve needs pycolmap, which cannot be imported ({e})", PYCOLMAP_HINT) from e
    return pycolmap


def feature_masks(object_masks: np.ndarray, background: np.ndarray | None, grow_px: int) -> np.ndarray:
    """(T, h, w) bool: where features may be extracted, i.e. away from every object.

    ``object_masks`` is (K, T, h, w) bool; each frame's union is dilated by ``grow_px`` (masks from a
    segmenter hug the object and its edge pixels still move with it). Where folder 000 gives a
    background mask (``background``, (T, h, w) bool), only its pixels count.
    """
    union = object_masks.any(0)
    if grow_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1, 2 * grow_px + 1))
        union = np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in union])
    allowed = ~union
    if background is not None:
        allowed &= background
    return allowed


def run_colmap(frames: np.ndarray, allowed: np.ndarray, cfg: CameraSolveConfig, workdir: Path,
               focal_px: float | None = None) -> RawSolve:
    """COLMAP on (T, h, w, 3) uint8 RGB ``frames`` with features only where ``allowed`` (T, h, w).

    ``focal_px`` (at the frames' size) fixes the focal length instead of estimating it.
    ``workdir`` receives COLMAP's images, masks and database.
    """
    pycolmap = import_pycolmap()
    T, h, w = frames.shape[:3]
    images, masks, sparse = workdir / "images", workdir / "masks", workdir / "sparse"
    for d in (images, masks, sparse):
        d.mkdir(parents=True, exist_ok=True)
    names = [f"{t:05d}.png" for t in range(T)]
    for t, name in enumerate(names):
        cv2.imwrite(str(images / name), cv2.cvtColor(np.ascontiguousarray(frames[t]), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(masks / f"{name}.png"), allowed[t].astype(np.uint8) * 255)  # COLMAP: <image>.png
    database = workdir / "database.db"
    previous_level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 2  # COLMAP's progress lines would flood the log; errors still show
    try:
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = cfg.camera_model
        reader.mask_path = str(masks)
        mapping = pycolmap.IncrementalPipelineOptions()
        if focal_px is not None:
            params = {"SIMPLE_PINHOLE": [focal_px, w / 2, h / 2], "PINHOLE": [focal_px, focal_px, w / 2, h / 2],
                      "SIMPLE_RADIAL": [focal_px, w / 2, h / 2, 0.0]}[cfg.camera_model]
            reader.camera_params = ",".join(f"{p:.10g}" for p in params)
            mapping.ba_refine_focal_length = False
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = cfg.num_threads
        extraction.sift.max_num_features = cfg.max_features
        pycolmap.extract_features(database, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = cfg.num_threads
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = cfg.overlap
        pairing.num_threads = cfg.num_threads
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  device=pycolmap.Device.cpu)
        mapping.num_threads = cfg.num_threads
        mapping.multiple_models = False
        mapping.min_model_size = cfg.min_registered
        mapping.random_seed = cfg.seed
        models = pycolmap.incremental_mapping(database, images, sparse, mapping)
    finally:
        pycolmap.logging.minloglevel = previous_level
    return _read_reconstruction(models, names, (h, w), cfg.camera_model)


def _read_reconstruction(models: dict, names: list[str], size: tuple[int, int], camera_model: str) -> RawSolve:
    """The largest of COLMAP's models as per-frame arrays (frames it lacks are unregistered)."""
    T = len(names)
    h, w = size
    registered = np.zeros(T, bool)
    w2c = np.repeat(np.eye(4)[None], T, 0)
    err = np.full(T, np.nan)
    count = np.zeros(T, np.int64)
    depth = np.full(T, np.nan)
    deepest = np.full(T, np.nan)
    K = np.array([[1.2 * max(w, h), 0, w / 2], [0, 1.2 * max(w, h), h / 2], [0, 0, 1.0]])
    distortion = np.zeros(1 if camera_model == "SIMPLE_RADIAL" else 0)
    if models:
        rec = max(models.values(), key=lambda r: r.num_reg_images())
        index = {name: t for t, name in enumerate(names)}
        camera = next(iter(rec.cameras.values()))
        K = np.asarray(camera.calibration_matrix(), np.float64)
        if camera_model == "SIMPLE_RADIAL":
            distortion = np.asarray(camera.params, np.float64)[3:4]
        for image in rec.images.values():
            if not image.has_pose or image.name not in index:
                continue
            t = index[image.name]
            pose = np.eye(4)
            pose[:3] = np.asarray(image.cam_from_world().matrix(), np.float64)
            seen = [p for p in image.points2D if p.has_point3D()]
            if not seen:
                continue
            xy = np.array([p.xy for p in seen], np.float64)
            world = np.array([rec.points3D[p.point3D_id].xyz for p in seen], np.float64)
            cam = world @ pose[:3, :3].T + pose[:3, 3]
            cam_camera = rec.cameras[image.camera_id]
            projected = np.asarray(cam_camera.img_from_cam(cam, check_cheirality=False), np.float64)
            registered[t] = True
            w2c[t] = pose
            err[t] = float(np.mean(np.linalg.norm(projected - xy, axis=1)))
            count[t] = len(seen)
            depth[t] = float(np.median(cam[:, 2]))
            deepest[t] = float(np.max(cam[:, 2]))
    return RawSolve(K=K, distortion=distortion, registered=registered, w2c=w2c, reproj_error_px=err,
                    num_points=count, point_depth=depth, max_depth=deepest, camera_model=camera_model)


def check_registration(registered: np.ndarray, cfg: CameraSolveConfig, warn: Callable[[str], None],
                       what: str = "the camera solve") -> None:
    """Refuse a solve with too few registered frames (InputError); warn about the interpolated ones."""
    T = len(registered)
    n = int(registered.sum())
    missing = np.flatnonzero(~registered).tolist()
    if n < cfg.min_registered or len(missing) > cfg.max_unregistered_fraction * T:
        raise InputError(
            f"{what} registered {n} of {T} frames"
            + (f" (not frames {_frame_list(missing)})" if missing else "")
            + f"; at most {cfg.max_unregistered_fraction:.0%} may be missing and at least {cfg.min_registered} found",
            "the background needs texture that stays in view and a camera that moves (not only rotates) between "
            "frames; check that the object masks cover every moving thing, pass MegaSAM's cameras with --cam_path, "
            "or use --camera virtual (raise camera_solve.max_unregistered_fraction to accept more interpolation)")
    if missing:
        warn(f"warning: {what} did not register frames {_frame_list(missing)} of {T}; "
             "their cameras are interpolated between the nearest registered frames")


def complete_solve(raw: RawSolve, cfg: CameraSolveConfig, scene_depth: float,
                   warn: Callable[[str], None]) -> SolvedCameras:
    """Every frame's camera from ``raw``: missing frames interpolated (with a warning) or the run refused,
    the world moved to frame 0's camera and scaled to ``scene_depth``."""
    T = len(raw.registered)
    check_registration(raw.registered, cfg, warn)
    c2w = interpolate_rigid(np.linalg.inv(raw.w2c), raw.registered)
    scale = scene_depth / float(np.median(raw.point_depth[raw.registered]))
    to_first = np.linalg.inv(c2w[0])
    c2w = to_first[None] @ c2w
    c2w[:, :3, 3] *= scale
    return SolvedCameras(K=np.repeat(raw.K[None], T, 0), c2w=c2w, registered=raw.registered.copy(),
                         reproj_error_px=raw.reproj_error_px.copy(), num_points=raw.num_points.copy(),
                         scene_depth=float(scene_depth),
                         max_depth=float(np.nanmax(raw.max_depth[raw.registered]) * scale),
                         camera_model=raw.camera_model, distortion=raw.distortion.copy())


# ---------------------------------------------------------------------------------------------
# cache


def solve_cache_key(frames: np.ndarray, allowed: np.ndarray, cfg: CameraSolveConfig, focal_px: float | None,
                    version: str) -> str:
    """A digest of what the raw solve depends on: frames, feature masks, the settings COLMAP sees,
    the fixed focal length, pycolmap's version and the cache format's."""
    settings = {"v": CACHE_VERSION, "pycolmap": version, "shape": list(frames.shape),
                "model": cfg.camera_model, "features": cfg.max_features, "overlap": cfg.overlap,
                "min_registered": cfg.min_registered, "seed": cfg.seed, "focal": focal_px}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(np.ascontiguousarray(frames).tobytes())
    h.update(np.packbits(np.ascontiguousarray(allowed)).tobytes())
    return h.hexdigest()[:32]


_RAW_FIELDS = ("K", "distortion", "registered", "w2c", "reproj_error_px", "num_points", "point_depth", "max_depth")


def _read_cached(path: Path, T: int) -> RawSolve:
    with np.load(path, allow_pickle=False) as z:
        raw = RawSolve(**{k: z[k] for k in _RAW_FIELDS}, camera_model=str(z["camera_model"]))
    if raw.K.shape != (3, 3) or raw.w2c.shape != (T, 4, 4) or raw.registered.shape != (T,) \
            or raw.registered.dtype != bool:
        raise ValueError("arrays of the wrong shape")
    return raw


def _write_cached(path: Path, raw: RawSolve) -> None:
    write_npz_atomic(path, ".solve-", **{k: getattr(raw, k) for k in _RAW_FIELDS}, camera_model=raw.camera_model)


def cached_raw_solve(frames: np.ndarray, allowed: np.ndarray, cfg: CameraSolveConfig, cache_dir: Path | None,
                     focal_px: float | None = None, warn: Callable[[str], None] = lambda m: None,
                     solver: Callable[..., RawSolve] = run_colmap) -> tuple[RawSolve, bool]:
    """``solver`` (COLMAP) through the on-disk cache; returns (raw solve, whether it came from the cache)."""
    pycolmap = import_pycolmap()
    T = frames.shape[0]
    path = None
    if cache_dir is not None:
        key = solve_cache_key(frames, allowed, cfg, focal_px, pycolmap.__version__)
        path = Path(cache_dir) / f"solve-{key}.npz"
        if path.is_file():
            try:
                return _read_cached(path, T), True
            except UNREADABLE as e:  # empty, truncated or damaged: recomputed, as the flow cache's
                warn(f"warning: ignoring the unreadable camera-solve cache {path} ({e})")
    with tempfile.TemporaryDirectory(prefix="genmojo-colmap-") as tmp:
        raw = solver(frames, allowed, cfg, Path(tmp), focal_px=focal_px)
    if path is not None:
        try:
            _write_cached(path, raw)
        except OSError as e:
            warn(f"warning: could not cache the camera solve in {path.parent} ({e}); the run continues")
    return raw, False


def solve_cameras(frames: np.ndarray, object_masks: np.ndarray, background: np.ndarray | None,
                  cfg: CameraSolveConfig, scene_depth: float, cache_dir: Path | None = None,
                  focal_px: float | None = None,
                  warn: Callable[[str], None] = lambda m: None) -> tuple[SolvedCameras, bool]:
    """The clip's cameras from its background: (T, h, w, 3) uint8 frames, (K, T, h, w) object masks,
    the optional (T, h, w) background masks of folder 000. Returns the cameras and whether the raw solve
    was cached. Raises InputError when too few frames register."""
    check_config(cfg)
    allowed = feature_masks(object_masks, background, cfg.mask_grow_px)
    raw, hit = cached_raw_solve(frames, allowed, cfg, cache_dir, focal_px=focal_px, warn=warn)
    return complete_solve(raw, cfg, scene_depth, warn), hit
