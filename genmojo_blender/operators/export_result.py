"""Export operators with the settings that keep GenMOJO's per-frame point animation.

``genmojo.export_glb`` writes glTF binary with morph-target animation, point attributes and the
camera; ``genmojo.export_fbx`` writes FBX with baked blend-shape animation. Both are listed under
File > Export; the flags live in ``blender/export.py``. Both offer "Rigid Transforms", which
bakes each object's motion into per-frame transforms for engines without morph targets.
"""

from __future__ import annotations

from bpy.props import BoolProperty, StringProperty
from bpy.types import Operator
from bpy_extras.io_utils import ExportHelper

from ..blender import export, importer


class _ExportBase(ExportHelper):
    @classmethod
    def poll(cls, context):
        scene = getattr(context, "scene", None)
        if scene is None or not importer.scene_imports(scene):
            cls.poll_message_set("Import a GenMOJO result first: there is nothing of GenMOJO's in this scene to export")
            return False
        return True

    selected_only: BoolProperty(name="Selected Only", default=False,
                                description="Export only the selected objects")
    rigid: BoolProperty(
        name="Rigid Transforms", default=False,
        description=("Bake each object's motion into one rotation and translation per frame (a "
                     "least-squares fit) instead of per-frame shape keys, for engines without morph targets"))

    def _export(self, fn):
        warnings: list[str] = []
        try:
            path = fn(self.filepath, selected_only=self.selected_only, rigid=self.rigid, warnings=warnings)
        except (RuntimeError, OSError, ValueError) as e:
            self.report({"ERROR"}, f"Export failed: {e}")
            return {"CANCELLED"}
        for w in warnings:
            self.report({"WARNING"}, w)
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


class GENMOJO_OT_export_glb(Operator, _ExportBase):
    """Export the scene as glTF binary with per-frame morph targets, point colours and the camera"""

    bl_idname = "genmojo.export_glb"
    bl_label = "Export GenMOJO glTF"
    bl_options = {"REGISTER"}

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb", options={"HIDDEN"})

    def execute(self, context):
        return self._export(export.export_glb)


class GENMOJO_OT_export_fbx(Operator, _ExportBase):
    """Export the scene as FBX with per-frame blend shapes baked and the camera"""

    bl_idname = "genmojo.export_fbx"
    bl_label = "Export GenMOJO FBX"
    bl_options = {"REGISTER"}

    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})

    def execute(self, context):
        return self._export(export.export_fbx)


def menu_export(self, context):
    self.layout.operator(GENMOJO_OT_export_glb.bl_idname, text="GenMOJO animated points (.glb)")
    self.layout.operator(GENMOJO_OT_export_fbx.bl_idname, text="GenMOJO animated points (.fbx)")


CLASSES = (GENMOJO_OT_export_glb, GENMOJO_OT_export_fbx)
