"""Exporters with the settings that keep a GenMOJO result's animation.

glTF/GLB: vertex-only meshes become POINTS primitives (``use_mesh_vertices``), per-frame shape keys
become morph targets with an animated weight channel (``export_morph`` + ``export_morph_animation``),
the point attributes ``_opacity``/``_scale`` are written as ``_OPACITY``/``_SCALE`` and the colour as
``COLOR_0`` (``export_attributes``, colour export on), the camera and its keys are included, and
modifiers are left unapplied (the point display modifier would otherwise drop the shape keys).

Blender's glTF exporter (5.0) only writes COLOR_0 for meshes with faces, so for vertex-only meshes
the ``Color`` attribute is exported as the custom attribute ``_COLOR_0`` (renamed for the duration of
the export) and the written file is then patched to call it ``COLOR_0``, the standard name every
glTF viewer reads.

FBX: shape-key animation is only written when the scene is baked globally
(``bake_anim_use_nla_strips=False``, ``bake_anim_use_all_actions=False``); the defaults write an
empty animation stack.

Rigid option (``rigid=True``), for engines without morph targets: for the duration of the export
every imported GenMOJO object is replaced by a stand-in with the same name that holds the frame-1
geometry without shape keys and one location/rotation key per frame, the least-squares rigid
motion of its per-frame shapes (``core/rigid.py``, weighted by the Gaussians' opacities). The
stand-ins are deleted and the originals restored afterwards, whatever happens.

USD and Alembic (``export_usd``, ``export_alembic``): baked caches through Blender's own exporters,
with the point/splat display modifiers off for the duration so each GenMOJO object is written as
its vertices at every frame (the section below says why they had none before). Both refuse to
replace an existing file unless ``overwrite`` is set and write through a temporary sibling.
The splat formats (3DGS PLY sequences, glTF ``KHR_gaussian_splatting``, USD particle fields) are
in ``splat_export.py``.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np

from ..core import export_files
from ..core import rigid as rigid_fit
from ..core.camera import decompose_rigid
from . import animation, display, fbx_timing

_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A
_TEMP_COLOR_NAME = "_COLOR_0"


def gltf_settings(path: str, *, selected_only: bool = False, collection: str = "") -> dict:
    """Keyword arguments for ``bpy.ops.export_scene.gltf`` that keep morph animation and the camera."""
    fmt = "GLTF_SEPARATE" if path.lower().endswith(".gltf") else "GLB"
    kw = dict(filepath=path, export_format=fmt, use_selection=selected_only,
              use_mesh_vertices=True, use_mesh_edges=False, export_apply=False,
              export_morph=True, export_morph_normal=False, export_morph_animation=True,
              export_attributes=True, export_vertex_color="ACTIVE", export_all_vertex_colors=False,
              export_cameras=True, export_animations=True, export_animation_mode="SCENE",
              export_anim_scene_split_object=False, export_optimize_animation_keep_anim_object=True,
              export_frame_range=True,
              export_force_sampling=True, export_anim_single_armature=False,
              export_yup=True, export_extras=False)
    if collection:
        kw.update(use_active_collection=False, collection=collection)
    return kw


def supported_settings(operator, settings: dict) -> dict:
    """The subset of ``settings`` that this Blender's version of an exporter operator knows.

    Exporter options come and go between Blender releases; passing an unknown keyword fails the
    whole export, while a missing optional one only loses a refinement.
    """
    known = set(operator.get_rna_type().properties.keys())
    return {k: v for k, v in settings.items() if k in known}


# Warn when an object's rigid approximation is off by more than this fraction of its size.
RIGID_WARN_RELATIVE = 0.05


GLTF_EXTENSIONS = (".glb", ".gltf")


def export_glb(path: str, *, selected_only: bool = False, rigid: bool = False,
               warnings: list[str] | None = None, overwrite: bool = False) -> str:
    """Export the current scene to glTF binary (``.glb``) or ``.gltf``; returns the written path.

    ``rigid`` bakes each GenMOJO object's motion into per-frame transforms (see the module
    docstring); what the fit could not reproduce is appended to ``warnings``. An existing file is
    refused (``ExportError``) unless ``overwrite``; a ``.glb`` is written to a hidden sibling and
    renamed into place. A ``.gltf`` names its ``.bin`` inside itself, so both are checked and
    written under their final names.
    """
    target = _cache_target(path, GLTF_EXTENSIONS, overwrite)
    separate = target.suffix.lower() == ".gltf"
    if separate:
        export_files.check_targets([target, target.with_suffix(".bin")], overwrite=overwrite)

    def run(p: str):
        with _rigid_stand_ins(rigid, selected_only, warnings) as use_selection, _colors_as_custom_attributes():
            op = bpy.ops.export_scene.gltf
            result = op(**supported_settings(op, gltf_settings(p, selected_only=use_selection)))
        if "FINISHED" in result and os.path.isfile(p):
            promote_point_colors(p)
        return result

    if not separate:
        return _export_to_temp_then_rename(target, run)
    if "FINISHED" not in run(str(target)) or not target.is_file():
        raise RuntimeError(f"glTF export did not write {target}")
    return str(target)


@contextmanager
def _colors_as_custom_attributes():
    """Temporarily rename the colour attribute of face-less meshes so the exporter writes it."""
    renamed = []
    try:
        for mesh in bpy.data.meshes:
            if len(mesh.polygons) or mesh.library is not None:
                continue
            attr = mesh.color_attributes.get(display.COLOR_ATTRIBUTE)
            if attr is None or attr.domain != "POINT" or _TEMP_COLOR_NAME in mesh.attributes:
                continue
            attr.name = _TEMP_COLOR_NAME
            renamed.append(mesh)
        yield
    finally:
        for mesh in renamed:
            attr = mesh.attributes.get(_TEMP_COLOR_NAME)
            if attr is not None:
                attr.name = display.COLOR_ATTRIBUTE


def _promote(doc: dict) -> bool:
    changed = False
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            attrs = prim.get("attributes", {})
            if _TEMP_COLOR_NAME in attrs and "COLOR_0" not in attrs:
                attrs["COLOR_0"] = attrs.pop(_TEMP_COLOR_NAME)
                changed = True
    return changed


def promote_point_colors(path: str) -> bool:
    """Rename ``_COLOR_0`` primitive attributes to ``COLOR_0`` in a .glb or .gltf file, in place."""
    with open(path, "rb") as fh:
        data = fh.read()
    if path.lower().endswith(".gltf"):
        doc = json.loads(data.decode("utf-8"))
        if not _promote(doc):
            return False
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
        return True
    magic, version, _length = struct.unpack_from("<III", data, 0)
    clen, ctype = struct.unpack_from("<II", data, 12)
    if magic != _GLB_MAGIC or ctype != _CHUNK_JSON:
        raise ValueError(f"{path} is not a binary glTF file")
    doc = json.loads(data[20:20 + clen].decode("utf-8"))
    if not _promote(doc):
        return False
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)  # chunks are 4-byte aligned, JSON padded with spaces
    rest = data[20 + clen:]
    out = struct.pack("<III", _GLB_MAGIC, version, 12 + 8 + len(js) + len(rest))
    out += struct.pack("<II", len(js), _CHUNK_JSON) + js + rest
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(out)
    os.replace(tmp, path)
    return True


def fbx_settings(path: str, *, selected_only: bool = False) -> dict:
    """Keyword arguments for ``bpy.ops.export_scene.fbx`` that keep shape-key animation and the camera."""
    return dict(filepath=path, use_selection=selected_only,
                object_types={"EMPTY", "CAMERA", "MESH"}, use_mesh_modifiers=False,
                bake_anim=True, bake_anim_use_all_bones=False, bake_anim_use_nla_strips=False,
                bake_anim_use_all_actions=False, bake_anim_force_startend_keying=True,
                bake_anim_step=1.0, bake_anim_simplify_factor=0.0, add_leaf_bones=False,
                axis_forward="-Z", axis_up="Y")


def export_fbx(path: str, *, selected_only: bool = False, rigid: bool = False,
               warnings: list[str] | None = None, overwrite: bool = False) -> str:
    """Export the current scene to FBX with shape-key animation baked per frame (or, with
    ``rigid``, per-frame rigid transforms); returns the path. An existing file is refused
    (``ExportError``) unless ``overwrite``; the file is written to a hidden sibling and renamed."""
    target = _cache_target(path, (".fbx",), overwrite)
    scene = bpy.context.scene
    lost: list[str] = []

    def run(p: str):
        with _rigid_stand_ins(rigid, selected_only, warnings) as use_selection, \
                fbx_timing.keys_at_fbx_time_zero(scene, warnings):  # frame 1 at time 0: see fbx_timing.py
            lost.extend(fbx_timing.point_colour_warnings(
                [ob for ob in bpy.context.view_layer.objects if ob.select_get() or not use_selection]))
            op = bpy.ops.export_scene.fbx
            return op(**supported_settings(op, fbx_settings(p, selected_only=use_selection)))

    written = _export_to_temp_then_rename(target, run)
    if warnings is not None:
        warnings += lost
    return written


def shape_key_frames(obj: bpy.types.Object) -> np.ndarray:
    """Per-frame positions (T, V, 3) stored in an imported object's ``frame_NNNN`` shape keys."""
    keys = obj.data.shape_keys
    blocks = [kb for kb in keys.key_blocks if kb.name.startswith("frame_")] if keys else []
    if not blocks:
        raise ValueError(f"{obj.name} has no per-frame shape keys")
    n = len(obj.data.vertices)
    out = np.empty((len(blocks), n * 3), np.float32)
    for i, kb in enumerate(blocks):
        kb.data.foreach_get("co", out[i])
    return out.reshape(len(blocks), n, 3)


def _fit_weights(mesh) -> np.ndarray | None:
    attr = mesh.attributes.get(display.OPACITY_ATTRIBUTE)
    if attr is None or attr.domain != "POINT" or attr.data_type != "FLOAT":
        return None
    w = np.empty(len(mesh.vertices), np.float32)
    attr.data.foreach_get("value", w)
    return w if w.sum() > 0 else None


def _rigid_stand_in(obj: bpy.types.Object, warnings: list[str]) -> bpy.types.Object:
    """A shape-key-free copy of ``obj`` keyed with the rigid fit of its per-frame shapes."""
    frames = shape_key_frames(obj)
    track = rigid_fit.fit_rigid_track(frames, _fit_weights(obj.data))
    if track.relative_error > RIGID_WARN_RELATIVE:
        warnings.append(f"{obj.name}: the motion is not rigid; the rigid export is off by up to "
                        f"{100 * track.relative_error:.0f}% of the object's size")
    mesh = obj.data.copy()
    stand_in = bpy.data.objects.new(obj.name, mesh)
    stand_in.shape_key_clear()
    mesh.vertices.foreach_set("co", frames[0].ravel())  # the reference (frame 1) shape
    mesh.update()
    for c in obj.users_collection:
        c.objects.link(stand_in)
    stand_in.parent = obj.parent
    stand_in.matrix_parent_inverse = obj.matrix_parent_inverse.copy()
    stand_in.color = obj.color
    stand_in.rotation_mode = "QUATERNION"
    # local = the object's own transform, then the rigid motion in the bundle's world
    basis = np.array(obj.matrix_basis)
    local = np.einsum("ij,tjk->tik", basis, track.matrices)
    loc, quat = decompose_rigid(local)
    start = bpy.context.scene.frame_start
    key_frames = np.arange(start, start + len(loc), dtype=np.float32)
    stand_in.location, stand_in.rotation_quaternion = loc[0], quat[0]
    bag = animation.new_action(stand_in, f"{obj.name}_rigid")
    animation.key_vector(bag, "location", key_frames, loc)
    animation.key_vector(bag, "rotation_quaternion", key_frames, quat)
    return stand_in


@contextmanager
def _rigid_stand_ins(enabled: bool, selected_only: bool, warnings: list[str] | None):
    """Swap GenMOJO objects for rigid stand-ins while the body exports; yields ``use_selection``.

    The export then runs on a selection: the stand-ins plus every other object in scope (all
    objects of the view layer, or the user's selection), never the originals.
    """
    if not enabled:
        yield selected_only
        return
    warnings = warnings if warnings is not None else []
    layer = bpy.context.view_layer
    scope = [ob for ob in layer.objects if ob.select_get()] if selected_only else list(layer.objects)
    selection = [ob for ob in layer.objects if ob.select_get()]
    active = layer.objects.active
    originals = [ob for ob in scope if ob.type == "MESH" and ob.get("genmojo_object_id")
                 and ob.data.shape_keys is not None]
    renamed, created = [], []
    try:
        for ob in originals:
            name = ob.name
            ob.name = name + "~genmojo-morph"
            renamed.append((ob, name))
            stand_in = _rigid_stand_in(ob, warnings)
            stand_in.name = name
            created.append(stand_in)
        for ob in layer.objects:
            ob.select_set(False)
        for ob in [o for o in scope if o not in originals] + created:
            ob.select_set(True)
        yield True
    finally:
        ids = set(created)
        for ob in created:
            ids.add(ob.data)
            ids.update(animation.actions_of(ob))
        bpy.data.batch_remove(list(ids))
        for ob, name in renamed:
            ob.name = name
        for ob in layer.objects:
            ob.select_set(ob in selection)
        layer.objects.active = active


# --------------------------------------------------------------------------------------------
# Baked caches through Blender's own USD and Alembic exporters
#
# Why Blender's Alembic export of an imported result had 0 vertices: the point and splat looks are
# Geometry Nodes modifiers whose output is a point cloud (Mesh to Points) or instanced ellipsoids.
# The exporters write the *evaluated* object, and Alembic has no writer for Blender's point-cloud
# geometry, so it wrote the evaluated mesh, which the modifier had emptied (its Gaussians live in
# the point cloud). For the duration of these exports the display modifiers are switched off, so
# the evaluated object is the vertex-per-Gaussian mesh with the frame's shape keys applied, and
# both exporters write its vertices at every frame. USD is asked for evaluated geometry per frame
# (``export_shapekeys=False``) rather than UsdSkel blend shapes, so every frame's points are time
# samples any USD reader plays; surfaces (the MESH representation) have no display modifier and
# export as they are.

USD_EXTENSIONS = (".usd", ".usda", ".usdc")


def _is_display_modifier(mod) -> bool:
    group = getattr(mod, "node_group", None)
    return (mod.type == "NODES" and group is not None
            and group.name.split(".")[0] in (display.NODE_GROUP_NAME, display.SPLATS_NAME))


@contextmanager
def display_modifiers_off(objects):
    """Switch the point/splat display modifiers of ``objects`` off (viewport and render) while the
    body runs, and back to what they were afterwards, whatever happens."""
    saved = []
    try:
        for ob in objects:
            for mod in getattr(ob, "modifiers", ()):
                if _is_display_modifier(mod):
                    saved.append((mod, mod.show_viewport, mod.show_render))
                    mod.show_viewport = mod.show_render = False
        yield
    finally:
        for mod, viewport, render in saved:
            mod.show_viewport, mod.show_render = viewport, render


def _cache_target(path: str, extensions: tuple[str, ...], overwrite: bool) -> Path:
    target = Path(os.path.abspath(bpy.path.abspath(path)))
    if target.suffix.lower() not in extensions:
        raise export_files.ExportError(f"{target.name}: give a name ending in {' or '.join(extensions)}")
    export_files.check_targets([target], overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _export_to_temp_then_rename(target, run) -> str:
    """Let a Blender exporter write a hidden sibling of ``target``, then rename it into place."""
    tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        result = run(str(tmp))
        if "FINISHED" not in result or not tmp.is_file():
            raise RuntimeError(f"Blender's exporter did not write {target}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(target)


def _scope(context, selected_only: bool) -> list:
    layer = context.view_layer
    return [ob for ob in layer.objects if ob.select_get()] if selected_only else list(layer.objects)


def usd_settings(path: str, *, selected_only: bool = False) -> dict:
    """Keyword arguments for ``bpy.ops.wm.usd_export``: animation baked per frame, no UsdSkel."""
    return dict(filepath=path, selected_objects_only=selected_only, export_animation=True,
                export_shapekeys=False, export_armatures=False, export_meshes=True, export_points=True,
                export_cameras=True, export_lights=True, export_mesh_colors=True, export_materials=True,
                export_custom_properties=True, evaluation_mode="RENDER", use_instancing=False)


def export_usd(path: str, context=None, *, selected_only: bool = False, overwrite: bool = False) -> str:
    """The scene (or the selection) as a USD cache: every object's evaluated geometry at every
    frame of the scene's range, GenMOJO points as their vertices; returns the written path."""
    context = context or bpy.context
    target = _cache_target(path, USD_EXTENSIONS, overwrite)
    op = bpy.ops.wm.usd_export
    with display_modifiers_off(_scope(context, selected_only)):
        return _export_to_temp_then_rename(
            target, lambda p: op(**supported_settings(op, usd_settings(p, selected_only=selected_only))))


def alembic_settings(path: str, scene, *, selected_only: bool = False) -> dict:
    """Keyword arguments for ``bpy.ops.wm.alembic_export`` over the scene's frame range."""
    return dict(filepath=path, start=scene.frame_start, end=scene.frame_end, selected=selected_only,
                vcolors=True, uvs=True, normals=True, export_custom_properties=True,
                evaluation_mode="RENDER", use_instancing=False, init_scene_frame_range=False)


def export_alembic(path: str, context=None, *, selected_only: bool = False, overwrite: bool = False) -> str:
    """The scene (or the selection) as an Alembic cache of the scene's frame range, GenMOJO points
    as their vertices at every frame; returns the written path."""
    context = context or bpy.context
    target = _cache_target(path, (".abc",), overwrite)
    op = bpy.ops.wm.alembic_export
    scene = context.scene
    with display_modifiers_off(_scope(context, selected_only)):
        return _export_to_temp_then_rename(
            target, lambda p: op(**supported_settings(op, alembic_settings(p, scene, selected_only=selected_only))))
