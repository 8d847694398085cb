"""Registers every class, property and menu entry of the extension, and undoes it on unregister.

Kept apart from ``__init__.py`` so that importing the package (e.g. ``genmojo_blender.core`` from
the backend or from tests) never imports ``bpy``.
"""

from __future__ import annotations

import bpy

from . import preferences, props
from .blender import session
from .operators import camera_solve, export_result, import_result, run_backend, scene_setup
from .ui import panels, render_panel

# Order matters: property groups before the types that point to them, panels after operators.
CLASSES = (
    *preferences.CLASSES,
    *props.CLASSES,
    *run_backend.CLASSES,
    *import_result.CLASSES,
    *export_result.CLASSES,
    *scene_setup.CLASSES,
    *camera_solve.CLASSES,
    *panels.CLASSES,
    *render_panel.CLASSES,  # a sub-panel of panels' Result panel: after it
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    props.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(import_result.menu_import)
    bpy.types.TOPBAR_MT_file_export.append(export_result.menu_export)


def unregister() -> None:
    session.kill_active()
    bpy.types.TOPBAR_MT_file_export.remove(export_result.menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(import_result.menu_import)
    props.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
