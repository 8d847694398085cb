"""Blender-free core of the extension: numpy and the standard library only.

``bundle`` (the result format) and ``protocol`` (the backend's JSON-lines progress events) are shared
with the backend, which imports them to write what Blender reads.
"""
