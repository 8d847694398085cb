"""Movie Clip editor masks -> the backend's per-object PNG mask folders (bpy glue over ``core.masks``).

Each layer of a Mask datablock is one object (``001`` is the first layer). For every frame of the
clip the scene is moved to that frame (so animated mask points take their keyed positions), each
layer's visible splines are flattened and filled, and the result is written as
``<out>/<object>/<frame name>.png`` through ``core.mask_export``: into a fresh folder swapped in when
complete, replacing only an unmodified earlier export of the extension (never the user's own masks,
and never leaving a removed layer's folder behind).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..core import masks as cm
from ..core.mask_export import write_mask_folders


def _layer_polygons(layer, width: int, height: int) -> list[np.ndarray]:
    polys = []
    for spline in layer.splines:
        pts = spline.points
        if len(pts) < 2:
            continue
        co = np.array([p.co[:] for p in pts])
        hl = np.array([p.handle_left[:] for p in pts])
        hr = np.array([p.handle_right[:] for p in pts])
        outline = cm.bezier_polygon(co, hl, hr, cyclic=True)  # a filled region is always closed
        polys.append(cm.mask_to_pixels(outline, width, height))
    return polys


def rasterize_mask(mask: bpy.types.Mask, out_dir: str, width: int, height: int,
                   frames: list[tuple[int, str]], scene: bpy.types.Scene | None = None) -> list[str]:
    """Write one PNG per (Blender frame, file stem) and per mask layer; returns the object folders.

    Layers hidden from render are skipped; an inverted layer is written inverted. Raises
    ``core.mask_export.MaskFolderError`` (a ValueError), before rendering anything, when ``out_dir``
    holds masks that are not an unmodified earlier export.
    """
    scene = scene or bpy.context.scene
    layers = [ly for ly in mask.layers if not ly.hide_render]
    if not layers:
        raise ValueError(f"mask {mask.name!r} has no layers to render")

    def masks_at(frame: int) -> list[np.ndarray]:
        scene.frame_set(frame)
        out = []
        for layer in layers:
            img = cm.fill_polygons(_layer_polygons(layer, width, height), width, height)
            out.append(~img if layer.invert else img)
        return out

    current = scene.frame_current
    try:
        return write_mask_folders(out_dir, frames, len(layers), masks_at)
    finally:
        scene.frame_set(current)




IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def clip_frames(clip_path: str) -> tuple[int, int, list[tuple[int, str]]]:
    """(width, height, [(Blender frame, mask file stem)]) for a clip: a numbered image folder
    (stems of its images, in order) or a movie (00000, 00001, ... as the backend names them).
    Clip frame i is the one a Movie Clip editor shows at Blender frame 1 + i."""
    p = Path(clip_path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
                       and not f.name.startswith("."))
        if not files:
            raise ValueError(f"{p}: no PNG or JPG frames")
        first, stems = str(files[0]), [f.stem for f in files]
    else:
        first, stems = str(p), None
    clip = bpy.data.movieclips.load(first, check_existing=False)
    try:
        width, height = int(clip.size[0]), int(clip.size[1])
        count = int(clip.frame_duration)
    finally:
        bpy.data.movieclips.remove(clip)
    if stems is None:
        stems = [f"{i:05d}" for i in range(count)]
    if width <= 0 or height <= 0:
        raise ValueError(f"{clip_path}: cannot read the frame size")
    return width, height, [(1 + i, s) for i, s in enumerate(stems)]


__all__ = ["rasterize_mask", "clip_frames"]
