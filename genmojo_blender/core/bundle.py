"""The result bundle: the one typed value that crosses from the backend into Blender.

The backend writes it, the extension reads it. This module is the single source of truth for its
layout and is deliberately numpy + standard library only, so that it runs inside Blender, inside the
backend, and in plain tests. The on-disk format is documented in ``docs/bundle-format.md``.

Layout of a bundle folder (schema version 1)::

    manifest.json
    camera.npz                       K (T,3,3) float64, c2w (T,4,4) float64 (OpenCV camera axes)
    objects/<id>/canonical.ply       canonical Gaussians, standard 3DGS vertex fields
    objects/<id>/frames.npz          per-frame baked Gaussians (see FRAME_ARRAYS)
    background/gaussians.npz         optional (background mode): static world-space Gaussians
    background/background.ply        the same as a standard 3DGS PLY (world space)
    preview/input_view.mp4           input-view preview video

Every path inside ``manifest.json`` is relative and must stay inside the bundle folder.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import bounded_io

FORMAT_NAME = "genmojo-bundle"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Per-frame arrays of objects/<id>/frames.npz: name -> (trailing shape, meaning).
# Leading dimensions are always (T, N): T frames of the clip, N Gaussians of the object.
FRAME_ARRAYS: dict[str, tuple[tuple[int, ...], str]] = {
    "means": ((3,), "centre in world space (scene units)"),
    "quats": ((4,), "rotation, unit quaternion w, x, y, z (world space)"),
    "log_scales": ((3,), "natural log of the three standard deviations (scene units)"),
    "colors": ((3,), "RGB in [0, 1], display-referred sRGB like the input frames"),
    "opacities": ((), "opacity in [0, 1] (already through the sigmoid)"),
}

# Arrays of background/gaussians.npz (background mode): name -> (trailing shape, meaning); leading
# dimension (N,). The background is static: one set of Gaussians for every frame, in world space.
BACKGROUND_ARRAYS: dict[str, tuple[tuple[int, ...], str]] = {
    "means": ((3,), "centre in world space (scene units)"),
    "quats": ((4,), "rotation, unit quaternion w, x, y, z"),
    "log_scales": ((3,), "natural log of the three standard deviations (scene units)"),
    "colors": ((3,), "RGB in [0, 1], display-referred sRGB like the input frames"),
    "opacities": ((), "opacity in [0, 1]"),
}

CAMERA_MODELS = ("pinhole",)
CAMERA_CONVENTION = "opencv"  # x right, y down, z forward; c2w maps camera -> world

# What a reader accepts, checked before any array is inflated (the file-level caps are in bounded_io).
MAX_FRAMES = 100_000
MAX_OBJECTS = 999  # ids are three digits
MAX_GAUSSIANS = 50_000_000  # per object, and in the background

_OBJECT_ID = re.compile(r"^[0-9]{3}$")
# A bundle's folder name (the backend's --save_name): a plain, portable name, never a path.
RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(ValueError):
    """A bundle is malformed, incomplete, or from an unsupported schema version."""


@dataclass(frozen=True)
class ClipInfo:
    """What the bundle was made from: image size, timing and the frame names in order."""

    width: int
    height: int
    fps: float
    frame_names: list[str]
    frame_numbers: list[int]
    source: str = ""

    @property
    def frame_count(self) -> int:
        return len(self.frame_names)


@dataclass(frozen=True)
class CameraSolveInfo:
    """How well a solved camera fits the footage, per frame (manifest ``camera.solve``, optional).

    ``method`` is ``colmap`` (``--camera solve``) or ``blender`` (Blender's own camera solve).
    ``error_px[t]`` is frame t's mean reprojection error in pixels of the solve's images, None where
    the solver did not register the frame (its camera is interpolated); ``points[t]`` how many
    reconstructed points the frame sees (0 where unknown)."""

    method: str
    registered: list[bool]
    error_px: list[float | None]
    points: list[int]

    def summary(self, worst: int = 3) -> "SolveSummary":
        """Min / mean / max of the registered frames' errors and the ``worst`` frames (largest first)."""
        known = [(e, t) for t, e in enumerate(self.error_px) if e is not None]
        errors = [e for e, _ in known]
        ranked = [t for _, t in sorted(known, key=lambda et: (-et[0], et[1]))[:worst]]
        return SolveSummary(min_px=min(errors) if errors else None,
                            mean_px=sum(errors) / len(errors) if errors else None,
                            max_px=max(errors) if errors else None, worst_frames=ranked,
                            interpolated=[t for t, r in enumerate(self.registered) if not r])


@dataclass(frozen=True)
class SolveSummary:
    """``CameraSolveInfo.summary``: the numbers the Result panel shows (None without any registered frame)."""

    min_px: float | None
    mean_px: float | None
    max_px: float | None
    worst_frames: list[int]
    interpolated: list[int]


@dataclass(frozen=True)
class CameraInfo:
    """How to read camera.npz. ``source`` says where the camera came from (virtual or a file);
    ``solve`` is the per-frame quality of a solved camera (None for virtual and MegaSAM cameras)."""

    file: str = "camera.npz"
    model: str = "pinhole"
    convention: str = CAMERA_CONVENTION
    static: bool = True
    source: str = "virtual"
    near: float = 0.01
    far: float = 100.0
    solve: CameraSolveInfo | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """One reconstructed object: its files, its display name and colour, and when it is visible."""

    id: str
    name: str
    color: tuple[float, float, float]
    num_gaussians: int
    canonical_ply: str
    frames: str
    visible: list[bool]


@dataclass(frozen=True)
class BackgroundInfo:
    """Background mode's static background: its files and how it was made (manifest ``background``).

    ``source`` says what it was lifted from, ``mask`` which pixels it was fitted to,
    ``reference_frame`` which frame the inpainted image shows."""

    gaussians: str
    ply: str
    num_gaussians: int
    reference_frame: int = 0
    source: str = ""
    mask: str = ""
    final_losses: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """What ran to produce the bundle, for reproducibility and for the UI."""

    optimizer: str
    preset: str
    device: str
    iterations: int
    guidance: str
    depth_source: str
    duration_s: float
    final_losses: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    holdout_frames: list[int] = field(default_factory=list)  # frames withheld from the fit (for evaluation)
    generator: str = "genmojo-backend"
    generator_version: str = "0.1.0"


@dataclass(frozen=True)
class Manifest:
    """The parsed, validated ``manifest.json``."""

    clip: ClipInfo
    camera: CameraInfo
    objects: list[ObjectInfo]
    run: RunInfo
    previews: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT_NAME
    schema_version: int = SCHEMA_VERSION
    background: BackgroundInfo | None = None  # optional: only bundles of background mode have one

    def to_json(self) -> str:
        d = asdict(self)
        if self.background is None:
            del d["background"]  # absent rather than null, so the manifest reads as before
        if self.camera.solve is None:
            del d["camera"]["solve"]  # the same for the camera's optional solve quality
        return json.dumps(d, indent=2, sort_keys=False, allow_nan=False)


@dataclass(frozen=True)
class CameraTrack:
    """Per-frame pinhole intrinsics and camera-to-world matrices (OpenCV axes)."""

    K: np.ndarray  # (T, 3, 3)
    c2w: np.ndarray  # (T, 4, 4)
    width: int
    height: int


@dataclass(frozen=True)
class StaticGaussians:
    """Gaussians that do not move (the background): every array has leading shape (N,)."""

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])


@dataclass(frozen=True)
class ObjectFrames:
    """Baked per-frame Gaussians of one object; every array has leading shape (T, N)."""

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[1])


# --------------------------------------------------------------------------------------------
# validation helpers


def _require(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise BundleError(f"{where}: {msg}")


def safe_member(root: Path, rel: str, where: str) -> Path:
    """Resolve ``rel`` inside ``root``; refuse absolute paths and anything escaping the bundle."""
    _require(isinstance(rel, str) and rel != "", where, "expected a non-empty relative path")
    pure = PurePosixPath(rel)
    _require(not pure.is_absolute() and "\\" not in rel and ":" not in rel, where,
             f"path {rel!r} must be relative, with forward slashes")
    _require(".." not in pure.parts, where, f"path {rel!r} must not leave the bundle folder")
    full = (root / Path(*pure.parts)).resolve()
    root_resolved = root.resolve()
    _require(full == root_resolved or root_resolved in full.parents, where,
             f"path {rel!r} resolves outside the bundle folder")
    return full


def _typed(d: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    _require(isinstance(d, dict), where, "expected a JSON object")
    _require(key in d, where, f"missing key {key!r}")
    val = d[key]
    if typ is float:
        ok = isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val)
    elif typ is int:
        ok = isinstance(val, int) and not isinstance(val, bool)
    else:
        ok = isinstance(val, typ)
    _require(ok, f"{where}.{key}", f"expected {getattr(typ, '__name__', typ)}, got {type(val).__name__}")
    return val


def _holdout(r: dict, where: str) -> list[int]:
    frames = r.get("holdout_frames", [])
    _require(isinstance(frames, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                              for t in frames),
             f"{where}.holdout_frames", "expected a list of frame indices")
    return list(frames)


def parse_manifest(data: Any, where: str = MANIFEST_NAME) -> Manifest:
    """Validate a decoded manifest against schema version 1 and return it typed.

    Raises BundleError naming the offending key. Never trusts types or sizes from the file.
    """
    _require(isinstance(data, dict), where, "expected a JSON object at the top level")
    fmt = _typed(data, "format", str, where)
    _require(fmt == FORMAT_NAME, where, f"not a GenMOJO bundle (format {fmt!r})")
    ver = _typed(data, "schema_version", int, where)
    _require(ver == SCHEMA_VERSION, where,
             f"schema version {ver} is not supported by this version (expects {SCHEMA_VERSION}); "
             "update the extension or re-run the backend")

    c = _typed(data, "clip", dict, where)
    width = _typed(c, "width", int, f"{where}.clip")
    height = _typed(c, "height", int, f"{where}.clip")
    _require(0 < width <= 16384 and 0 < height <= 16384, f"{where}.clip", "image size out of range")
    fps = _typed(c, "fps", float, f"{where}.clip")
    _require(0 < fps <= 1000, f"{where}.clip.fps", f"fps {fps} out of range")
    names = _typed(c, "frame_names", list, f"{where}.clip")
    numbers = _typed(c, "frame_numbers", list, f"{where}.clip")
    _require(0 < len(names) <= MAX_FRAMES, f"{where}.clip.frame_names",
             f"expected 1 to {MAX_FRAMES} frames, got {len(names)}")
    _require(all(isinstance(n, str) for n in names), f"{where}.clip.frame_names", "expected strings")
    _require(len(numbers) == len(names) and all(isinstance(n, int) and not isinstance(n, bool)
                                                for n in numbers),
             f"{where}.clip.frame_numbers", "expected one integer per frame name")
    clip = ClipInfo(width=width, height=height, fps=float(fps), frame_names=list(names),
                    frame_numbers=list(numbers), source=str(c.get("source", "")))
    T = clip.frame_count

    cam = _typed(data, "camera", dict, where)
    model = _typed(cam, "model", str, f"{where}.camera")
    _require(model in CAMERA_MODELS, f"{where}.camera.model", f"unsupported camera model {model!r}")
    conv = _typed(cam, "convention", str, f"{where}.camera")
    _require(conv == CAMERA_CONVENTION, f"{where}.camera.convention", f"expected {CAMERA_CONVENTION!r}")
    near = _typed(cam, "near", float, f"{where}.camera")
    far = _typed(cam, "far", float, f"{where}.camera")
    _require(0 < near < far, f"{where}.camera", "need 0 < near < far")
    camera = CameraInfo(file=_typed(cam, "file", str, f"{where}.camera"), model=model,
                        convention=conv, static=bool(_typed(cam, "static", bool, f"{where}.camera")),
                        source=_typed(cam, "source", str, f"{where}.camera"),
                        near=float(near), far=float(far),
                        solve=_camera_solve(cam.get("solve"), T, f"{where}.camera.solve"))

    objs = _typed(data, "objects", list, where)
    _require(len(objs) > 0, f"{where}.objects", "no objects")
    _require(len(objs) <= MAX_OBJECTS, f"{where}.objects", f"{len(objs)} objects, at most {MAX_OBJECTS}")
    objects = []
    seen = set()
    for i, o in enumerate(objs):
        ow = f"{where}.objects[{i}]"
        oid = _typed(o, "id", str, ow)
        _require(bool(_OBJECT_ID.match(oid)), f"{ow}.id", f"expected three digits, got {oid!r}")
        _require(oid not in seen, f"{ow}.id", f"duplicate object id {oid}")
        seen.add(oid)
        color = _typed(o, "color", list, ow)
        _require(len(color) == 3 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in color),
                 f"{ow}.color", "expected three numbers in [0, 1]")
        n = _typed(o, "num_gaussians", int, ow)
        _require(0 < n <= MAX_GAUSSIANS, f"{ow}.num_gaussians", f"{n} out of range")
        visible = _typed(o, "visible", list, ow)
        _require(len(visible) == T and all(isinstance(v, bool) for v in visible), f"{ow}.visible",
                 f"expected {T} booleans, one per frame")
        objects.append(ObjectInfo(id=oid, name=_typed(o, "name", str, ow),
                                  color=(float(color[0]), float(color[1]), float(color[2])),
                                  num_gaussians=n, canonical_ply=_typed(o, "canonical_ply", str, ow),
                                  frames=_typed(o, "frames", str, ow), visible=list(visible)))

    r = _typed(data, "run", dict, where)
    losses = r.get("final_losses", {})
    _require(isinstance(losses, dict), f"{where}.run.final_losses", "expected an object")
    run = RunInfo(optimizer=_typed(r, "optimizer", str, f"{where}.run"),
                  preset=_typed(r, "preset", str, f"{where}.run"),
                  device=_typed(r, "device", str, f"{where}.run"),
                  iterations=_typed(r, "iterations", int, f"{where}.run"),
                  guidance=_typed(r, "guidance", str, f"{where}.run"),
                  depth_source=_typed(r, "depth_source", str, f"{where}.run"),
                  duration_s=float(_typed(r, "duration_s", float, f"{where}.run")),
                  final_losses={str(k): float(v) for k, v in losses.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)},
                  config=r.get("config", {}) if isinstance(r.get("config", {}), dict) else {},
                  command=[str(a) for a in r.get("command", [])] if isinstance(r.get("command", []), list) else [],
                  holdout_frames=_holdout(r, f"{where}.run"),
                  generator=str(r.get("generator", "genmojo-backend")),
                  generator_version=str(r.get("generator_version", "")))

    previews = data.get("previews", {})
    _require(isinstance(previews, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in previews.items()),
             f"{where}.previews", "expected an object of name -> relative path")
    return Manifest(clip=clip, camera=camera, objects=objects, run=run, previews=dict(previews),
                    created=str(data.get("created", "")), format=fmt, schema_version=ver,
                    background=_background(data.get("background"), T, f"{where}.background"))


def _camera_solve(s: Any, T: int, where: str) -> CameraSolveInfo | None:
    """The optional ``camera.solve`` entry (absent in bundles of virtual or MegaSAM cameras)."""
    if s is None:
        return None
    _require(isinstance(s, dict), where, "expected a JSON object")
    method = _typed(s, "method", str, where)
    registered = _typed(s, "registered", list, where)
    errors = _typed(s, "error_px", list, where)
    points = _typed(s, "points", list, where)
    _require(len(registered) == T and all(isinstance(v, bool) for v in registered), f"{where}.registered",
             f"expected {T} booleans, one per frame")
    _require(len(errors) == T and all(e is None or (isinstance(e, (int, float)) and not isinstance(e, bool)
                                                    and math.isfinite(e) and e >= 0) for e in errors),
             f"{where}.error_px", f"expected {T} entries, each a pixel error >= 0 or null")
    _require(len(points) == T and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in points),
             f"{where}.points", f"expected {T} counts >= 0")
    return CameraSolveInfo(method=method, registered=list(registered),
                           error_px=[None if e is None else float(e) for e in errors], points=list(points))


def _background(b: Any, T: int, where: str) -> BackgroundInfo | None:
    """The optional ``background`` entry (absent or null in bundles without background mode)."""
    if b is None:
        return None
    _require(isinstance(b, dict), where, "expected a JSON object")
    n = _typed(b, "num_gaussians", int, where)
    _require(0 < n <= MAX_GAUSSIANS, f"{where}.num_gaussians", f"{n} out of range")
    ref = b.get("reference_frame", 0)
    _require(isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < T, f"{where}.reference_frame",
             f"expected a frame index in 0..{T - 1}")
    losses = b.get("final_losses", {})
    _require(isinstance(losses, dict), f"{where}.final_losses", "expected an object")
    return BackgroundInfo(gaussians=_typed(b, "gaussians", str, where), ply=_typed(b, "ply", str, where),
                          num_gaussians=n, reference_frame=ref, source=str(b.get("source", "")),
                          mask=str(b.get("mask", "")),
                          final_losses={str(k): float(v) for k, v in losses.items()
                                        if isinstance(v, (int, float)) and not isinstance(v, bool)})


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Bundle:
    """An opened bundle: its folder and validated manifest. Arrays are loaded on demand."""

    root: Path
    manifest: Manifest

    def path(self, rel: str, where: str = "bundle") -> Path:
        return safe_member(self.root, rel, where)

    def load_camera(self) -> CameraTrack:
        m = self.manifest
        p = self.path(m.camera.file, "manifest.camera.file")
        T = m.clip.frame_count
        arrays = _load_npz(p, {"K": (T, 3, 3), "c2w": (T, 4, 4)})
        K, c2w = arrays["K"].astype(np.float64), arrays["c2w"].astype(np.float64)
        _require(K.shape == (T, 3, 3), str(p), f"K has shape {K.shape}, expected ({T}, 3, 3)")
        _require(c2w.shape == (T, 4, 4), str(p), f"c2w has shape {c2w.shape}, expected ({T}, 4, 4)")
        _require(bool(np.isfinite(K).all() and np.isfinite(c2w).all()), str(p), "non-finite values")
        _require(bool((K[:, 0, 0] > 0).all() and (K[:, 1, 1] > 0).all()), str(p), "focal lengths must be > 0")
        return CameraTrack(K=K, c2w=c2w, width=m.clip.width, height=m.clip.height)

    def load_background(self) -> StaticGaussians | None:
        """The background's Gaussians (background mode), or None when the bundle has no background."""
        info = self.manifest.background
        if info is None:
            return None
        p = self.path(info.gaussians, "manifest.background.gaussians")
        arrays = _load_npz(p, {k: (info.num_gaussians, *trail) for k, (trail, _) in BACKGROUND_ARRAYS.items()})
        out = {}
        for name, (trail, _) in BACKGROUND_ARRAYS.items():
            a = arrays[name]
            _require(a.shape == (info.num_gaussians, *trail), str(p),
                     f"{name} has shape {a.shape}, expected {(info.num_gaussians, *trail)}")
            _require(bool(np.isfinite(a).all()), str(p), f"{name} contains NaN or infinity")
            out[name] = a.astype(np.float32, copy=False)
        return StaticGaussians(**out)

    def load_frames(self, obj: ObjectInfo) -> ObjectFrames:
        p = self.path(obj.frames, f"manifest.objects[{obj.id}].frames")
        T, N = self.manifest.clip.frame_count, obj.num_gaussians
        arrays = _load_npz(p, {k: (T, N, *trail) for k, (trail, _) in FRAME_ARRAYS.items()})
        out = {}
        for name, (trail, _) in FRAME_ARRAYS.items():
            a = arrays[name]
            _require(a.shape == (T, N, *trail), str(p),
                     f"{name} has shape {a.shape}, expected {(T, N, *trail)}")
            _require(bool(np.isfinite(a).all()), str(p), f"{name} contains NaN or infinity")
            out[name] = a.astype(np.float32, copy=False)
        return ObjectFrames(**out)


def _load_npz(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The named arrays, each of its expected shape and a plain numeric dtype, checked from the
    file's headers before anything is inflated (``bounded_io.read_npz``)."""
    _require(path.is_file(), str(path), "file missing from the bundle")
    try:
        return bounded_io.read_npz(path, expected)
    except bounded_io.Refused as e:
        raise BundleError(f"{path}: {e}") from None
    except OSError as e:
        raise BundleError(f"{path}: unreadable npz ({e})") from None


def open_bundle(folder: str | os.PathLike) -> Bundle:
    """Open and validate a bundle folder (or its manifest.json). Raises BundleError with the reason."""
    root = Path(folder)
    if root.name == MANIFEST_NAME:
        root = root.parent
    mpath = root / MANIFEST_NAME
    _require(mpath.is_file(), str(root), f"no {MANIFEST_NAME}: not a GenMOJO result folder")
    try:
        data = bounded_io.read_json(mpath)
    except bounded_io.Refused as e:
        raise BundleError(f"{mpath}: {e}") from None
    except OSError as e:
        raise BundleError(f"{mpath}: cannot be read ({e})") from None
    manifest = parse_manifest(data, str(mpath))
    bundle = Bundle(root=root, manifest=manifest)
    # every referenced file must be inside the folder and present
    refs = [("camera.file", manifest.camera.file)]
    for o in manifest.objects:
        refs += [(f"objects[{o.id}].frames", o.frames), (f"objects[{o.id}].canonical_ply", o.canonical_ply)]
    refs += [(f"previews.{k}", v) for k, v in manifest.previews.items()]
    if manifest.background is not None:
        refs += [("background.gaussians", manifest.background.gaussians), ("background.ply", manifest.background.ply)]
    for where, rel in refs:
        p = bundle.path(rel, f"{mpath}: {where}")
        _require(p.is_file(), f"{mpath}: {where}", f"{rel} is missing from the bundle")
    return bundle
