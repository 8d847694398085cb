"""Operators that make an imported result ready to render: the render set-up, the floor and the
real-world scale (thin wrappers over ``blender/render_setup.py`` and ``blender/floor_scale.py``).

All three act on the result of the active object, or the only result in the scene, are undoable
and can be run again without duplicating or compounding anything.
"""

from __future__ import annotations

import bpy
from bpy.props import FloatProperty, StringProperty
from bpy.types import Operator

from ..blender import floor_scale, importer, render_setup
from ..core.scene_scale import FloorError


def _poll_result(cls, context) -> bool:
    scene = getattr(context, "scene", None)
    if scene is None or not importer.scene_imports(scene):
        cls.poll_message_set("Import a GenMOJO result first")
        return False
    return True


class GENMOJO_OT_setup_render_scene(Operator):
    """Render the result over its footage: Cycles with a transparent film composited over the plate, a shadow catcher on the floor, a sun and a world"""

    bl_idname = "genmojo.setup_render_scene"
    bl_label = "Set Up Render Scene"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_result(cls, context)

    def execute(self, context):
        try:
            rig = floor_scale.target_rig(context)
            report = render_setup.setup_render_scene(context.scene, rig, view_layer=context.view_layer)
        except (floor_scale.RigError, FloorError) as e:
            self.report({"ERROR"}, f"Render set-up failed: {e}")
            return {"CANCELLED"}
        for w in report.warnings:
            self.report({"WARNING"}, w)
        self.report({"INFO"}, report.summary())
        return {"FINISHED"}


class GENMOJO_OT_set_floor(Operator):
    """Fit the floor under the objects' lowest points over time and move the whole result (camera included) so that it lies at Z = 0; the footage still lines up"""

    bl_idname = "genmojo.set_floor"
    bl_label = "Set Floor"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_result(cls, context)

    def execute(self, context):
        try:
            msg = floor_scale.align_floor(floor_scale.target_rig(context))
        except (floor_scale.RigError, FloorError) as e:
            self.report({"ERROR"}, f"Set Floor failed: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class GENMOJO_OT_set_scale(Operator):
    """Scale the whole result (camera included) so that one object has its real height; the footage still lines up"""

    bl_idname = "genmojo.set_scale"
    bl_label = "Set Real Scale"
    bl_options = {"REGISTER", "UNDO"}

    object_name: StringProperty(name="Object", description="The object of the result whose real height you know")
    height: FloatProperty(name="Real Height", description="The object's real height, along Blender's Z",
                          default=1.7, min=0.001, soft_max=50.0, unit="LENGTH", subtype="DISTANCE")

    @classmethod
    def poll(cls, context):
        return _poll_result(cls, context)

    def invoke(self, context, event):
        ob = context.active_object
        if not self.object_name and ob is not None and ob.get(importer.OBJECT_ID_PROP):
            self.object_name = ob.name
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context):
        layout = self.layout
        layout.prop_search(self, "object_name", context.scene, "objects")
        layout.prop(self, "height")

    def execute(self, context):
        ob = bpy.data.objects.get(self.object_name)
        if ob is None or not ob.get(importer.OBJECT_ID_PROP):
            self.report({"ERROR"}, f"Pick an object of an imported result (got {self.object_name or 'none'})")
            return {"CANCELLED"}
        try:
            rig = floor_scale.rig_of_object(context.scene, ob)
            if rig is None:
                self.report({"ERROR"}, f"{ob.name}'s result is not in this scene")
                return {"CANCELLED"}
            msg = floor_scale.set_real_height(rig, ob, self.height)
        except (floor_scale.RigError, FloorError) as e:
            self.report({"ERROR"}, f"Set Real Scale failed: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, msg)
        return {"FINISHED"}


CLASSES = (GENMOJO_OT_setup_render_scene, GENMOJO_OT_set_floor, GENMOJO_OT_set_scale)
