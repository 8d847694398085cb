"""GenMOJO backend: fits per-object animated 3D Gaussians to a clip and its masks.

Runs as its own process (``python -m backend``), started by the Blender extension or by hand; it
reports progress as JSON lines and writes a versioned result bundle (``genmojo_blender.core.bundle``).
"""

__version__ = "0.1.0"
