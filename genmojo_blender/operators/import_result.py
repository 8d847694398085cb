"""``genmojo.import_result``: import a result bundle (its manifest.json or its folder).

Also listed under File > Import. The work is done by ``blender/importer.py``; a malformed bundle
becomes an error report and leaves the scene untouched.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, StringProperty
from bpy.types import Operator
from bpy_extras.io_utils import ImportHelper

from ..blender import session


class GENMOJO_OT_import_result(Operator, ImportHelper):
    """Import a GenMOJO result: animated point clouds per object and the matching camera"""

    bl_idname = "genmojo.import_result"
    bl_label = "Import GenMOJO Result"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="manifest.json;*.json", options={"HIDDEN"})

    point_display: BoolProperty(
        name="Show Points", default=True,
        description="Display the Gaussians as coloured points (Geometry Nodes modifier)")
    set_scene: BoolProperty(
        name="Match Scene to Clip", default=True,
        description="Set resolution, frame rate, frame range and active camera from the clip")
    load_plate: BoolProperty(
        name="Footage as Background", default=True,
        description="Show the source clip behind the imported camera")

    def execute(self, context):
        path = bpy.path.abspath(self.filepath) if self.filepath else ""
        if not path:
            self.report({"ERROR"}, "Choose a result's manifest.json or its folder")
            return {"CANCELLED"}
        if os.path.isfile(path) and os.path.basename(path) != "manifest.json":
            path = os.path.dirname(path)
        result = session.import_into_scene(context, path, point_display=self.point_display,
                                           set_scene=self.set_scene, load_plate=self.load_plate)
        for level, msg in result.reports:
            self.report({level}, msg)
        return {"FINISHED"} if result.ok else {"CANCELLED"}


def menu_import(self, context):
    self.layout.operator(GENMOJO_OT_import_result.bl_idname, text="GenMOJO result (manifest.json)")


CLASSES = (GENMOJO_OT_import_result,)
