"""Import a GenMOJO result bundle into the current scene (Blender glue over ``core.import_plan``).

What gets created, all inside one collection named ``GenMOJO <result>``:

* ``<result>_root``: an Empty rotated -90 degrees about X that maps the bundle's OpenCV world
  (y down, z forward) to Blender's Z-up world. Everything below is parented to it and keeps the
  bundle's raw numbers, so one rotation of the root re-levels the whole result.
* ``<result>_<object>`` per object, in the representation chosen for it (``POINTS``, ``SPLATS`` or
  ``MESH``, see ``core.import_plan.REPRESENTATIONS``): a mesh whose frame-1 positions are its
  basis and with one shape key per frame (``frame_0001`` ...) whose weight is keyed to 1 on its
  frame only, LINEAR, so consecutive frames cross-fade and sub-frames (motion blur, retiming)
  interpolate the positions; visibility is keyed CONSTANT (a hidden object pops, it never fades).
  POINTS and SPLATS have one vertex per Gaussian with the point attributes
  ``Color`` (float colour), ``_opacity``, ``_scale`` (mean standard deviation), ``splat_sigma`` (the
  three standard deviations) and ``splat_rotation`` (quaternion), drawn by a Geometry Nodes modifier;
  MESH is a closed surface around the Gaussians with a ``Color`` attribute. The manifest colour
  becomes the object's viewport colour.
* ``<result>_camera``: location/rotation keyed per frame from ``c2w``, lens/shift from ``K``, the
  clip as its background when the source footage is found.
* ``<result>_background`` (bundles of background mode only): the static background Gaussians as
  points with the same attributes and display, never moving (no shape keys).

Scene resolution, frame rate and frame range (1..T) follow the clip. Importing the same bundle
folder again replaces the previous import and everything it created, but keeps what the artist
changed there (``keep.py``; ``keep_edits=False`` resets it). Showing splats raises Cycles'
transparent bounces to what the layered splats need (``core/splat_overlap.py``).

An import is all or nothing: the bundle is read and checked first, the previous import of the same
folder is only set aside (renamed) while the new one is built, and if anything fails on the way
every datablock created so far is deleted, the previous import gets its names back and the scene
settings the import changes are restored.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import bpy
import numpy as np

from ..core import import_plan as ip
from ..core import solve_report
from ..core import splat_overlap as so
from ..core.bundle import BundleError
from . import animation, display, keep

BUNDLE_PROP = "genmojo_bundle"
OBJECT_ID_PROP = "genmojo_object_id"
REPRESENTATION_PROP = "genmojo_representation"
BACKGROUND_PROP = "genmojo_background"
# bpy.data collections an import may add to; a failed import removes whatever it added to them.
_ID_COLLECTIONS = ("objects", "meshes", "materials", "node_groups", "cameras", "actions", "movieclips",
                   "collections", "images")
_PARKED_SUFFIX = "~genmojo-old"
# Frame shape keys cross-fade between consecutive frames; visibility stays a step (CONSTANT).
SHAPE_KEY_INTERPOLATION = "LINEAR"


@dataclass
class ImportResult:
    """What an import created, and any warnings the user should see."""

    bundle_root: str
    collection: bpy.types.Collection
    root: bpy.types.Object
    camera: bpy.types.Object
    objects: list[bpy.types.Object]
    warnings: list[str] = field(default_factory=list)
    background: bpy.types.Object | None = None  # background mode's static points, if the bundle has them
    kept: list[str] = field(default_factory=list)  # the artist's edits carried over from the last import
    notes: list[str] = field(default_factory=list)  # scene settings the import changed, and why


def find_imports(bundle_root: str) -> list[bpy.types.Collection]:
    """Collections created by earlier imports of the bundle folder ``bundle_root`` (resolved path)."""
    return [c for c in bpy.data.collections if c.get(BUNDLE_PROP) == bundle_root]


def scene_imports(scene: bpy.types.Scene) -> list[bpy.types.Collection]:
    """Collections of imported results linked into ``scene`` (at any depth), in outliner order."""
    return [c for c in scene.collection.children_recursive if c.get(BUNDLE_PROP)]


def _import_ids(collection: bpy.types.Collection) -> set:
    """Every datablock an import created: objects, their data (with shape keys), actions, clips."""
    root = collection.get(BUNDLE_PROP)
    collections = [collection] + list(collection.children_recursive)
    objects = {o for c in collections for o in c.objects}
    ids: set[bpy.types.ID] = set(collections)
    for ob in objects:
        ids |= _object_ids(ob)
    if root:
        ids.update(c for c in bpy.data.movieclips if c.get(BUNDLE_PROP) == root)
    return ids


def _object_ids(ob: bpy.types.Object) -> set:
    """An object, its data and the actions animating either of them or the data's shape keys."""
    ids: set[bpy.types.ID] = {ob}
    ids.update(animation.actions_of(ob))
    data = ob.data
    if data is not None:
        ids.add(data)
        ids.update(animation.actions_of(data))
        keys = getattr(data, "shape_keys", None)
        if keys is not None:
            ids.update(animation.actions_of(keys))
    return ids


def remove_import(collection: bpy.types.Collection) -> None:
    """Delete an imported result: its objects, meshes (with shape keys), cameras, actions, clips."""
    bpy.data.batch_remove(list(_import_ids(collection)))


def _with_shape_keys(ids: set) -> list:
    """``ids`` plus the shape-key datablocks of its meshes: they carry names too, but are removed
    with their mesh, never on their own."""
    keys = [getattr(x, "shape_keys", None) for x in ids if isinstance(x, bpy.types.Mesh)]
    return list(ids) + [k for k in keys if k is not None]


def _removable(ids) -> list:
    return [x for x in ids if not isinstance(x, bpy.types.Key)]


def _id_pointers() -> dict[str, set[int]]:
    return {k: {x.as_pointer() for x in getattr(bpy.data, k)} for k in _ID_COLLECTIONS}


_SCENE_SETTINGS = (("render", "resolution_x"), ("render", "resolution_y"), ("render", "pixel_aspect_x"),
                   ("render", "pixel_aspect_y"), ("render", "fps"), ("render", "fps_base"),
                   ("", "frame_start"), ("", "frame_end"), ("", "camera"), ("", "active_clip"),
                   ("cycles", "transparent_max_bounces"))


@contextmanager
def _transaction(scene: bpy.types.Scene, replaced: list[bpy.types.Collection]):
    """Build a new import next to the ones it ``replaced``; keep the scene exactly as it was if
    the body raises.

    The replaced imports are renamed out of the way (so the new one gets the plain names) and are
    only deleted once the body has succeeded.
    """
    before = _id_pointers()
    frame = scene.frame_current
    saved = []
    for owner_name, attr in _SCENE_SETTINGS:
        owner = getattr(scene, owner_name, None) if owner_name else scene
        if owner is not None and hasattr(owner, attr):
            saved.append((owner, attr, getattr(owner, attr)))
    parked = [(x, x.name) for c in replaced for x in _with_shape_keys(_import_ids(c))]
    for x, name in parked:
        x.name = name + _PARKED_SUFFIX
    try:
        yield
    except BaseException:
        created = [x for k in _ID_COLLECTIONS for x in getattr(bpy.data, k)
                   if x.as_pointer() not in before[k]]
        bpy.data.batch_remove(created)
        for x, name in parked:
            x.name = name
        for owner, attr, value in saved:
            setattr(owner, attr, value)
        scene.frame_set(frame)
        raise
    bpy.data.batch_remove(_removable(x for x, _ in parked))


def import_bundle(path: str, scene: bpy.types.Scene | None = None, *, point_display: bool = True,
                  set_scene: bool = True, load_plate: bool = True,
                  representation: str = ip.DEFAULT_REPRESENTATION,
                  representations: dict[str, str] | None = None,
                  surface_resolution: int = 48, surface_threshold: float = 0.5,
                  keep_edits: bool = True) -> ImportResult:
    """Import the bundle at ``path`` (folder or its manifest.json) into ``scene``.

    ``representation`` applies to every object unless ``representations`` (object id ->
    representation) says otherwise. When the same bundle folder was imported before and
    ``keep_edits`` is on, what the artist changed there (``keep.py``: root transform, object names,
    materials, visibility, representations, the frame) is carried over and listed in ``kept``;
    off, the result comes in as a first import would. ``point_display=False`` leaves POINTS/SPLATS objects as bare
    vertices without a display modifier. The bundle is fully read, validated and turned into
    geometry first (BundleError / ImportOptionError leave the scene untouched); a failure while
    Blender data is being created also leaves the scene exactly as it was.
    """
    scene = scene or bpy.context.scene
    plan = ip.plan_import(path)  # raises BundleError before anything is created
    previous = find_imports(plan.bundle_root)
    edits = _take_edits(previous[0], scene, plan) if keep_edits and previous else None
    modes = _modes(plan, representation, representations)
    if edits is not None:  # the representation each object had, unless asked for by id now
        explicit = set(representations or {})
        modes.update({oid: rep for oid, rep in edits.representations.items()
                      if oid in modes and oid not in explicit and rep in ip.REPRESENTATIONS})
    surfaces = {o.id: ip.plan_surface(o, resolution=surface_resolution, threshold=surface_threshold)
                for o in plan.objects if modes[o.id] == "MESH"}
    with _transaction(scene, previous):
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

        objects = [build_object(o, plan, modes[o.id], surfaces.get(o.id), root, coll, point_display)
                   for o in plan.objects]
        camera = _build_camera(plan, root, coll)
        background = (_build_background(plan, root, coll, point_display) if plan.background is not None
                      else None)
        warnings = list(plan.warnings)
        notes = []

        if set_scene:
            _apply_scene(plan.scene, scene)
            scene.camera = camera
        if "SPLATS" in modes.values():
            notes += ensure_splat_bounces(scene, plan, [o.id for o in plan.objects if modes[o.id] == "SPLATS"])
        if load_plate and plan.plate is not None:
            warnings += _attach_plate(plan, camera, scene)
        elif plan.plate is None:
            warnings.append("the bundle does not say where its footage is; no plate was attached")
        kept = (keep.apply(edits, root, objects, scene, id_prop=OBJECT_ID_PROP, collection=coll)
                if edits is not None else [])
        if edits is not None and edits.frame is not None:
            scene.frame_set(edits.frame)
        elif set_scene:
            scene.frame_set(plan.scene.frame_start)
    return ImportResult(bundle_root=plan.bundle_root, collection=coll, root=root, camera=camera,
                        objects=objects, warnings=warnings, background=background, kept=kept, notes=notes)


def _take_edits(collection: bpy.types.Collection, scene: bpy.types.Scene, plan: ip.ImportPlan) -> keep.ArtistEdits:
    return keep.take(collection, scene, root_prop=BUNDLE_PROP, id_prop=OBJECT_ID_PROP,
                     representation_prop=REPRESENTATION_PROP,
                     default_names={o.id: o.name for o in plan.objects},
                     default_materials={"MESH": [display.SURFACE_MATERIAL_NAME], "POINTS": [], "SPLATS": []})


def ensure_splat_bounces(scene: bpy.types.Scene, plan: ip.ImportPlan, splat_ids: list[str]) -> list[str]:
    """Raise Cycles' transparent bounces so rays through the layered splats of ``splat_ids`` reach
    the back (``core/splat_overlap.py``: twice the splats a ray typically crosses, through the
    import camera on the first, middle and last frame); a higher value already set is kept.
    Returns the report line, or none when nothing changed."""
    if not hasattr(scene, "cycles") or not splat_ids:
        return []
    need = splat_bounces(plan, splat_ids)
    have = scene.cycles.transparent_max_bounces
    if have >= need:
        return []
    scene.cycles.transparent_max_bounces = need
    return [f"Cycles transparent bounces raised from {have} to {need}: a ray crosses up to "
            f"{need // so.SURFACES_PER_SPLAT} layered splats (each one {so.SURFACES_PER_SPLAT} surfaces)"]


def splat_bounces(plan: ip.ImportPlan, splat_ids: list[str]) -> int:
    """The transparent bounces the splats of ``splat_ids`` need, counted through the plan's camera."""
    c, s = plan.camera, plan.scene
    chosen = [o for o in plan.objects if o.id in splat_ids]
    T = plan.frame_count
    overlap = 0
    for t in sorted({0, T // 2, T - 1}):
        cam = so.Camera(local=c.local_matrices[t], focal_px=float(c.lens[t]) * s.width / c.sensor_width,
                        cx=s.width / 2 - float(c.shift_x[t]) * s.width,
                        cy=s.height / 2 + float(c.shift_y[t]) * s.width, width=s.width, height=s.height)
        pos = np.concatenate([o.positions[t] for o in chosen])
        sig = np.concatenate([o.sigmas if o.sigmas is not None else np.repeat(o.scale[:, None], 3, 1)
                              for o in chosen])
        overlap = max(overlap, so.typical_overlap(so.footprint_counts(pos, sig, cam)))
    return so.transparent_bounces(overlap)


def _modes(plan: ip.ImportPlan, default: str, per_object: dict[str, str] | None) -> dict[str, str]:
    default = default.upper()
    if default not in ip.REPRESENTATIONS:
        raise ip.ImportOptionError(f"unknown representation {default!r} (choose from "
                                   f"{', '.join(ip.REPRESENTATIONS)})")
    per_object = {k: v.upper() for k, v in (per_object or {}).items()}
    ids = [o.id for o in plan.objects]
    for oid, mode in per_object.items():
        if oid not in ids:
            raise ip.ImportOptionError(f"the result has no object {oid} (it has {', '.join(ids)})")
        if mode not in ip.REPRESENTATIONS:
            raise ip.ImportOptionError(f"object {oid}: unknown representation {mode!r}")
    return {oid: per_object.get(oid, default) for oid in ids}


def change_representation(obj: bpy.types.Object, representation: str, *, point_display: bool = True,
                          surface_resolution: int = 48, surface_threshold: float = 0.5,
                          notes: list[str] | None = None) -> bpy.types.Object:
    """Rebuild one imported object in another representation, reading its bundle again.

    The new object takes the old one's name, parent, collections, transform, selection and hide
    flags (viewport/render ones only where the masks do not key them); the old object, its data
    and its actions are deleted. All or nothing, like an import. Switching to
    splats raises Cycles' transparent bounces as an import does, with the line for the report
    appended to ``notes``.
    """
    bundle_root, oid = obj.get(BUNDLE_PROP), obj.get(OBJECT_ID_PROP)
    if not bundle_root or not oid:
        raise ip.ImportOptionError(f"{obj.name} is not an object imported from a GenMOJO result")
    representation = representation.upper()
    if representation not in ip.REPRESENTATIONS:
        raise ip.ImportOptionError(f"unknown representation {representation!r}")
    plan = ip.plan_import(bundle_root, only_ids=[oid])
    if not plan.objects:
        raise BundleError(f"{bundle_root}: the result no longer has object {oid}")
    o = plan.objects[0]
    surface = (ip.plan_surface(o, resolution=surface_resolution, threshold=surface_threshold)
               if representation == "MESH" else None)
    scene = bpy.context.scene
    name, parent, colls = obj.name, obj.parent, list(obj.users_collection)
    basis, parent_inverse, selected = obj.matrix_basis.copy(), obj.matrix_parent_inverse.copy(), obj.select_get()
    hidden = keep.hide_flags(obj)
    was_active = bpy.context.view_layer.objects.active == obj
    old_ids = _object_ids(obj)
    before = _id_pointers()
    renamed = [(x, x.name) for x in _with_shape_keys(old_ids)]
    for x, n in renamed:
        x.name = n + _PARKED_SUFFIX
    try:
        new = build_object(o, plan, representation, surface, parent, colls[0] if colls else scene.collection,
                           point_display, name=name)
        for c in colls[1:]:
            c.objects.link(new)
        new.matrix_parent_inverse = parent_inverse
        new.matrix_basis = basis
        keep.set_hide_flags(new, hidden)
    except BaseException:
        bpy.data.batch_remove([x for k in _ID_COLLECTIONS for x in getattr(bpy.data, k)
                               if x.as_pointer() not in before[k]])
        for x, n in renamed:
            x.name = n
        raise
    bpy.data.batch_remove(list(old_ids))
    new.select_set(selected)
    if was_active:
        bpy.context.view_layer.objects.active = new
    if representation == "SPLATS":
        lines = ensure_splat_bounces(scene, plan, [oid])
        if notes is not None:
            notes += lines
    return new


def _euler_of(m: np.ndarray) -> tuple[float, float, float]:
    """XYZ Euler angles of a rotation matrix (the root only ever holds a pure rotation)."""
    from mathutils import Matrix

    return tuple(Matrix(np.asarray(m)[:3, :3].tolist()).to_euler("XYZ"))


def build_object(o: ip.ObjectPlan, plan: ip.ImportPlan, representation: str,
                 surface: ip.SurfacePlan | None, root, coll, point_display: bool, *, name: str = ""):
    """Create one object of a result in the given representation (see the module docstring)."""
    name = name or o.name
    if representation == "MESH":
        mesh, frames = _surface_mesh(name, surface), surface.positions
    else:
        mesh, frames = _point_mesh(name, o), o.positions
    obj = bpy.data.objects.new(name, mesh)
    obj.parent = root
    obj.color = (*o.color, 1.0)
    obj[BUNDLE_PROP] = plan.bundle_root
    obj[OBJECT_ID_PROP] = o.id
    obj["genmojo_name"] = o.label
    obj[REPRESENTATION_PROP] = representation
    coll.objects.link(obj)
    _key_frames(obj, frames)

    if not all(o.visible):
        vis = ip.visibility_keys(o.visible)
        keyed = [f for f, _ in vis]
        hidden = [0.0 if v else 1.0 for _, v in vis]
        bag = animation.new_action(obj, f"{name}_visibility")
        for prop in ("hide_viewport", "hide_render"):
            animation.key_curve(bag, prop, keyed, hidden, interpolation="CONSTANT")
    if representation == "MESH":
        mesh.materials.append(display.surface_material())
    elif point_display and representation == "SPLATS":
        display.add_splats_display(obj)
    elif point_display:
        display.add_points_display(obj)
    return obj


def _color_attribute(mesh, colors_srgb: np.ndarray) -> None:
    color = mesh.color_attributes.new(display.COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    rgba = np.ones((len(colors_srgb), 4), np.float32)
    rgba[:, :3] = ip.srgb_to_linear(colors_srgb)
    color.data.foreach_set("color", rgba.ravel())
    mesh.color_attributes.active_color = color
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index


def _point_mesh(name: str, o: ip.ObjectPlan):
    """One vertex per Gaussian at frame 1, with the Gaussians' display attributes."""
    N = o.num_points
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(N)
    mesh.vertices.foreach_set("co", o.positions[0].ravel())
    _color_attribute(mesh, o.colors_srgb)
    sigmas = o.sigmas if o.sigmas is not None else np.repeat(o.scale[:, None], 3, axis=1)
    rotations = o.rotations if o.rotations is not None else np.tile([1.0, 0, 0, 0], (N, 1))
    for attr, kind, prop, values in (
            (display.OPACITY_ATTRIBUTE, "FLOAT", "value", o.opacity),
            (display.SCALE_ATTRIBUTE, "FLOAT", "value", o.scale),
            (display.SIGMA_ATTRIBUTE, "FLOAT_VECTOR", "vector", sigmas),
            (display.ROTATION_ATTRIBUTE, "QUATERNION", "value", rotations)):
        mesh.attributes.new(attr, kind, "POINT").data.foreach_set(
            prop, np.ascontiguousarray(values, np.float32).ravel())
    mesh.update()
    return mesh


def _surface_mesh(name: str, s: ip.SurfacePlan):
    """The surface's polygons at frame 1, smooth-shaded, coloured from the nearby Gaussians."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(s.num_vertices)
    mesh.vertices.foreach_set("co", s.positions[0].ravel())
    mesh.loops.add(len(s.face_vertices))
    mesh.polygons.add(len(s.face_sizes))
    starts = np.concatenate([[0], np.cumsum(s.face_sizes)[:-1]]).astype(np.int32)
    mesh.polygons.foreach_set("loop_start", starts)
    mesh.loops.foreach_set("vertex_index", s.face_vertices)
    mesh.update(calc_edges=True)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(s.face_sizes), bool))
    _color_attribute(mesh, s.colors_srgb)
    mesh.validate(clean_customdata=False)
    mesh.update()
    return mesh


def _key_frames(obj, frames: np.ndarray) -> None:
    """Basis = frame 1; one shape key per frame whose weight is 1 on its own frame only.

    The weights are keyed LINEAR, so between frames i and i+1 key i fades 1 -> 0 while key i+1
    fades 0 -> 1: the weights sum to 1 and a sub-frame shows the straight blend of the two baked
    frames (motion blur and retiming move smoothly instead of stepping)."""
    T = frames.shape[0]
    obj.shape_key_add(name="Basis", from_mix=False)
    names = []
    for i in range(T):
        kb = obj.shape_key_add(name=ip.shape_key_name(i), from_mix=False)
        kb.data.foreach_set("co", np.ascontiguousarray(frames[i], np.float32).ravel())
        kb.value = 1.0 if i == 0 else 0.0
        names.append(kb.name)
    keys = obj.data.shape_keys
    keys.name = f"{obj.name}_keys"
    bag = animation.new_action(keys, f"{obj.name}_frames")
    for i, kname in enumerate(names):
        keyed, values = zip(*ip.shape_key_weight_keys(i, T))
        animation.key_curve(bag, f'key_blocks["{kname}"].value', keyed, values,
                            interpolation=SHAPE_KEY_INTERPOLATION)


def _build_background(plan: ip.ImportPlan, root, coll, point_display: bool):
    """The static background: a point mesh like an object's, without shape keys or visibility keys,
    and without an object id (the per-object buttons and rigid exports leave it alone)."""
    b = plan.background
    mesh = _point_mesh(b.name, b.as_points(plan.frame_count))
    obj = bpy.data.objects.new(b.name, mesh)
    obj.parent = root
    obj.color = (*ip.BACKGROUND_COLOR, 1.0)
    obj[BUNDLE_PROP] = plan.bundle_root
    obj[BACKGROUND_PROP] = True
    coll.objects.link(obj)
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
    if c.solve is not None:  # a solved camera: its per-frame error as an F-curve on a custom property
        key_frames, errors = solve_report.error_keys(c.solve, plan.scene.frame_start)
        obj[solve_report.SUMMARY_PROP] = "\n".join(solve_report.summary_lines(c.solve, plan.scene.frame_start))
        if key_frames:
            obj[solve_report.ERROR_PROP] = errors[0]
            animation.key_curve(bag, f'["{solve_report.ERROR_PROP}"]', key_frames, errors)
        obj[solve_report.REGISTERED_PROP] = 1.0
        animation.key_curve(bag, f'["{solve_report.REGISTERED_PROP}"]', frames,
                            [1.0 if r else 0.0 for r in c.solve.registered], interpolation="CONSTANT")
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


__all__ = ["BundleError", "ImportResult", "import_bundle", "find_imports", "scene_imports", "remove_import",
           "BUNDLE_PROP",
           "change_representation", "build_object"]
