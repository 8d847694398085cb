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
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager

import bpy

from . import display

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


def export_glb(path: str, *, selected_only: bool = False) -> str:
    """Export the current scene to glTF binary (``.glb``) or ``.gltf``; returns the written path."""
    path = os.path.abspath(bpy.path.abspath(path))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with _colors_as_custom_attributes():
        op = bpy.ops.export_scene.gltf
        result = op(**supported_settings(op, gltf_settings(path, selected_only=selected_only)))
    if "FINISHED" not in result or not os.path.isfile(path):
        raise RuntimeError(f"glTF export did not write {path}")
    promote_point_colors(path)
    return path


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


def export_fbx(path: str, *, selected_only: bool = False) -> str:
    """Export the current scene to FBX with shape-key animation baked per frame; returns the path."""
    path = os.path.abspath(bpy.path.abspath(path))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    op = bpy.ops.export_scene.fbx
    result = op(**supported_settings(op, fbx_settings(path, selected_only=selected_only)))
    if "FINISHED" not in result or not os.path.isfile(path):
        raise RuntimeError(f"FBX export did not write {path}")
    return path
