"""The Render sub-panel of the GenMOJO sidebar's Result panel: the one-click render set-up, the
floor and the real scale, and a holdout toggle per imported object.

Only draws; the buttons are greyed out by their operators' poll() until a result is imported.
"""

from __future__ import annotations

from bpy.types import Panel

from ..blender import floor_scale, importer


class GENMOJO_PT_render(Panel):
    """Make the imported result ready to render over its footage."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "GenMOJO"
    bl_label = "Render"
    bl_parent_id = "GENMOJO_PT_result"

    def draw(self, context):
        layout = self.layout
        col = layout.column(align=True)
        col.operator("genmojo.setup_render_scene", icon="RENDER_STILL")
        row = col.row(align=True)
        row.operator("genmojo.set_floor", icon="AXIS_TOP")
        sub = row.row(align=True)
        sub.operator_context = "INVOKE_DEFAULT"  # the dialog asks for the object and its height
        sub.operator("genmojo.set_scale", text="Set Real Scale...", icon="ARROW_LEFTRIGHT")
        for coll in importer.scene_imports(context.scene):
            try:
                rig = floor_scale.rig_of(coll)
            except floor_scale.RigError:
                continue
            box = layout.box()
            box.label(text=f"{coll.name}: holdouts", icon="HOLDOUT_ON")
            for ob in rig.objects:
                row = box.row(align=True)
                row.label(text=ob.get("genmojo_name", ob.name))
                row.prop(ob, "is_holdout", text="", icon="HOLDOUT_ON" if ob.is_holdout else "HOLDOUT_OFF",
                         emboss=True)


CLASSES = (GENMOJO_PT_render,)
