"""Splat exports of imported results: per-frame 3DGS PLY sequences, glTF ``KHR_gaussian_splatting``
files per frame and an animated USD splat layer (Blender glue over the bpy-free writers in
``core/splat_ply.py``, ``core/gltf_splats.py`` and ``core/usd_splats.py``).

What is exported: every imported GenMOJO object in the view layer (or the selected ones), and the
background of background mode, whatever representation it is shown in. The Gaussians come from the
object's bundle (``frames.npz``: per-frame centres, orientations, sizes, colours and opacities, which
Blender's objects do not all carry), clip frame ``i`` at Blender frame ``1 + i``. A bundle that was
moved or deleted since the import is an error naming it.

Space: ``BLENDER`` (the default) places the Gaussians where the scene shows them: the bundle's
numbers through the object's world matrix at each frame (the result's root turns the bundle's
OpenCV world into Blender's Z-up world, and anything the user moved, rotated or scaled comes along).
``BUNDLE`` writes the bundle's own world unchanged (OpenCV axes: y down, z forward, as the
backend's cameras). glTF always uses glTF's Y-up axes (Blender's world turned as Blender's glTF
exporter does); USD uses Blender's world with ``upAxis = "Z"``.

Visibility: an object is left out of a frame where it is hidden from the render at that frame (its
``hide_render`` there: the importer keys it hidden where the object's mask is empty, and an artist's
own keys or hiding count the same). PLY: no file for that object and frame, and the merged file of
that frame without it; glTF: no node for it in that frame's file; a frame where every object is
hidden gets no file in either. USD keeps every prim's arrays the same length at every time code, so
a hidden object gets a ``visibility`` time sample of ``invisible`` (what every USD reader honours)
and zero opacities at those frames (for splat renderers that read only the particle attributes).

Nothing is written until every target path has been checked (``core/export_files.check_targets``:
no file is replaced without ``overwrite``), and each file is renamed into place when complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import bpy
import numpy as np

from ..core import export_files as ef
from ..core import gltf_splats, splat_ply, splats, usd_splats
from ..core.bundle import BundleError, open_bundle
from ..core.import_plan import blender_frame
from . import importer

SPACES = {
    "BLENDER": "where the Blender scene shows them (Z up, with every object transform)",
    "BUNDLE": "the result's own world (OpenCV axes: y down, z forward)",
}
MERGED_NAME = "all_objects"


@dataclass
class SplatSource:
    """One exported object: its Blender object, file-safe name and Gaussians per clip frame."""

    obj: bpy.types.Object
    name: str
    frames: list[splats.SplatFrame]  # clip frame i -> Gaussians in the bundle's world

    def blender_frames(self) -> list[int]:
        return [blender_frame(i) for i in range(len(self.frames))]


def _is_result_object(ob) -> bool:
    return bool(ob.get(importer.BUNDLE_PROP)) and bool(ob.get(importer.OBJECT_ID_PROP)
                                                       or ob.get(importer.BACKGROUND_PROP))


def result_objects(context, *, selected_only: bool = False) -> list[bpy.types.Object]:
    """Imported GenMOJO objects (and backgrounds) of the view layer, or of the selection."""
    layer = context.view_layer
    return [ob for ob in layer.objects if _is_result_object(ob) and (ob.select_get() or not selected_only)]


def load_sources(objects: list[bpy.types.Object]) -> list[SplatSource]:
    """Read every object's Gaussians from its bundle (all of them before anything is written)."""
    if not objects:
        raise ef.ExportError("no imported GenMOJO objects to export (import a result, or select its objects)")
    bundles, out, names = {}, [], set()
    for ob in sorted(objects, key=lambda o: o.name):
        root = ob[importer.BUNDLE_PROP]
        if root not in bundles:
            try:
                bundles[root] = open_bundle(root)
            except BundleError as e:
                raise ef.ExportError(f"{ob.name}: its result cannot be read any more ({e}); "
                                     "the splat exports read the Gaussians from the result folder") from e
        b = bundles[root]
        T = b.manifest.clip.frame_count
        if ob.get(importer.BACKGROUND_PROP):
            g = b.load_background()
            if g is None:
                raise ef.ExportError(f"{ob.name}: the result at {root} no longer has a background")
            frames = [splats.static_frame(g)] * T
        else:
            info = next((o for o in b.manifest.objects if o.id == ob[importer.OBJECT_ID_PROP]), None)
            if info is None:
                raise ef.ExportError(f"{ob.name}: the result at {root} no longer has object "
                                     f"{ob[importer.OBJECT_ID_PROP]}")
            data = b.load_frames(info)
            frames = [splats.frame_of(data, i) for i in range(T)]
        name = ef.safe_name(ob.name)
        if name in names:
            raise ef.ExportError(f"two objects export under the file name {name!r}; rename one of them")
        names.add(name)
        out.append(SplatSource(obj=ob, name=name, frames=frames))
    return out


@dataclass
class FrameStates:
    """Each object's world matrix and render visibility at each of its Blender frames."""

    matrices: dict[tuple[str, int], np.ndarray]
    visible: dict[tuple[str, int], bool]


def frame_states(scene, sources: list[SplatSource]) -> FrameStates:
    """Step through the objects' frames and read where each is and whether it renders there (its
    animated ``hide_render``); the scene's frame is restored."""
    current, sub = scene.frame_current, scene.frame_subframe
    out = FrameStates({}, {})
    frames = sorted({f for s in sources for f in s.blender_frames()})
    try:
        for f in frames:
            scene.frame_set(f)
            for s in sources:
                out.matrices[(s.name, f)] = np.array(s.obj.matrix_world, np.float64)
                out.visible[(s.name, f)] = not s.obj.hide_render
    finally:
        scene.frame_set(current, subframe=sub)
    return out


def _placed(sources: list[SplatSource], space: str,
            states: FrameStates) -> dict[str, dict[int, Callable[[], splats.SplatFrame]]]:
    """Per object and Blender frame, a function giving the Gaussians in ``space`` (the transforms
    run only when a file is built, after its target was checked)."""
    if space not in SPACES:
        raise ef.ExportError(f"unknown space {space!r} (choose from {', '.join(SPACES)})")
    if space == "BUNDLE":
        return {s.name: {f: (lambda g=g: g) for f, g in zip(s.blender_frames(), s.frames)} for s in sources}
    return {s.name: {f: partial(splats.transform, g, states.matrices[(s.name, f)])
                     for f, g in zip(s.blender_frames(), s.frames)} for s in sources}


def _shown(placed: dict[str, dict[int, Callable[[], splats.SplatFrame]]],
           states: FrameStates) -> dict[str, dict[int, Callable[[], splats.SplatFrame]]]:
    """``placed`` without the frames where an object is hidden from the render."""
    return {name: {f: get for f, get in per.items() if states.visible[(name, f)]} for name, per in placed.items()}


def _nothing_shown(sources: list[SplatSource]) -> ef.ExportError:
    names = ", ".join(s.obj.name for s in sources[:ef.NAMES_IN_MESSAGE])
    more = f" and {len(sources) - ef.NAMES_IN_MESSAGE} more" if len(sources) > ef.NAMES_IN_MESSAGE else ""
    return ef.ExportError(f"{names}{more} {'is' if len(sources) == 1 else 'are'} hidden from the render in "
                          "every frame, so there is nothing to export (show them, or check their visibility keys)")


def _ply_file(parts: list[Callable[[], splats.SplatFrame]], sh_degree: int, comment: str) -> bytes:
    return splat_ply.ply_bytes(splats.merge([get() for get in parts]), sh_degree, comment=comment)


def _glb_file(objects: list[tuple[str, Callable[[], splats.SplatFrame]]], extras: dict) -> bytes:
    return gltf_splats.glb_bytes([(name, splats.transform(get(), splats.BLENDER_TO_GLTF)) for name, get in objects],
                                 extras=extras)


def _write_all(files: dict[Path, Callable[[], bytes]], overwrite: bool) -> list[Path]:
    """Check every target first, then build and write each file (so a refusal writes nothing)."""
    ef.check_targets(list(files), overwrite=overwrite)
    for path, build in files.items():
        ef.write_atomic(path, build())
    return list(files)


def export_ply_sequence(folder: str, context=None, *, selected_only: bool = False, space: str = "BLENDER",
                        per_object: bool = True, merged: bool = False, sh_degree: int = 0,
                        overwrite: bool = False) -> list[Path]:
    """One 3DGS PLY per object and frame: ``folder/<object>/<object>_0001.ply`` (and, with
    ``merged``, every object in one file per frame: ``folder/all_objects/all_objects_0001.ply``)."""
    context = context or bpy.context
    if not (per_object or merged):
        raise ef.ExportError("nothing to write: choose per-object files, merged files or both")
    splat_ply.rest_count(sh_degree)  # validates the degree before any work
    root = Path(os.path.abspath(bpy.path.abspath(folder)))
    if root.exists() and not root.is_dir():
        raise ef.ExportError(f"{root} is a file; choose a folder for the PLY sequence")
    sources = load_sources(result_objects(context, selected_only=selected_only))
    states = frame_states(context.scene, sources)
    placed = _shown(_placed(sources, space, states), states)
    files: dict[Path, Callable[[], bytes]] = {}
    note = f"GenMOJO result, space {space.lower()}"
    if per_object:
        for s in sources:
            for f, gaussians in placed[s.name].items():
                files[ef.frame_file(root / s.name, s.name, f, ".ply")] = partial(
                    _ply_file, [gaussians], sh_degree, f"{note}, {s.obj.name}, frame {f}")
    if merged:
        for f in sorted({f for p in placed.values() for f in p}):
            parts = [placed[s.name][f] for s in sources if f in placed[s.name]]
            files[ef.frame_file(root / MERGED_NAME, MERGED_NAME, f, ".ply")] = partial(
                _ply_file, parts, sh_degree, f"{note}, all objects, frame {f}")
    if not files:
        raise _nothing_shown(sources)
    return _write_all(files, overwrite)


def export_gltf_splats(path: str, context=None, *, selected_only: bool = False,
                       overwrite: bool = False) -> list[Path]:
    """One ``KHR_gaussian_splatting`` .glb per Blender frame beside ``path``: ``shot.glb`` gives
    ``shot_0001.glb``, ``shot_0002.glb``, ... each with one node per object, in glTF's Y-up axes."""
    context = context or bpy.context
    target = Path(os.path.abspath(bpy.path.abspath(path)))
    if target.suffix.lower() != ".glb":
        raise ef.ExportError(f"{target.name}: the splat glTF export writes .glb files; give a name ending in .glb")
    sources = load_sources(result_objects(context, selected_only=selected_only))
    states = frame_states(context.scene, sources)
    placed = _shown(_placed(sources, "BLENDER", states), states)
    fps = context.scene.render.fps / context.scene.render.fps_base
    files: dict[Path, Callable[[], bytes]] = {}
    for f in sorted({f for p in placed.values() for f in p}):
        objs = [(s.obj.name, placed[s.name][f]) for s in sources if f in placed[s.name]]
        files[ef.frame_file(target.parent, target.stem, f, ".glb")] = partial(
            _glb_file, objs, {"frame": f, "fps": fps})
    if not files:
        raise _nothing_shown(sources)
    return _write_all(files, overwrite)


def export_usd_splats(path: str, context=None, *, selected_only: bool = False,
                      overwrite: bool = False) -> Path:
    """An animated USD layer (.usda) of ``ParticleField3DGaussianSplat`` prims, one per object,
    time-sampled at every Blender frame, in Blender's world (Z up)."""
    context = context or bpy.context
    target = Path(os.path.abspath(bpy.path.abspath(path)))
    if target.suffix.lower() != ".usda":
        raise ef.ExportError(f"{target.name}: the USD splat export writes text layers; give a name ending in .usda")
    ef.check_targets([target], overwrite=overwrite)  # its one file is known: refused before the bundles are read
    sources = load_sources(result_objects(context, selected_only=selected_only))
    counts = {len(s.frames) for s in sources}
    if len(counts) != 1:
        raise ef.ExportError("the objects come from results of different lengths; export them one result at a time")
    scene = context.scene
    states = frame_states(scene, sources)
    placed = _placed(sources, "BLENDER", states)
    frames = sources[0].blender_frames()
    objects = [(s.obj.name, [placed[s.name][f]() for f in frames]) for s in sources]
    visible = [[states.visible[(s.name, f)] for f in frames] for s in sources]
    text = usd_splats.usda_text(Path(sources[0].obj[importer.BUNDLE_PROP]).name, objects, frames,
                                fps=scene.render.fps / scene.render.fps_base, up_axis="Z",
                                meters_per_unit=float(scene.unit_settings.scale_length or 1.0), visible=visible)
    ef.write_atomic(target, text.encode("utf-8"))
    return target
