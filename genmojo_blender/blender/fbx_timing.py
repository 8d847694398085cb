"""FBX export details that Blender's FBX round trip needs: timing and what cannot travel.

Timing: the FBX exporter writes scene frame ``f`` at time ``f / fps``, and Blender's FBX importer
puts time ``t`` at frame ``t * fps + 1`` (its *Animation Offset*, 1 by default), so a re-imported
result landed one frame late. For the duration of the export every action's keys and the scene's
frame range are moved one frame earlier, so that frame 1 is written at time 0 and a default import
lands every frame where it was; they are moved back afterwards, whatever happens. Other software
that reads FBX time 0 as frame 0 sees the clip start at 0.

Point colours: FBX colour layers are per face corner, and Blender's exporter writes a vertex-only
mesh's point colours into its (absent) face corners, i.e. not at all. Such objects are named in a
warning instead of losing their colours silently; Mesh objects keep theirs, and glTF keeps both.
"""

from __future__ import annotations

from contextlib import contextmanager

import bpy
import numpy as np

FRAME_SHIFT = -1.0  # Blender frame 1 -> FBX time 0 (the importer's default offset adds the 1 back)


def _fcurves(action):
    for layer in getattr(action, "layers", ()):
        for strip in layer.strips:
            for bag in getattr(strip, "channelbags", ()):
                yield from bag.fcurves


def _shift(fcurves, by: float) -> None:
    for fc in fcurves:
        kps = fc.keyframe_points
        n = len(kps)
        if not n:
            continue
        for prop in ("co", "handle_left", "handle_right"):
            xy = np.empty(2 * n, np.float64)
            kps.foreach_get(prop, xy)
            xy[0::2] += by
            kps.foreach_set(prop, xy)
        fc.update()


@contextmanager
def keys_at_fbx_time_zero(scene: bpy.types.Scene, warnings: list[str] | None = None):
    """Move every action's keys and ``scene``'s frame range by ``FRAME_SHIFT`` while the body runs.

    A scene starting before frame 1 cannot move (its start would leave Blender's range); it is
    exported as it is, with a warning that a default import lands one frame late."""
    if scene.frame_start < 1:
        if warnings is not None:
            warnings.append(f"the scene starts at frame {scene.frame_start}: the FBX is written at Blender's "
                            "times, so import it with Animation Offset 0 to keep the frames")
        yield
        return
    curves = [fc for a in bpy.data.actions if a.library is None for fc in _fcurves(a)]
    start, end, current = scene.frame_start, scene.frame_end, scene.frame_current
    _shift(curves, FRAME_SHIFT)
    scene.frame_start, scene.frame_end = start + int(FRAME_SHIFT), end + int(FRAME_SHIFT)
    try:
        yield
    finally:
        _shift(curves, -FRAME_SHIFT)
        scene.frame_end, scene.frame_start = end, start
        scene.frame_set(current)


def point_colour_warnings(objects) -> list[str]:
    """A warning naming the exported vertex-only meshes whose colours FBX cannot carry."""
    names = sorted(ob.name for ob in objects if ob.type == "MESH" and not len(ob.data.polygons)
                   and len(ob.data.color_attributes))
    if not names:
        return []
    return [f"FBX keeps colours only on faces, so the point colours of {', '.join(names)} are not in the file "
            "(export glTF, or show those objects as Mesh, to keep them)"]
