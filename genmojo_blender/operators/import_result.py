"""Importing results: ``genmojo.import_result`` (File > Import, the panel, drag and drop of a
result's manifest.json onto the 3D View through a FileHandler) and ``genmojo.set_representation``
(switch imported objects between points, splats and mesh).

The work is done by ``blender/importer.py``; a malformed bundle or a failed import becomes an error
report and leaves the scene untouched.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import FileHandler, Operator
from bpy_extras.io_utils import ImportHelper

from .. import props
from ..blender import importer, session
from ..core.bundle import MANIFEST_NAME, BundleError
from ..core.import_plan import ImportOptionError


def _resolve(path: str) -> str:
    """A result folder from a path to it or to any file inside it (normally manifest.json)."""
    path = bpy.path.abspath(path) if path else ""
    if path and os.path.isfile(path):
        path = os.path.dirname(path)
    return path


class GENMOJO_OT_import_result(Operator, ImportHelper):
    """Import a GenMOJO result: every object as points, splats or a mesh, and the matching camera"""

    bl_idname = "genmojo.import_result"
    bl_label = "Import GenMOJO Result"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".json"
    filter_glob: StringProperty(default=MANIFEST_NAME, options={"HIDDEN"})

    representation: EnumProperty(name="Import As", items=props.REPRESENTATION_ITEMS, default="POINTS",
                                 description="How every object is brought in, unless set per object below")
    object_representations: StringProperty(
        name="Per Object",
        description="Exceptions per object id, e.g. '001=MESH, 002=SPLATS' (ids as in the result's masks)")
    surface_resolution: IntProperty(**props.SURFACE_RESOLUTION)
    surface_threshold: FloatProperty(**props.SURFACE_THRESHOLD)
    point_display: BoolProperty(
        name="Display Modifier", default=True,
        description="Draw Points and Splats objects with their Geometry Nodes modifier")
    set_scene: BoolProperty(
        name="Match Scene to Clip", default=True,
        description="Set resolution, frame rate, frame range and active camera from the clip")
    load_plate: BoolProperty(
        name="Footage as Background", default=True,
        description="Show the source clip behind the imported camera")
    keep_edits: BoolProperty(**props.KEEP_EDITS)

    def invoke(self, context, event):
        if self.filepath:  # dropped on the 3D View (FileHandler) or given by a button: options only
            return self.invoke_popup(context) if hasattr(self, "invoke_popup") else \
                context.window_manager.invoke_props_dialog(self)
        return ImportHelper.invoke(self, context, event)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "representation")
        layout.prop(self, "object_representations")
        col = layout.column(align=True)
        col.active = self.representation == "MESH" or "MESH" in self.object_representations.upper()
        col.prop(self, "surface_resolution")
        col.prop(self, "surface_threshold")
        layout.prop(self, "point_display")
        layout.prop(self, "set_scene")
        layout.prop(self, "load_plate")
        layout.prop(self, "keep_edits")

    def execute(self, context):
        path = _resolve(self.filepath)
        if not path:
            self.report({"ERROR"}, "Choose a result's manifest.json or its folder")
            return {"CANCELLED"}
        result = session.import_into_scene(
            context, path, point_display=self.point_display, set_scene=self.set_scene,
            load_plate=self.load_plate, representation=self.representation,
            representations=self.object_representations, surface_resolution=self.surface_resolution,
            surface_threshold=self.surface_threshold, keep_edits=self.keep_edits)
        for level, msg in result.reports:
            self.report({level}, msg)
        return {"FINISHED"} if result.ok else {"CANCELLED"}


class GENMOJO_FH_import_result(FileHandler):
    """Drop a result's manifest.json onto the 3D View to import it."""

    bl_idname = "GENMOJO_FH_import_result"
    bl_label = "GenMOJO result"
    bl_import_operator = "genmojo.import_result"
    bl_file_extensions = ".json"

    @classmethod
    def poll_drop(cls, context):
        return context.area is not None and context.area.type == "VIEW_3D"


def _targets(context, object_name: str) -> list[bpy.types.Object]:
    if object_name:
        ob = bpy.data.objects.get(object_name)
        return [ob] if ob is not None else []
    return [ob for ob in context.selected_objects if ob.get(importer.OBJECT_ID_PROP)]


class GENMOJO_OT_set_representation(Operator):
    """Rebuild imported GenMOJO objects as points, splats or a mesh (re-reads their result)"""

    bl_idname = "genmojo.set_representation"
    bl_label = "Set GenMOJO Representation"
    bl_options = {"REGISTER", "UNDO"}

    representation: EnumProperty(name="Representation", items=props.REPRESENTATION_ITEMS, default="POINTS")
    object_name: StringProperty(name="Object", options={"SKIP_SAVE"},
                                description="The object to change (empty: the selected GenMOJO objects)")

    def execute(self, context):
        targets = _targets(context, self.object_name)
        if not targets:
            self.report({"ERROR"}, "Select objects imported from a GenMOJO result")
            return {"CANCELLED"}
        s = getattr(context.scene, "genmojo", None)
        opts = dict(surface_resolution=s.surface_resolution, surface_threshold=s.surface_threshold,
                    point_display=s.point_display) if s is not None else {}
        changed, notes = 0, []
        for ob in targets:
            if ob.get(importer.REPRESENTATION_PROP) == self.representation:
                continue
            name = ob.name
            try:
                importer.change_representation(ob, self.representation, notes=notes, **opts)
            except (BundleError, ImportOptionError) as e:
                self.report({"ERROR"}, f"{name}: {e}")
                return {"CANCELLED"}
            changed += 1
        for note in notes:
            self.report({"INFO"}, note)
        self.report({"INFO"}, f"{changed} object(s) now shown as {self.representation.lower()}")
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(GENMOJO_OT_import_result.bl_idname, text="GenMOJO result (manifest.json)")


CLASSES = (GENMOJO_OT_import_result, GENMOJO_FH_import_result, GENMOJO_OT_set_representation)
