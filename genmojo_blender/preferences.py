"""Add-on preferences: where the backend's Python lives, where its code is, where results go.

``bl_idname = __package__`` makes the preferences work both when Blender loads the extension as
``bl_ext.<repo>.genmojo`` and when a script enables the repository checkout as ``genmojo_blender``.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty
from bpy.types import AddonPreferences

from .core.backend_process import check_python

ADDON_ID = __package__


class GENMOJO_AddonPreferences(AddonPreferences):
    """Paths shared by every scene: the backend interpreter, its source folder, default output."""

    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python",
        description=("Python interpreter of the environment where the GenMOJO backend (PyTorch) is "
                     "installed, e.g. <venv>/bin/python. Blender's own Python is never used for it"),
        subtype="FILE_PATH",
    )
    backend_path: StringProperty(
        name="Backend Source Folder",
        description=("Optional folder added to PYTHONPATH for the backend, for a source checkout "
                     "that is not installed in that environment (the folder that contains 'backend')"),
        subtype="DIR_PATH",
    )
    default_output_dir: StringProperty(
        name="Default Output Folder",
        description="Where results are written when a scene does not set its own output folder",
        subtype="DIR_PATH",
    )

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_python")
        problem = check_python(bpy.path.abspath(self.backend_python))
        if problem:
            box = col.box()
            box.alert = True
            box.label(text=problem, icon="ERROR")
        col.prop(self, "backend_path")
        col.prop(self, "default_output_dir")
        row = layout.row()
        row.enabled = not problem
        row.operator("genmojo.check_backend", icon="CHECKMARK")


def get_preferences(context=None) -> GENMOJO_AddonPreferences | None:
    """This add-on's preferences, or None if it is not enabled in the preferences (e.g. registered
    directly by a script without ``addon_utils``)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_python(context=None) -> str:
    """Absolute path of the backend interpreter from the preferences ("" if unset)."""
    prefs = get_preferences(context)
    return bpy.path.abspath(prefs.backend_python) if prefs and prefs.backend_python else ""


def backend_path(context=None) -> str:
    prefs = get_preferences(context)
    return bpy.path.abspath(prefs.backend_path).rstrip("/\\") if prefs and prefs.backend_path else ""


def default_output_dir(context=None) -> str:
    prefs = get_preferences(context)
    return bpy.path.abspath(prefs.default_output_dir) if prefs and prefs.default_output_dir else ""


CLASSES = (GENMOJO_AddonPreferences,)
