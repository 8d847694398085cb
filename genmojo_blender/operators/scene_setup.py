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
from .result_poll import NeedsImport


class _ResultOperator(NeedsImport):
    """What the three share: undoable, available once a result is imported, and a failure to find the
    result or its floor reported as ``<failure_label> failed: ...``."""

    bl_options = {"REGISTER", "UNDO"}

    def _apply(self, action):
        """Run ``action()`` (returns the summary line, or None when it reported its own outcome)."""
        try:
            msg = action()
        except (floor_scale.RigError, FloorError) as e:
            self.report({"ERROR"}, f"{self.failure_label} failed: {e}")
            return {"CANCELLED"}
        if msg is None:
            return {"CANCELLED"}
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class GENMOJO_OT_setup_render_scene(_ResultOperator, Operator):
    """Render the result over its footage: Cycles with a transparent film composited over the plate, a shadow catcher on the floor, a sun and a world"""

    bl_idname = "genmojo.setup_render_scene"
    bl_label = "Set Up Render Scene"
    failure_label = "Render set-up"

    def execute(self, context):
        def action():
            report = render_setup.setup_render_scene(context.scene, floor_scale.target_rig(context),
                                                     view_layer=context.view_layer)
            for w in report.warnings:
                self.report({"WARNING"}, w)
            return report.summary()
        return self._apply(action)


class GENMOJO_OT_set_floor(_ResultOperator, Operator):
    """Fit the floor under the objects' lowest points over time and move the whole result (camera included) so that it lies at Z = 0; the footage still lines up"""

    bl_idname = "genmojo.set_floor"
    bl_label = failure_label = "Set Floor"

    def execute(self, context):
        return self._apply(lambda: floor_scale.align_floor(floor_scale.target_rig(context)))


class GENMOJO_OT_set_scale(_ResultOperator, Operator):
    """Scale the whole result (camera included) so that one object has its real height; the footage still lines up"""

    bl_idname = "genmojo.set_scale"
    bl_label = failure_label = "Set Real Scale"

    object_name: StringProperty(name="Object", description="The object of the result whose real height you know")
    height: FloatProperty(name="Real Height", description="The object's real height, along Blender's Z",
                          default=1.7, min=0.001, soft_max=50.0, unit="LENGTH", subtype="DISTANCE")

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

        def action():
            rig = floor_scale.rig_of_object(context.scene, ob)
            if rig is None:
                self.report({"ERROR"}, f"{ob.name}'s result is not in this scene")
                return None
            return floor_scale.set_real_height(rig, ob, self.height)
        return self._apply(action)


CLASSES = (GENMOJO_OT_setup_render_scene, GENMOJO_OT_set_floor, GENMOJO_OT_set_scale)
