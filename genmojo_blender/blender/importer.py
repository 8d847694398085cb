"""Import a GenMOJO result bundle into the current scene (Blender glue over ``core.import_plan``).

What gets created, all inside one collection named ``GenMOJO <result>``:

* ``<result>_root``: an Empty rotated -90 degrees about X that maps the bundle's OpenCV world
  (y down, z forward) to Blender's Z-up world. Everything below is parented to it and keeps the
  bundle's raw numbers, so one rotation of the root re-levels the whole result.
* ``<result>_<object>`` per object: a mesh with one vertex per Gaussian, the frame-1 positions as
  its basis, one shape key per frame (``frame_0001`` ...) whose weight is keyed (CONSTANT) to 1 on
  its frame only. Point attributes: ``Color`` (float colour), ``_opacity`` and ``_scale`` (mean
  standard deviation); the manifest colour becomes the object's viewport colour.
* ``<result>_camera``: location/rotation keyed per frame from ``c2w``, lens/shift from ``K``, the
  clip as its background when the source footage is found.

Scene resolution, frame rate and frame range (1..T) follow the clip. Importing the same bundle
folder again replaces the previous import and everything it created.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np

from ..core import import_plan as ip
from ..core.bundle import BundleError
from . import animation, display

BUNDLE_PROP = "genmojo_bundle"


@dataclass
class ImportResult:
    """What an import created, and any warnings the user should see."""

    bundle_root: str
    collection: bpy.types.Collection
    root: bpy.types.Object
    camera: bpy.types.Object
    objects: list[bpy.types.Object]
    warnings: list[str] = field(default_factory=list)


def find_imports(bundle_root: str) -> list[bpy.types.Collection]:
    """Collections created by earlier imports of the bundle folder ``bundle_root`` (resolved path)."""
    return [c for c in bpy.data.collections if c.get(BUNDLE_PROP) == bundle_root]


def remove_import(collection: bpy.types.Collection) -> None:
    """Delete an imported result: its objects, meshes (with shape keys), cameras, actions, clips."""
    root = collection.get(BUNDLE_PROP)
    collections = [collection] + list(collection.children_recursive)
    objects = {o for c in collections for o in c.objects}
    ids: set[bpy.types.ID] = set(objects)
    for ob in objects:
        ids.update(animation.actions_of(ob))
        data = ob.data
        if data is None:
            continue
        ids.add(data)
        ids.update(animation.actions_of(data))
        keys = getattr(data, "shape_keys", None)
        if keys is not None:
            ids.update(animation.actions_of(keys))
    if root:
        ids.update(c for c in bpy.data.movieclips if c.get(BUNDLE_PROP) == root)
    ids.update(collections)
    bpy.data.batch_remove(list(ids))


def import_bundle(path: str, scene: bpy.types.Scene | None = None, *, point_display: bool = True,
                  set_scene: bool = True, load_plate: bool = True) -> ImportResult:
    """Import the bundle at ``path`` (folder or its manifest.json) into ``scene``.

    The bundle is fully read and validated first; a BundleError leaves the scene untouched.
    """
    scene = scene or bpy.context.scene
    plan = ip.plan_import(path)  # raises BundleError before anything is created
    for old in find_imports(plan.bundle_root):
        remove_import(old)

    coll = bpy.data.collections.new(plan.collection_name)
    coll[BUNDLE_PROP] = plan.bundle_root
    scene.collection.children.link(coll)

    root = bpy.data.objects.new(plan.root_name, None)
    root.empty_display_type = "ARROWS"
    root.empty_display_size = 0.5
    root.rotation_mode = "XYZ"
    root.rotation_euler = _euler_of(plan.root_matrix)
    root[BUNDLE_PROP] = plan.bundle_root
    coll.objects.link(root)

    objects = [_build_object(o, plan, root, coll, point_display) for o in plan.objects]
    camera = _build_camera(plan, root, coll)
    warnings = list(plan.warnings)

    if set_scene:
        _apply_scene(plan.scene, scene)
        scene.camera = camera
    if load_plate and plan.plate is not None:
        warnings += _attach_plate(plan, camera, scene)
    elif plan.plate is None:
        warnings.append("the bundle does not say where its footage is; no plate was attached")
    if set_scene:
        scene.frame_set(plan.scene.frame_start)
    return ImportResult(bundle_root=plan.bundle_root, collection=coll, root=root, camera=camera,
                        objects=objects, warnings=warnings)


def _euler_of(m: np.ndarray) -> tuple[float, float, float]:
    """XYZ Euler angles of a rotation matrix (the root only ever holds a pure rotation)."""
    from mathutils import Matrix

    return tuple(Matrix(np.asarray(m)[:3, :3].tolist()).to_euler("XYZ"))


def _build_object(o: ip.ObjectPlan, plan: ip.ImportPlan, root, coll, point_display: bool):
    T, N = o.positions.shape[:2]
    mesh = bpy.data.meshes.new(o.name)
    mesh.vertices.add(N)
    mesh.vertices.foreach_set("co", o.positions[0].ravel())
    color = mesh.color_attributes.new(display.COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    rgba = np.ones((N, 4), np.float32)
    rgba[:, :3] = ip.srgb_to_linear(o.colors_srgb)
    color.data.foreach_set("color", rgba.ravel())
    mesh.color_attributes.active_color = color
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    for name, values in ((display.OPACITY_ATTRIBUTE, o.opacity), (display.SCALE_ATTRIBUTE, o.scale)):
        mesh.attributes.new(name, "FLOAT", "POINT").data.foreach_set("value", values)
    mesh.update()

    obj = bpy.data.objects.new(o.name, mesh)
    obj.parent = root
    obj.color = (*o.color, 1.0)
    obj[BUNDLE_PROP] = plan.bundle_root
    obj["genmojo_object_id"] = o.id
    obj["genmojo_name"] = o.label
    coll.objects.link(obj)

    obj.shape_key_add(name="Basis", from_mix=False)
    names = []
    for i in range(T):
        kb = obj.shape_key_add(name=ip.shape_key_name(i), from_mix=False)
        kb.data.foreach_set("co", o.positions[i].ravel())
        kb.value = 1.0 if i == 0 else 0.0
        names.append(kb.name)
    keys = mesh.shape_keys
    keys.name = f"{o.name}_keys"
    bag = animation.new_action(keys, f"{o.name}_frames")
    for i, kname in enumerate(names):
        frames, values = zip(*ip.shape_key_weight_keys(i, T))
        animation.key_curve(bag, f'key_blocks["{kname}"].value', frames, values,
                            interpolation="CONSTANT")

    if not all(o.visible):
        vis = ip.visibility_keys(o.visible)
        frames = [f for f, _ in vis]
        hidden = [0.0 if v else 1.0 for _, v in vis]
        bag = animation.new_action(obj, f"{o.name}_visibility")
        for prop in ("hide_viewport", "hide_render"):
            animation.key_curve(bag, prop, frames, hidden, interpolation="CONSTANT")
    if point_display:
        display.add_points_display(obj)
    return obj


def _build_camera(plan: ip.ImportPlan, root, coll):
    c = plan.camera
    data = bpy.data.cameras.new(c.name)
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = c.sensor_width
    data.lens = float(c.lens[0])
    data.shift_x = float(c.shift_x[0])
    data.shift_y = float(c.shift_y[0])
    data.clip_start = c.clip_start
    data.clip_end = c.clip_end
    obj = bpy.data.objects.new(c.name, data)
    obj.parent = root
    obj.rotation_mode = "QUATERNION"
    obj.location = c.locations[0]
    obj.rotation_quaternion = c.quaternions[0]
    obj[BUNDLE_PROP] = plan.bundle_root
    coll.objects.link(obj)

    frames = np.arange(plan.scene.frame_start, plan.scene.frame_end + 1, dtype=np.float32)
    bag = animation.new_action(obj, f"{c.name}_motion")
    animation.key_vector(bag, "location", frames, c.locations)
    animation.key_vector(bag, "rotation_quaternion", frames, c.quaternions)
    if not c.static_intrinsics:
        bag = animation.new_action(data, f"{c.name}_lens")
        for prop, values in (("lens", c.lens), ("shift_x", c.shift_x), ("shift_y", c.shift_y)):
            animation.key_curve(bag, prop, frames, values)
    return obj


def _apply_scene(s: ip.ScenePlan, scene: bpy.types.Scene) -> None:
    r = scene.render
    r.resolution_x, r.resolution_y = s.width, s.height
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.fps, r.fps_base = s.fps, s.fps_base
    scene.frame_start, scene.frame_end = s.frame_start, s.frame_end


def _attach_plate(plan: ip.ImportPlan, camera, scene) -> list[str]:
    p = plan.plate
    if not p.exists:
        return [f"footage not found at {p.path}; imported without a camera background"]
    try:
        clip = bpy.data.movieclips.load(p.path, check_existing=False)
    except RuntimeError as e:
        return [f"could not load the footage {p.path} ({e}); imported without a camera background"]
    clip.name = f"{plan.result_name}_plate"
    clip[BUNDLE_PROP] = plan.bundle_root
    clip.frame_start = plan.scene.frame_start
    if p.kind == "MOVIE":
        clip.frame_offset = p.frame_offset
    data = camera.data
    bg = data.background_images.new()
    bg.source = "MOVIE_CLIP"
    bg.clip = clip
    bg.frame_method = "FIT"
    bg.alpha = 1.0
    data.show_background_images = True
    scene.active_clip = clip
    return []


__all__ = ["BundleError", "ImportResult", "import_bundle", "find_imports", "remove_import", "BUNDLE_PROP"]
