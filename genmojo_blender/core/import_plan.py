"""What importing a result bundle into Blender means, computed without ``bpy``.

``plan_import`` opens and fully loads a bundle (every array is read and validated before Blender's
data is touched, so a corrupt bundle can never leave a half-built scene) and turns it into plain
numbers: names, the root transform, per-object vertex positions per frame, point attributes, camera
keys, scene timing and the plate to show behind the camera. ``blender/importer.py`` only copies these
numbers into Blender data.

Frame mapping: clip frame ``i`` (0-based, the i-th entry of ``manifest.clip.frame_names``) is shown
at Blender frame ``FRAME_START + i``, i.e. 1..T.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import camera as cam
from . import surface as surf
from .bundle import Bundle, BundleError, CameraSolveInfo, open_bundle

FRAME_START = 1
MOVIE_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".mxf", ".ogv")
# Shared prefix of every Blender name the importer creates, so results are easy to find.
COLLECTION_PREFIX = "GenMOJO "


# How an object is brought into Blender. Every representation keeps the per-frame motion as shape
# keys on one object with constant topology, so each of them exports to glTF and FBX.
REPRESENTATIONS = {
    "POINTS": "one vertex per Gaussian, drawn as coloured points",
    "SPLATS": "one vertex per Gaussian, drawn as coloured, translucent ellipsoids (the splat look)",
    "MESH": "a closed surface around the Gaussians whose vertices follow their motion",
}
DEFAULT_REPRESENTATION = "POINTS"


class ImportOptionError(ValueError):
    """An import option is invalid (e.g. an unknown representation or object id)."""


def parse_representations(spec: str, object_ids: list[str] | None = None) -> dict[str, str]:
    """Per-object representations from text like ``"001=MESH, 002=splats"`` (case-insensitive).

    Object ids may be written without leading zeros (``2=MESH``). With ``object_ids`` given, ids
    that the result does not have are refused, so a typo is never silently ignored.
    """
    out: dict[str, str] = {}
    for part in (spec or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip().upper()
        if not sep or not key.isdigit() or len(key) > 3:
            raise ImportOptionError(f"{part!r}: expected <object id>=<representation>, e.g. 001=MESH")
        if value not in REPRESENTATIONS:
            raise ImportOptionError(f"{part!r}: unknown representation {value!r} "
                                    f"(choose from {', '.join(REPRESENTATIONS)})")
        oid = f"{int(key):03d}"
        if object_ids is not None and oid not in object_ids:
            raise ImportOptionError(f"{part!r}: the result has no object {oid} "
                                    f"(it has {', '.join(object_ids)})")
        out[oid] = value
    return out


@dataclass
class SurfacePlan:
    """A mesh with constant topology whose vertices move with an object's Gaussians."""

    positions: np.ndarray  # (T, V, 3) float32, bundle world
    face_sizes: np.ndarray  # (F,) int32
    face_vertices: np.ndarray  # (sum face_sizes,) int32
    colors_srgb: np.ndarray  # (V, 3) float32

    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[1])


def blender_frame(clip_index: int) -> int:
    """The Blender frame that shows clip frame ``clip_index`` (0-based)."""
    return FRAME_START + int(clip_index)


def shape_key_weight_keys(frame_index: int, frame_count: int) -> list[tuple[int, float]]:
    """(Blender frame, weight) keys for the shape key of ``frame_index``.

    The weight is 1 exactly on its own frame and 0 on every other whole frame: a 0 key on the
    previous frame (if any), 1 on its frame, 0 on the next frame (if any). The importer keys them
    LINEAR, so between two frames the two keys cross-fade with weights summing to 1. Constant
    extrapolation holds the first and last values outside the keyed range, so the first key stays
    on before frame 1 and the last key stays on after the last frame.
    """
    f = blender_frame(frame_index)
    keys = []
    if frame_index > 0:
        keys.append((f - 1, 0.0))
    keys.append((f, 1.0))
    if frame_index < frame_count - 1:
        keys.append((f + 1, 0.0))
    return keys


def visibility_keys(visible: list[bool]) -> list[tuple[int, bool]]:
    """Keys for an object's hidden state: one key wherever visibility changes (plus the first frame)."""
    keys = []
    prev = None
    for i, v in enumerate(visible):
        if v != prev:
            keys.append((blender_frame(i), bool(v)))
            prev = v
    return keys


def shape_key_name(frame_index: int) -> str:
    """Shape key names follow Blender frames: ``frame_0001`` is shown at frame 1."""
    return f"frame_{blender_frame(frame_index):04d}"


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB display values in [0, 1] to scene-linear (IEC 61966-2-1), for float colour attributes."""
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


@dataclass
class ObjectPlan:
    """One point-cloud object: a vertex per Gaussian, positions per frame, static point attributes."""

    id: str
    name: str  # Blender object/mesh name
    label: str  # name from the manifest
    color: tuple[float, float, float]
    positions: np.ndarray  # (T, N, 3) float32, bundle world (OpenCV axes)
    colors_srgb: np.ndarray  # (N, 3) float32 at frame 0
    opacity: np.ndarray  # (N,) float32 at frame 0
    scale: np.ndarray  # (N,) float32, mean standard deviation at frame 0 (scene units)
    visible: list[bool]
    sigmas: np.ndarray | None = None  # (N, 3) float32, standard deviations at frame 0
    rotations: np.ndarray | None = None  # (N, 4) float32, w x y z at frame 0

    @property
    def num_points(self) -> int:
        return int(self.positions.shape[1])


BACKGROUND_COLOR = (0.55, 0.55, 0.55)  # viewport object colour of the background


@dataclass
class BackgroundPlan:
    """Background mode's static background: one vertex per Gaussian, never moving (no shape keys),
    with the same point attributes as an object's points."""

    name: str
    positions: np.ndarray  # (N, 3) float32, bundle world
    colors_srgb: np.ndarray  # (N, 3) float32
    opacity: np.ndarray  # (N,) float32
    scale: np.ndarray  # (N,) float32, mean standard deviation
    sigmas: np.ndarray  # (N, 3) float32
    rotations: np.ndarray  # (N, 4) float32, w x y z
    source: str = ""

    @property
    def num_points(self) -> int:
        return int(self.positions.shape[0])

    def as_points(self, frame_count: int) -> ObjectPlan:
        """The same points as an ``ObjectPlan`` holding one frame (for the point-mesh builder)."""
        return ObjectPlan(id="", name=self.name, label="background", color=BACKGROUND_COLOR,
                          positions=self.positions[None], colors_srgb=self.colors_srgb, opacity=self.opacity,
                          scale=self.scale, visible=[True] * frame_count, sigmas=self.sigmas,
                          rotations=self.rotations)


@dataclass
class CameraPlan:
    """A camera keyed per frame. ``local_matrices`` are relative to the result root (OpenCV world)."""

    name: str
    local_matrices: np.ndarray  # (T, 4, 4) Blender camera pose in the bundle world
    locations: np.ndarray  # (T, 3)
    quaternions: np.ndarray  # (T, 4) w, x, y, z, sign-continuous
    lens: np.ndarray  # (T,) mm
    shift_x: np.ndarray  # (T,)
    shift_y: np.ndarray  # (T,)
    sensor_width: float
    clip_start: float
    clip_end: float
    static_pose: bool
    static_intrinsics: bool
    solve: CameraSolveInfo | None = None  # a solved camera's per-frame error (manifest camera.solve)


@dataclass
class PlatePlan:
    """The footage to show behind the camera: a movie file or the first file of an image sequence."""

    path: str
    kind: str  # "MOVIE" or "SEQUENCE"
    exists: bool
    frame_offset: int  # source frame shown at Blender frame 1 (movies; 0 for sequences)
    contiguous: bool  # the bundle's frames are consecutive source frames


@dataclass
class ScenePlan:
    """Render settings that make Blender match the clip."""

    width: int
    height: int
    fps: int
    fps_base: float
    frame_start: int
    frame_end: int


@dataclass
class ImportPlan:
    """Everything the Blender side creates for one result."""

    bundle_root: str  # resolved folder path; identifies the result for re-import
    result_name: str
    collection_name: str
    root_name: str
    root_matrix: np.ndarray  # (4, 4) OpenCV world -> Blender world
    scene: ScenePlan
    camera: CameraPlan
    objects: list[ObjectPlan]
    plate: PlatePlan | None
    warnings: list[str] = field(default_factory=list)
    background: BackgroundPlan | None = None  # background mode's static background, if the bundle has one

    @property
    def frame_count(self) -> int:
        return self.scene.frame_end - self.scene.frame_start + 1


def _plate(bundle: Bundle) -> PlatePlan | None:
    clip = bundle.manifest.clip
    src = clip.source.strip()
    if not src:
        return None
    p = Path(src)
    if not p.is_absolute():
        p = (bundle.root / p).resolve()
    nums = clip.frame_numbers
    contiguous = all(b - a == 1 for a, b in zip(nums, nums[1:]))
    if p.suffix.lower() in MOVIE_EXTENSIONS or p.is_file():
        return PlatePlan(path=str(p), kind="MOVIE", exists=p.is_file(), frame_offset=int(nums[0]),
                         contiguous=contiguous)
    first = p / clip.frame_names[0]
    return PlatePlan(path=str(first), kind="SEQUENCE", exists=first.is_file(), frame_offset=0,
                     contiguous=contiguous)


def plan_surface(o: ObjectPlan, *, resolution: int = 48, threshold: float = 0.5) -> SurfacePlan:
    """The MESH representation of an object: the iso-surface of its Gaussians' opacity field at
    frame 1, carried to every frame by the Gaussians' motion (see ``core/surface.py``).

    Raises ImportOptionError when the Gaussians never reach ``threshold``.
    """
    sigmas = o.sigmas if o.sigmas is not None else np.repeat(o.scale[:, None], 3, axis=1)
    quats = o.rotations if o.rotations is not None else np.tile([1.0, 0, 0, 0], (o.num_points, 1))
    try:
        s = surf.extract_surface(o.positions[0], quats, np.log(np.maximum(sigmas, 1e-12)), o.opacity,
                                 o.colors_srgb, resolution=resolution, threshold=threshold)
    except ValueError as e:
        raise ImportOptionError(f"{o.label}: no surface ({e})") from e
    return SurfacePlan(positions=surf.deform(s.vertices, s.neighbours, s.weights, o.positions),
                       face_sizes=s.face_sizes, face_vertices=s.face_vertices, colors_srgb=s.colors)


def plan_import(bundle_or_path: Bundle | str | os.PathLike, *,
                sensor_width: float = cam.DEFAULT_SENSOR_WIDTH_MM,
                only_ids: list[str] | None = None) -> ImportPlan:
    """Open (if given a path), load and validate a bundle and compute what the import creates.

    ``only_ids`` loads just those objects' arrays (to rebuild one object of an earlier import).
    Raises BundleError for anything unreadable or inconsistent; nothing is half-loaded.
    """
    bundle = bundle_or_path if isinstance(bundle_or_path, Bundle) else open_bundle(bundle_or_path)
    m = bundle.manifest
    T = m.clip.frame_count
    root = bundle.root.resolve()
    result = root.name or "result"
    warnings: list[str] = []

    track = bundle.load_camera()
    bl_cam = cam.opencv_c2w_to_blender_camera(track.c2w)
    locs, quats = cam.decompose_rigid(bl_cam)
    lens = cam.intrinsics_to_blender(track.K, m.clip.width, m.clip.height, sensor_width)
    mismatch = cam.focal_aspect_mismatch(track.K)
    if mismatch > 1e-3:
        warnings.append(f"camera fx and fy differ by {100 * mismatch:.1f}%; Blender uses fx "
                        "(square pixels), so vertical placement may drift slightly")
    scale_err = np.abs(np.linalg.det(track.c2w[:, :3, :3]) - 1.0).max()
    if scale_err > 1e-3:
        warnings.append("camera matrices are not pure rotations; the camera uses their nearest rotation")
    static_pose = bool(np.allclose(bl_cam, bl_cam[:1], atol=1e-9))
    static_intr = bool(np.allclose(track.K, track.K[:1], atol=1e-9))
    camera = CameraPlan(name=f"{result}_camera", local_matrices=bl_cam, locations=locs,
                        quaternions=quats, lens=lens.lens, shift_x=lens.shift_x, shift_y=lens.shift_y,
                        sensor_width=lens.sensor_width, clip_start=m.camera.near,
                        clip_end=m.camera.far, static_pose=static_pose, static_intrinsics=static_intr,
                        solve=m.camera.solve)

    objects = []
    for info in m.objects:
        if only_ids is not None and info.id not in only_ids:
            continue
        fr = bundle.load_frames(info)
        sigmas = np.exp(fr.log_scales[0].astype(np.float64))
        scale = sigmas.mean(axis=1)
        quats = fr.quats[0].astype(np.float64)
        norm = np.linalg.norm(quats, axis=1, keepdims=True)
        quats = np.where(norm > 1e-12, quats / np.maximum(norm, 1e-12), [1.0, 0.0, 0.0, 0.0])
        objects.append(ObjectPlan(id=info.id, name=f"{result}_{info.name}", label=info.name,
                                  color=info.color,
                                  positions=np.ascontiguousarray(fr.means, dtype=np.float32),
                                  colors_srgb=np.clip(fr.colors[0], 0.0, 1.0).astype(np.float32),
                                  opacity=np.clip(fr.opacities[0], 0.0, 1.0).astype(np.float32),
                                  scale=scale.astype(np.float32), visible=list(info.visible),
                                  sigmas=sigmas.astype(np.float32), rotations=quats.astype(np.float32)))

    background = None
    g = bundle.load_background() if only_ids is None else None
    if g is not None:
        sigmas = np.exp(g.log_scales.astype(np.float64))
        q = g.quats.astype(np.float64)
        n = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.where(n > 1e-12, q / np.maximum(n, 1e-12), [1.0, 0.0, 0.0, 0.0])
        background = BackgroundPlan(name=f"{result}_background",
                                    positions=np.ascontiguousarray(g.means, dtype=np.float32),
                                    colors_srgb=np.clip(g.colors, 0.0, 1.0).astype(np.float32),
                                    opacity=np.clip(g.opacities, 0.0, 1.0).astype(np.float32),
                                    scale=sigmas.mean(axis=1).astype(np.float32), sigmas=sigmas.astype(np.float32),
                                    rotations=q.astype(np.float32), source=m.background.source)

    fps_int, fps_base = cam.blender_fps(m.clip.fps)
    scene = ScenePlan(width=m.clip.width, height=m.clip.height, fps=fps_int, fps_base=fps_base,
                      frame_start=FRAME_START, frame_end=blender_frame(T - 1))
    plate = _plate(bundle)
    if plate is not None and plate.exists and not plate.contiguous:
        warnings.append("the result uses every n-th source frame; the plate plays every source frame, "
                        "so it will not line up after frame 1")
    return ImportPlan(bundle_root=str(root), result_name=result,
                      collection_name=f"{COLLECTION_PREFIX}{result}", root_name=f"{result}_root",
                      root_matrix=cam.OPENCV_WORLD_TO_BLENDER.copy(), scene=scene, camera=camera,
                      objects=objects, plate=plate, warnings=warnings, background=background)


__all__ = ["BundleError", "FRAME_START", "ImportPlan", "ObjectPlan", "BackgroundPlan", "CameraPlan", "PlatePlan",
           "ScenePlan", "SurfacePlan", "REPRESENTATIONS", "DEFAULT_REPRESENTATION", "ImportOptionError",
           "parse_representations", "plan_surface", "plan_import", "blender_frame", "shape_key_weight_keys", "shape_key_name",
           "visibility_keys", "srgb_to_linear"]
