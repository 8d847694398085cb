"""Blender operators of the extension (thin wrappers; the logic lives in ``blender`` and ``core``)."""
