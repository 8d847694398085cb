"""GenMOJO for Blender: turn a video and per-object masks into animated 3D Gaussian objects.

Blender loads this package as an extension (``bl_ext.<repo>.genmojo``) and calls register().
Everything that touches ``bpy`` is imported inside register(), so the bpy-free ``core`` subpackage
(the bundle format and the progress protocol) can be imported by the backend and by plain tests.
"""


def register():
    from . import registration

    registration.register()


def unregister():
    from . import registration

    registration.unregister()
