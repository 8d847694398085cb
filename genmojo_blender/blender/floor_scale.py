"""Put an imported result on Blender's floor (Z = 0) and give it a real-world scale.

Both move the result's root Empty only: the objects and the camera are its children, so the whole
rig moves as one rigid body (floor) or scales uniformly about one point (scale), and every object
point still projects to the same pixel of the footage. The maths is in ``core/scene_scale.py``;
this module reads the objects' per-frame positions out of their shape keys and writes the root.
Running either again changes nothing (the floor is already at Z = 0, the object already has the
height asked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from ..core import scene_scale as ss
from . import animation, importer


# Floor and height read at most this many points of an object (percentiles need no more).
MAX_POINTS = 20000


class RigError(ValueError):
    """The scene has no imported result to work on, or it lacks its root or camera."""


@dataclass
class ResultRig:
    """The parts of one imported result the floor, scale and render set-up work on."""

    collection: bpy.types.Collection
    root: bpy.types.Object
    camera: bpy.types.Object
    objects: list[bpy.types.Object]          # the reconstructed objects (not the background)
    background: bpy.types.Object | None

    @property
    def bundle_root(self) -> str:
        return self.collection[importer.BUNDLE_PROP]

    @property
    def name(self) -> str:
        return self.root.name.removesuffix("_root")


def rig_of(collection: bpy.types.Collection) -> ResultRig:
    """The root, camera and objects of the imported result in ``collection``."""
    obs = list(collection.all_objects)
    roots = [o for o in obs if o.type == "EMPTY" and o.get(importer.BUNDLE_PROP) and o.parent is None]
    cams = [o for o in obs if o.type == "CAMERA" and o.get(importer.BUNDLE_PROP)]
    if len(roots) != 1 or len(cams) != 1:
        raise RigError(f"{collection.name}: expected one root Empty and one camera of the import, found "
                       f"{len(roots)} and {len(cams)}; import the result again")
    objects = sorted((o for o in obs if o.get(importer.OBJECT_ID_PROP)), key=lambda o: o.name)
    if not objects:
        raise RigError(f"{collection.name}: the result has no objects")
    bg = next((o for o in obs if o.get(importer.BACKGROUND_PROP)), None)
    return ResultRig(collection, roots[0], cams[0], objects, bg)


def rig_of_object(scene: bpy.types.Scene, ob: bpy.types.Object) -> ResultRig | None:
    """The result ``ob`` belongs to, if that result is imported into ``scene``; else None."""
    root = ob.get(importer.BUNDLE_PROP)
    if root:
        for coll in importer.scene_imports(scene):
            if coll.get(importer.BUNDLE_PROP) == root:
                return rig_of(coll)
    return None


def target_rig(context) -> ResultRig:
    """The result the active object belongs to, else the only result imported into the scene."""
    ob = getattr(context, "active_object", None)
    rig = rig_of_object(context.scene, ob) if ob is not None else None
    if rig is not None:
        return rig
    imports = importer.scene_imports(context.scene)
    if not imports:
        raise RigError("there is no imported GenMOJO result in this scene: import one first")
    if len(imports) > 1:
        raise RigError(f"{len(imports)} results are imported: select an object of the one to work on")
    return rig_of(imports[0])


def _frame_number(key_name: str) -> int | None:
    if not key_name.startswith("frame_"):
        return None
    try:
        return int(key_name[len("frame_"):])
    except ValueError:
        return None


def object_frames(ob: bpy.types.Object, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """An imported object's baked positions per frame in world space (T, n, 3), whether it is
    visible on each frame (T,), and the Blender frames, read from its frame shape keys.

    Objects with more than ``max_points`` vertices give every k-th one (the same ones on every
    frame and every call), so floor and height cost the same for any result size."""
    keys = ob.data.shape_keys if ob.type == "MESH" else None
    blocks = [(f, kb) for kb in (keys.key_blocks if keys else []) if (f := _frame_number(kb.name)) is not None]
    if not blocks:
        raise RigError(f"{ob.name} has no per-frame shape keys (frame_0001 ...): import the result again")
    n = len(ob.data.vertices)
    step = max(1, -(-n // max_points))
    M = np.array(ob.matrix_world, float)
    pos = np.empty((len(blocks), len(range(0, n, step)), 3), float)
    co = np.empty(n * 3, np.float32)
    for i, (_, kb) in enumerate(blocks):
        kb.data.foreach_get("co", co)
        pos[i] = co.reshape(-1, 3)[::step] @ M[:3, :3].T + M[:3, 3]
    frames = [f for f, _ in blocks]
    fc = animation.fcurve_of(ob, "hide_render")
    hidden = np.array([fc.evaluate(f) >= 0.5 if fc else ob.hide_render for f in frames], bool)
    return pos, ~hidden, frames


def _objects_data(rig: ResultRig):
    return [object_frames(o)[:2] for o in rig.objects]


def fit_floor(rig: ResultRig, settings: ss.FloorSettings = ss.FloorSettings()) -> ss.FloorFit:
    """The floor under the result's objects, in Blender's world (up = +Z)."""
    return ss.find_floor(_objects_data(rig), ss.UP, settings=settings)


def _transform_root(rig: ResultRig, M: np.ndarray) -> None:
    from mathutils import Matrix

    rig.root.matrix_world = Matrix(M.tolist()) @ rig.root.matrix_world
    bpy.context.view_layer.update()  # the children's matrix_world follow only after an update


def align_floor(rig: ResultRig, settings: ss.FloorSettings = ss.FloorSettings()) -> str:
    """Move the result rigidly so that its floor is Blender's Z = 0; returns what was done."""
    fit = fit_floor(rig, settings)
    M = ss.floor_alignment(fit)
    _transform_root(rig, M)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(M[:3, :3]) - 1) / 2, -1, 1))))
    how = {"plane": f"a plane through {fit.inliers} of {fit.contacts} contact points",
           "line": f"the most level plane through {fit.contacts} contact points on a line",
           "level": f"a level plane ({fit.contacts} contact points span no plane within the tilt limit)"}[fit.method]
    _refresh_ground(rig)
    return (f"Floor of {rig.name}: {how}; turned {angle:.2f} degrees and moved "
            f"{float(np.linalg.norm(M[:3, 3])):.3f} to put it at Z = 0")


def measured_height(ob: bpy.types.Object) -> float:
    """An object's height along Blender's Z in scene units (median over its visible frames)."""
    pos, vis, _ = object_frames(ob)
    return ss.object_height(pos, vis, ss.UP)


def set_real_height(rig: ResultRig, ob: bpy.types.Object, height_m: float) -> str:
    """Scale the result uniformly so that ``ob`` is ``height_m`` tall; returns what was done.

    The pivot is the point of Z = 0 under the root, so a floor already at Z = 0 stays there. The
    camera's clip range is scaled with the scene so nothing it saw is clipped away.
    """
    if ob not in rig.objects:
        raise RigError(f"{ob.name} is not an object of {rig.name}")
    h = measured_height(ob)
    s = ss.scale_factor(h, height_m)
    loc = np.array(rig.root.matrix_world.translation, float)
    _transform_root(rig, ss.uniform_scale_about([loc[0], loc[1], 0.0], s))
    cam = rig.camera.data
    cam.clip_start *= s
    cam.clip_end *= s
    _refresh_ground(rig)
    return f"{rig.name} scaled by {s:.4g}: {ob.get('genmojo_name', ob.name)} is {height_m:.3g} m tall (was {h:.3g})"


def _refresh_ground(rig: ResultRig) -> None:
    from . import render_setup  # the ground it created follows the floor (import here: it imports us)

    render_setup.place_ground(rig)
