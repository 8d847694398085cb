"""Blender glue: code that touches ``bpy`` data (import, export, keyframes, point display).

Each module copies numbers computed by the bpy-free ``core`` package into Blender data; no maths or
policy lives here beyond what the Blender API demands.
"""
