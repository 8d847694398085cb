"""The poll shared by operators that act on an imported result: available once the scene holds one,
otherwise greyed out with ``needs_import_message`` as the reason."""

from __future__ import annotations

from ..blender import importer


class NeedsImport:
    needs_import_message = "Import a GenMOJO result first"

    @classmethod
    def poll(cls, context):
        scene = getattr(context, "scene", None)
        if scene is None or not importer.scene_imports(scene):
            cls.poll_message_set(cls.needs_import_message)
            return False
        return True
