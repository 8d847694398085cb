"""One-click render set-up for an imported result: the footage in the render, a shadow catcher on
the floor, holdouts, a sun and a world.

It follows Blender's own *Setup Tracking Scene* (Movie Clip Editor): Cycles with a transparent
film renders the objects and the shadows they cast on a shadow-catcher ground (``is_shadow_catcher``),
and a compositor node tree lays that render over the footage (Movie Clip -> Scale to render size
-> Alpha Over under the Render Layers image -> Group Output, plus a Viewer). Motion blur is turned
on as that set-up does. Differences: one view layer instead of a foreground and a background one
(the Cycles shadow catcher of Blender 3.0+ puts the shadows into the transparent render's alpha, so
the plain Alpha Over darkens the footage under them), the ground is laid on the floor fitted to the
objects (``core/scene_scale.py``) instead of at Z = 0, and the view transform is set to Standard
so the footage comes out with its own colours.

Holdouts: an object that is in the footage already (only its shadows are wanted) gets Blender's
``is_holdout``: it still casts shadows on the catcher but leaves the footage visible where it is.
The static background of background mode is a holdout and casts no shadow (the footage has its own).

Running it again reuses what it created (tagged with ``SETUP_PROP``) and duplicates nothing; it
never deletes anything of the user's: a compositor node tree the scene had is kept with a fake user
and listed in the report, an existing world and existing lights are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np

from ..core import render_scene as rs
from ..core import scene_scale as ss
from . import animation, floor_scale, importer

SETUP_PROP = "genmojo_render_setup"  # the bundle folder, on everything the set-up created
ROLE_PROP = "genmojo_render_role"     # which part of the set-up it is: one of the ROLE_* below
ROLE_COLLECTION, ROLE_SUN, ROLE_GROUND, ROLE_WORLD, ROLE_COMPOSITOR = (
    "collection", "sun", "ground", "world", "compositor")
VIEW_TRANSFORM = "Standard"  # footage in, footage out: no tone mapping of the plate


@dataclass
class RenderSetupReport:
    """What the set-up created, which settings it changed, what it kept, and warnings."""

    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.created:
            parts.append("created " + ", ".join(self.created))
        if self.changed:
            parts.append("changed " + "; ".join(self.changed))
        if self.kept:
            parts.append("kept " + "; ".join(self.kept))
        return "Render set-up: " + (". ".join(parts) if parts else "everything was already set up")


def _owned(ids, rig: floor_scale.ResultRig, role: str):
    return next((x for x in ids if x.get(SETUP_PROP) == rig.bundle_root and x.get(ROLE_PROP) == role), None)


def _tag(x, rig: floor_scale.ResultRig, role: str):
    x[SETUP_PROP] = rig.bundle_root
    x[ROLE_PROP] = role
    return x


def _set(report: RenderSetupReport, owner, attr: str, value, why: str) -> None:
    old = getattr(owner, attr)
    if old != value:
        setattr(owner, attr, value)
        report.changed.append(f"{why} ({old} -> {value})")


def setup_render_scene(scene: bpy.types.Scene, rig: floor_scale.ResultRig, *,
                       holdouts: dict[str, bool] | None = None, view_layer: bpy.types.ViewLayer | None = None,
                       settings: rs.RenderSceneSettings = rs.RenderSceneSettings()) -> RenderSetupReport:
    """Set ``scene`` up to render ``rig`` over its footage (see the module docstring).

    ``holdouts`` maps object ids (``genmojo_object_id``) or object names to whether the object is
    a holdout; objects it does not name keep their current setting.
    """
    report = RenderSetupReport()
    holdouts = dict(holdouts or {})
    known = {o.get(importer.OBJECT_ID_PROP) for o in rig.objects} | {o.name for o in rig.objects}
    unknown = sorted(set(holdouts) - known)
    if unknown:
        raise floor_scale.RigError(f"{rig.name} has no object {', '.join(unknown)} (holdouts name object ids "
                                   "or names of the result)")
    fit = floor_scale.fit_floor(rig)  # reads the objects before anything changes; raises on bad data

    r = scene.render
    _set(report, r, "engine", "CYCLES", "render engine, for the shadow catcher (Cycles only)")
    _set(report, r, "film_transparent", True, "transparent film, so the footage shows behind the render")
    _set(report, r, "use_motion_blur", True, "motion blur")
    _set(report, scene.view_settings, "view_transform", VIEW_TRANSFORM,
         "view transform, so the footage keeps its colours")
    if scene.camera != rig.camera:
        old = scene.camera.name if scene.camera else "none"
        scene.camera = rig.camera
        report.changed.append(f"scene camera ({old} -> {rig.camera.name})")

    coll = _ensure_collection(scene, rig, report)
    _ensure_world(scene, rig, report, settings)
    _ensure_sun(scene, rig, coll, report, settings)
    _ensure_ground(rig, coll, report, fit, settings)
    _setup_objects(rig, holdouts, report)
    _ensure_compositor(scene, rig, view_layer or scene.view_layers[0], report)
    return report


def _ensure_collection(scene, rig, report):
    coll = _owned(bpy.data.collections, rig, ROLE_COLLECTION)
    if coll is None:
        coll = _tag(bpy.data.collections.new(f"GenMOJO {rig.name} render"), rig, ROLE_COLLECTION)
        report.created.append(f"collection {coll.name}")
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def _ensure_world(scene, rig, report, settings):
    if scene.world is not None:
        if not scene.world.get(SETUP_PROP):
            report.kept.append(f"the scene's world {scene.world.name}")
        return
    world = _owned(bpy.data.worlds, rig, ROLE_WORLD)
    if world is None:
        world = _tag(bpy.data.worlds.new(f"GenMOJO {rig.name} world"), rig, ROLE_WORLD)
        world.use_nodes = True
        bg = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
        bg.inputs["Color"].default_value = (*settings.world_color, 1.0)
        bg.inputs["Strength"].default_value = settings.world_strength
        report.created.append(f"world {world.name}")
    scene.world = world


def _camera_world_positions(rig) -> np.ndarray:
    """The camera's world positions on its keyed frames (the location keys under the root)."""
    cam = rig.camera
    fcs = [animation.fcurve_of(cam, "location", i) for i in range(3)]
    frames = sorted({k.co[0] for fc in fcs if fc for k in fc.keyframe_points}) or [None]
    parent = np.array(cam.parent.matrix_world @ cam.matrix_parent_inverse) if cam.parent else np.eye(4)
    out = []
    for f in frames:
        loc = [fc.evaluate(f) if fc and f is not None else cam.location[i] for i, fc in enumerate(fcs)]
        out.append(parent[:3, :3] @ loc + parent[:3, 3])
    return np.array(out)


def _ensure_sun(scene, rig, coll, report, settings):
    from mathutils import Matrix

    sun = _owned(bpy.data.objects, rig, ROLE_SUN)
    if sun is not None:
        report.kept.append(f"sun {sun.name}")
    else:
        data = bpy.data.lights.new(f"{rig.name}_sun", "SUN")
        data.energy = settings.sun_strength
        data.angle = np.radians(settings.sun_angle_deg)
        sun = _tag(bpy.data.objects.new(f"{rig.name}_sun", data), rig, ROLE_SUN)
        _tag(data, rig, ROLE_SUN)
        forward = -np.array(rig.camera.matrix_world, float)[:3, 2]
        R = rs.sun_rotation(forward, ss.UP, settings)
        M = np.eye(4)
        M[:3, :3] = R
        M[:3, 3] = _camera_world_positions(rig)[0] + 5.0 * -(R @ [0, 0, -1.0])  # placed up-sun (cosmetic)
        sun.matrix_world = Matrix(M.tolist())
        report.created.append(f"sun {sun.name}")
    if sun.name not in coll.objects:
        coll.objects.link(sun)


def _ensure_ground(rig, coll, report, fit, settings):
    ground = _owned(bpy.data.objects, rig, ROLE_GROUND)
    if ground is None:
        mesh = _tag(bpy.data.meshes.new(f"{rig.name}_shadow_catcher"), rig, ROLE_GROUND)
        mesh.vertices.add(4)
        mesh.loops.add(4)
        mesh.polygons.add(1)
        mesh.polygons.foreach_set("loop_start", [0])
        mesh.loops.foreach_set("vertex_index", [0, 1, 2, 3])
        ground = _tag(bpy.data.objects.new(mesh.name, mesh), rig, ROLE_GROUND)
        ground.is_shadow_catcher = True
        report.created.append(f"shadow catcher {ground.name}")
    else:
        report.kept.append(f"shadow catcher {ground.name} (laid on the floor again)")
    if ground.name not in coll.objects:
        coll.objects.link(ground)
    _lay_ground(rig, ground, fit, settings)


def _lay_ground(rig, ground, fit: ss.FloorFit, settings) -> None:
    from mathutils import Matrix

    data = [floor_scale.object_frames(o)[:2] for o in rig.objects]
    heights = [ss.object_height(p, v) for p, v in data if np.any(v)]
    contacts = ss.contact_points(data, fit.normal)
    half = rs.ground_half_size(fit, np.concatenate([contacts, _camera_world_positions(rig)]),
                               float(np.median(heights)), settings)
    co = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], np.float32)
    ground.data.vertices.foreach_set("co", co.ravel())
    ground.data.update(calc_edges=True)
    ground.matrix_world = Matrix(rs.ground_matrix(fit).tolist())


def place_ground(rig: floor_scale.ResultRig, settings: rs.RenderSceneSettings = rs.RenderSceneSettings()) -> bool:
    """Lay the set-up's shadow catcher (if there is one) on the result's floor again, e.g. after
    the result was moved or scaled. Returns whether there was one."""
    ground = _owned(bpy.data.objects, rig, ROLE_GROUND)
    if ground is None:
        return False
    _lay_ground(rig, ground, floor_scale.fit_floor(rig), settings)
    return True


def _setup_objects(rig, holdouts, report):
    for ob in rig.objects:
        for attr in ("visible_camera", "visible_shadow"):
            if not getattr(ob, attr):
                setattr(ob, attr, True)
                report.changed.append(f"{ob.name} {attr.replace('_', ' ')}")
        want = holdouts.get(ob.get(importer.OBJECT_ID_PROP), holdouts.get(ob.name))
        if want is not None and bool(ob.is_holdout) != bool(want):
            ob.is_holdout = bool(want)
            report.changed.append(f"{ob.name} {'is now' if want else 'is no longer'} a holdout")
    bg = rig.background
    if bg is not None and (not bg.is_holdout or bg.visible_shadow):
        bg.is_holdout = True
        bg.visible_shadow = False
        report.changed.append(f"{bg.name} is a holdout without shadows (the footage shows the background)")


def plate_clip(rig: floor_scale.ResultRig):
    """The footage the import loaded for ``rig`` (a movie clip), or None."""
    for bg in rig.camera.data.background_images:
        if bg.source == "MOVIE_CLIP" and bg.clip is not None:
            return bg.clip
    return next((c for c in bpy.data.movieclips if c.get(importer.BUNDLE_PROP) == rig.bundle_root), None)


def _ensure_compositor(scene, rig, view_layer, report):
    clip = plate_clip(rig)
    if clip is None:
        report.warnings.append(f"{rig.name} has no footage loaded (it was not found at import): the render "
                               "has a transparent background and no plate; import again with the footage "
                               "where the bundle says it is")
        return
    current = scene.compositing_node_group
    if current is not None and not (current.get(SETUP_PROP) == rig.bundle_root
                                    and current.get(ROLE_PROP) == ROLE_COMPOSITOR):
        current.use_fake_user = True
        report.kept.append(f"the compositor node tree {current.name} (with a fake user; pick it again in the "
                           "compositor to use it)")
    tree = _owned(bpy.data.node_groups, rig, ROLE_COMPOSITOR)
    if tree is None:
        tree = _tag(bpy.data.node_groups.new(f"GenMOJO {rig.name} plate", "CompositorNodeTree"), rig,
                    ROLE_COMPOSITOR)
        report.created.append(f"compositor node tree {tree.name}")
    _build_plate_nodes(tree, scene, view_layer, clip)
    if scene.compositing_node_group != tree:
        scene.compositing_node_group = tree
    _set(report, scene.render, "use_compositing", True, "compositing")


def _build_plate_nodes(tree, scene, view_layer, clip) -> None:
    """Movie Clip -> Scale (render size) -> Alpha Over background; Render Layers -> foreground."""
    tree.nodes.clear()
    if not any(s.in_out == "OUTPUT" and s.name == "Image" for s in tree.interface.items_tree
               if getattr(s, "item_type", "") == "SOCKET"):
        tree.interface.new_socket(name="Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    n, links = tree.nodes, tree.links
    layers = n.new("CompositorNodeRLayers")
    layers.scene = scene
    layers.layer = view_layer.name
    plate = n.new("CompositorNodeMovieClip")
    plate.clip = clip
    scale = n.new("CompositorNodeScale")
    scale.inputs["Type"].default_value = "Render Size"
    over = n.new("CompositorNodeAlphaOver")
    out = n.new("NodeGroupOutput")
    viewer = n.new("CompositorNodeViewer")
    links.new(plate.outputs["Image"], scale.inputs["Image"])
    links.new(scale.outputs["Image"], over.inputs["Background"])
    links.new(layers.outputs["Image"], over.inputs["Foreground"])
    links.new(over.outputs["Image"], out.inputs["Image"])
    links.new(over.outputs["Image"], viewer.inputs["Image"])
    for node, xy in ((plate, (-500, 250)), (scale, (-250, 250)), (layers, (-500, -150)), (over, (50, 100)),
                     (out, (350, 150)), (viewer, (350, -50))):
        node.location = xy
