"""``genmojo.export_camera_solve``: the scene's Movie Clip's camera solve to a camera file for the run
(thin: the reading lives in ``blender/camera_solve_export.py``, the maths in ``core/camera.py``)."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty
from bpy.types import Operator

from ..blender.camera_solve_export import SolveExportError, export_camera_solve


def _clip(context):
    space = getattr(context, "space_data", None)
    clip = getattr(space, "clip", None)  # the Movie Clip Editor's clip, else the scene's
    return clip if clip is not None else getattr(context.scene, "active_clip", None)


class GENMOJO_OT_export_camera_solve(Operator):
    """Write the Movie Clip's solved camera (Blender's camera solve) to the Camera Solve File and use it for the run"""

    bl_idname = "genmojo.export_camera_solve"
    bl_label = "Export Camera Solve"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="",
                             description="Where to write the camera file (empty: the Camera Solve File setting, "
                                         "else <clip name>_camera.npz beside the blend file)")

    @classmethod
    def poll(cls, context):
        if _clip(context) is None:
            cls.poll_message_set("Open the footage as a Movie Clip (the scene's active clip) and solve its camera")
            return False
        return True

    def execute(self, context):
        settings = context.scene.genmojo
        clip = _clip(context)
        target = self.filepath or settings.camera_solve_file or f"//{bpy.path.clean_name(clip.name)}_camera.npz"
        if target.startswith("//") and not bpy.data.filepath:
            self.report({"ERROR"}, "Save the blend file first, or choose a Camera Solve File")
            return {"CANCELLED"}
        path = bpy.path.abspath(target)
        warnings: list[str] = []
        try:
            written, data = export_camera_solve(clip, path, warnings)
        except (SolveExportError, OSError) as e:
            self.report({"ERROR"}, f"Export failed: {e}")
            return {"CANCELLED"}
        for w in warnings:
            self.report({"WARNING"}, w)
        settings.camera_solve_file = str(written)
        settings.camera_source = "BLENDER"
        self.report({"INFO"}, f"Wrote {int(data.registered.sum())} solved cameras of {data.num_frames} frames to "
                              f"{written}")
        return {"FINISHED"}


CLASSES = (GENMOJO_OT_export_camera_solve,)
