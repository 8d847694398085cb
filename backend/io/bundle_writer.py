"""Writes the result bundle that Blender imports (format: ``genmojo_blender.core.bundle``).

A bundle appears only complete: everything is written into a hidden temporary folder beside the
target and renamed into place at the end, so a crash, a full disk or a cancel never leaves a
half-written result where the importer would look, and an existing result is only replaced when the
caller asks for it.

The swap into place is the single commit point. ``should_stop`` is polled between files and once more
just before the swap: a stop requested before then raises ``Cancelled`` with the previous result
untouched and the temporary folder removed; once the swap has started the write finishes. Any error
while writing (a full disk is an ``OSError``) removes the temporary folder and leaves the previous
result as it was. The temporary folder's name records the writing host and pid
(``bundle_staging``), so a later run can tell one left by a dead process from a live one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from plyfile import PlyData, PlyElement

from genmojo_blender.core import bundle as fmt

from ..errors import Cancelled
from .bundle_staging import OWNER_FILE, old_name, partial_prefix, write_owner

if TYPE_CHECKING:  # typing only: previews imports the model, the writer must not
    from ..previews import Tracks

SH_C0 = 0.28209479177387814  # degree-0 spherical-harmonic constant (colour = 0.5 + C0 * f_dc)
PREVIEW_DIR = "preview"
TRACKS_NAME = "trajectories_data"  # manifest name of the trajectories' npz (beside trajectories.mp4)
TRACKS_FILE = "trajectories.npz"
_PREVIEW_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class CanonicalArrays:
    """An object's Gaussians in its own canonical frame, as plain arrays (activated values)."""

    means: np.ndarray  # (N, 3)
    quats: np.ndarray  # (N, 4) w, x, y, z
    log_scales: np.ndarray  # (N, 3)
    colors: np.ndarray  # (N, 3) in [0, 1]
    opacities: np.ndarray  # (N,) in [0, 1]


@dataclass(frozen=True)
class BakedObject:
    """Everything the bundle holds about one object."""

    id: str
    name: str
    color: tuple[float, float, float]
    canonical: CanonicalArrays
    frames: fmt.ObjectFrames
    visible: list[bool]


@dataclass(frozen=True)
class BakedBackground:
    """Background mode's static background for the bundle (``background/``), and how it was made."""

    gaussians: fmt.StaticGaussians
    reference_frame: int
    source: str
    mask: str
    final_losses: dict[str, float]


BACKGROUND_DIR = "background"


class BundleExistsError(FileExistsError):
    """The target result folder exists and overwriting was not requested."""


def write_canonical_ply(path: Path, g: CanonicalArrays) -> None:
    """Standard 3DGS vertex PLY (binary): x y z nx ny nz f_dc_0..2 opacity scale_0..2 rot_0..3.

    Opacity is stored as a logit and scales as logs, like every 3DGS tool expects.
    """
    n = g.means.shape[0]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    arr = np.zeros(n, dtype=[(k, "f4") for k in names])
    arr["x"], arr["y"], arr["z"] = g.means[:, 0], g.means[:, 1], g.means[:, 2]
    f_dc = (np.clip(g.colors, 0.0, 1.0) - 0.5) / SH_C0
    for i in range(3):
        arr[f"f_dc_{i}"] = f_dc[:, i]
        arr[f"scale_{i}"] = g.log_scales[:, i]
    op = np.clip(g.opacities, 1e-6, 1 - 1e-6)
    arr["opacity"] = np.log(op / (1 - op))
    q = g.quats / np.linalg.norm(g.quats, axis=1, keepdims=True).clip(1e-12)
    for i in range(4):
        arr[f"rot_{i}"] = q[:, i]
    PlyData([PlyElement.describe(arr, "vertex")], text=False).write(str(path))


def read_canonical_ply(path: Path) -> CanonicalArrays:
    """Inverse of write_canonical_ply (used by tests and by tools that re-open a bundle)."""
    v = PlyData.read(str(path))["vertex"]
    means = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    f_dc = np.stack([v[f"f_dc_{i}"] for i in range(3)], 1)
    return CanonicalArrays(
        means=means,
        quats=np.stack([v[f"rot_{i}"] for i in range(4)], 1).astype(np.float32),
        log_scales=np.stack([v[f"scale_{i}"] for i in range(3)], 1).astype(np.float32),
        colors=(0.5 + SH_C0 * f_dc).astype(np.float32),
        opacities=(1 / (1 + np.exp(-np.asarray(v["opacity"], np.float64)))).astype(np.float32),
    )


def write_preview(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write (T, H, W, 3) uint8 RGB frames as an mp4 (OpenCV's bundled FFmpeg, mp4v codec)."""
    import cv2

    T, H, W, _ = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV could not open an mp4 writer")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not path.is_file() or path.stat().st_size == 0:
        raise OSError(f"{path}: the preview video was not written")


def write_bundle(out_dir: str | os.PathLike, save_name: str, *, clip: fmt.ClipInfo,
                 camera: fmt.CameraTrack, camera_info: fmt.CameraInfo,
                 objects: list[BakedObject], run: fmt.RunInfo,
                 previews: dict[str, np.ndarray] | None = None, tracks: Tracks | None = None,
                 overwrite: bool = False, background: BakedBackground | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Path:
    """Write a complete bundle to ``out_dir/save_name`` atomically and return its path.

    ``previews`` maps a name (``input_view``, ``rotating``, ``trajectories``) to (T', H, W, 3) uint8
    frames, each written as ``preview/<name>.mp4`` at the clip's fps; ``tracks`` (anything with
    ``save_npz``, normally ``backend.previews.Tracks``) goes to ``preview/trajectories.npz``. All of
    them are listed in the manifest's ``previews``. ``background`` (background mode) is written to
    ``background/gaussians.npz`` and ``background/background.ply`` and listed as ``background``.

    Raises BundleExistsError if the target exists and ``overwrite`` is False. With ``overwrite``
    the previous result is moved aside and deleted only after the new one is in place (and put
    back if the new one cannot be moved in). Raises Cancelled, with nothing changed, when
    ``should_stop()`` is true at any check before the swap.
    """
    previews = dict(previews or {})
    _check_previews(previews, tracks, clip.frame_count)
    out_dir = Path(out_dir)
    target = out_dir / save_name
    if target.exists() and not overwrite:
        raise BundleExistsError(f"{target} already exists; choose another --save_name or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    T = clip.frame_count
    replacing = target.exists()

    def check_stop(before: str) -> None:
        if should_stop is not None and should_stop():
            kept = f"{target} is untouched" if replacing else f"nothing was written to {target}"
            raise Cancelled(f"stopped before {before}; {kept}", "run again to write the result")

    check_stop("writing the result")
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(save_name), dir=out_dir))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should not be
    try:
        write_owner(tmp)
        np.savez(tmp / camera_info.file, K=camera.K.astype(np.float64), c2w=camera.c2w.astype(np.float64))
        entries = []
        for o in objects:
            check_stop(f"writing object {o.id}")
            rel = Path("objects") / o.id
            (tmp / rel).mkdir(parents=True)
            write_canonical_ply(tmp / rel / "canonical.ply", o.canonical)
            f = o.frames
            np.savez(tmp / rel / "frames.npz", means=f.means.astype(np.float32),
                     quats=f.quats.astype(np.float32), log_scales=f.log_scales.astype(np.float32),
                     colors=f.colors.astype(np.float32), opacities=f.opacities.astype(np.float32))
            entries.append(fmt.ObjectInfo(id=o.id, name=o.name, color=o.color,
                                          num_gaussians=f.num_gaussians,
                                          canonical_ply=f"objects/{o.id}/canonical.ply",
                                          frames=f"objects/{o.id}/frames.npz",
                                          visible=[bool(v) for v in o.visible]))
        bg_info = None
        if background is not None:
            check_stop("writing the background")
            g = background.gaussians
            (tmp / BACKGROUND_DIR).mkdir()
            np.savez(tmp / BACKGROUND_DIR / "gaussians.npz",
                     **{k: getattr(g, k).astype(np.float32) for k in fmt.BACKGROUND_ARRAYS})
            write_canonical_ply(tmp / BACKGROUND_DIR / "background.ply",
                                CanonicalArrays(means=g.means, quats=g.quats, log_scales=g.log_scales,
                                                colors=g.colors, opacities=g.opacities))
            bg_info = fmt.BackgroundInfo(gaussians=f"{BACKGROUND_DIR}/gaussians.npz",
                                         ply=f"{BACKGROUND_DIR}/background.ply", num_gaussians=g.num_gaussians,
                                         reference_frame=int(background.reference_frame),
                                         source=background.source, mask=background.mask,
                                         final_losses={k: float(v) for k, v in background.final_losses.items()})
        listed = {}
        if previews or tracks is not None:
            (tmp / PREVIEW_DIR).mkdir()
        for name, frames in previews.items():
            check_stop(f"writing the {name} preview")
            write_preview(tmp / PREVIEW_DIR / f"{name}.mp4", frames, clip.fps)
            listed[name] = f"{PREVIEW_DIR}/{name}.mp4"
        if tracks is not None:
            tracks.save_npz(tmp / PREVIEW_DIR / TRACKS_FILE)
            listed[TRACKS_NAME] = f"{PREVIEW_DIR}/{TRACKS_FILE}"
        manifest = fmt.Manifest(clip=clip, camera=camera_info, objects=entries, run=run,
                                previews=listed,
                                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                background=bg_info)
        (tmp / fmt.MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        # refuse to publish anything the reader would reject
        opened = fmt.open_bundle(tmp)
        for o in opened.manifest.objects:
            if opened.load_frames(o).num_frames != T:
                raise fmt.BundleError(f"object {o.id}: frame count differs from the clip")
        opened.load_camera()
        opened.load_background()
        check_stop("replacing the result" if replacing else "moving the result into place")
        (tmp / OWNER_FILE).unlink()  # it describes the write, not the result
        _publish(tmp, target, overwrite)  # the commit point: no stop is honoured from here on
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_previews(previews: dict[str, np.ndarray], tracks, T: int) -> None:
    """Refuse previews that would make a bad file name or an unplayable video before writing anything."""
    for name, frames in previews.items():
        if not isinstance(name, str) or not _PREVIEW_NAME.fullmatch(name) or name == TRACKS_NAME:
            raise ValueError(f"preview name {name!r}: use letters, digits, '_' or '-' "
                             f"(and not {TRACKS_NAME!r}, which names the tracks)")
        a = np.asarray(frames)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or 0 in a.shape:
            raise ValueError(f"preview {name!r}: expected non-empty (T, H, W, 3) uint8 frames, "
                             f"got {a.dtype} {a.shape}")
    if tracks is not None:
        if not callable(getattr(tracks, "save_npz", None)):
            raise TypeError("tracks must have a save_npz(path) method (backend.previews.Tracks)")
        points = getattr(tracks, "points", None)
        if points is not None and points.shape[0] != T:
            raise ValueError(f"tracks cover {points.shape[0]} frames, the clip has {T}")


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``target``; an existing target is moved aside for the swap and
    deleted after it (a run killed in between leaves it as ``.<name>.old-<host>-<pid>``, which
    ``bundle_staging.recover_staging`` puts back or deletes at the next run's start)."""
    if target.exists():
        if not overwrite:
            raise BundleExistsError(f"{target} appeared while writing; not replacing it")
        old = target.with_name(old_name(target.name))
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)  # the new result could not move in: the old one goes back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
