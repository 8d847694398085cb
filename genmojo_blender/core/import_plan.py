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
from .bundle import Bundle, BundleError, open_bundle

FRAME_START = 1
MOVIE_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".mxf", ".ogv")
# Shared prefix of every Blender name the importer creates, so results are easy to find.
COLLECTION_PREFIX = "GenMOJO "


def blender_frame(clip_index: int) -> int:
    """The Blender frame that shows clip frame ``clip_index`` (0-based)."""
    return FRAME_START + int(clip_index)


def shape_key_weight_keys(frame_index: int, frame_count: int) -> list[tuple[int, float]]:
    """(Blender frame, weight) keys, CONSTANT-interpolated, for the shape key of ``frame_index``.

    The weight is 1 exactly on its own frame and 0 on every other frame: a 0 key on the previous
    frame (if any), 1 on its frame, 0 on the next frame (if any). Constant extrapolation holds the
    first and last values outside the keyed range, so the first key stays on before frame 1 and the
    last key stays on after the last frame.
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

    @property
    def num_points(self) -> int:
        return int(self.positions.shape[1])


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


def plan_import(bundle_or_path: Bundle | str | os.PathLike, *,
                sensor_width: float = cam.DEFAULT_SENSOR_WIDTH_MM) -> ImportPlan:
    """Open (if given a path), load and validate a bundle and compute what the import creates.

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
                        clip_end=m.camera.far, static_pose=static_pose, static_intrinsics=static_intr)

    objects = []
    for info in m.objects:
        fr = bundle.load_frames(info)
        scale = np.exp(fr.log_scales[0].astype(np.float64)).mean(axis=1)
        objects.append(ObjectPlan(id=info.id, name=f"{result}_{info.name}", label=info.name,
                                  color=info.color,
                                  positions=np.ascontiguousarray(fr.means, dtype=np.float32),
                                  colors_srgb=np.clip(fr.colors[0], 0.0, 1.0).astype(np.float32),
                                  opacity=np.clip(fr.opacities[0], 0.0, 1.0).astype(np.float32),
                                  scale=scale.astype(np.float32), visible=list(info.visible)))

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
                      objects=objects, plate=plate, warnings=warnings)


__all__ = ["BundleError", "FRAME_START", "ImportPlan", "ObjectPlan", "CameraPlan", "PlatePlan",
           "ScenePlan", "plan_import", "blender_frame", "shape_key_weight_keys", "shape_key_name",
           "visibility_keys", "srgb_to_linear"]
