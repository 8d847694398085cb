"""glTF binary (.glb) files with Khronos' ``KHR_gaussian_splatting`` extension (numpy + json + struct).

Layout of one file (one instant of the clip):

* one node and one mesh per object, named after it, each mesh one primitive with ``mode`` 0
  (POINTS), as the extension requires;
* attributes, float32 and tightly packed, one buffer view each:

  ============================================  ======  =====================================
  ``POSITION``                                   VEC3    centres, with the accessor's min/max
  ``COLOR_0``                                    VEC4    linear RGB of the diffuse colour and
                                                         the opacity as alpha: the fallback that
                                                         viewers without the extension draw
  ``KHR_gaussian_splatting:ROTATION``            VEC4    unit quaternion x, y, z, w
  ``KHR_gaussian_splatting:SCALE``               VEC3    standard deviations, linear (not log)
  ``KHR_gaussian_splatting:OPACITY``             SCALAR  opacity in [0, 1] (after the sigmoid)
  ``KHR_gaussian_splatting:SH_DEGREE_0_COEF_0``  VEC3    degree-0 spherical harmonics
  ============================================  ======  =====================================

* the primitive's extension object names the ``ellipse`` kernel, the ``srgb_rec709_display`` colour
  space (GenMOJO fits display-referred sRGB, like 3DGS), ``perspective`` projection and
  ``cameraDistance`` sorting; ``extensionsUsed`` lists the extension (it is not *required*: a viewer
  without it still shows coloured points).

Motion: the extension defines no animation of its attributes (morph targets only cover the core
attributes, so scale, rotation and opacity could not move), so a clip is written as one file per
frame, numbered by Blender frame. The positions are in glTF's axes (Y up); the caller moves the
Gaussians there (``splats.transform``) and every node keeps the identity transform.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from . import splats

EXTENSION = "KHR_gaussian_splatting"
KERNEL = "ellipse"
COLOR_SPACE = "srgb_rec709_display"
PROJECTION = "perspective"
SORTING = "cameraDistance"
ROTATION = f"{EXTENSION}:ROTATION"
SCALE = f"{EXTENSION}:SCALE"
OPACITY = f"{EXTENSION}:OPACITY"
SH_DC = f"{EXTENSION}:SH_DEGREE_0_COEF_0"
GENERATOR = "GenMOJO for Blender"

GLB_MAGIC = 0x46546C67  # b"glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
FLOAT = 5126
ARRAY_BUFFER = 34962
MODE_POINTS = 0
_TYPES = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}


def primitive_arrays(frame: splats.SplatFrame) -> dict[str, np.ndarray]:
    """The primitive's attributes as float32 arrays (N, k), in the extension's encodings."""
    color = np.empty((frame.count, 4), np.float32)
    color[:, :3] = splats.srgb_to_linear(frame.colors)
    color[:, 3] = np.clip(frame.opacities, 0.0, 1.0)
    q = frame.quats.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return {
        "POSITION": frame.means.astype(np.float32),
        "COLOR_0": color,
        ROTATION: q[:, [1, 2, 3, 0]].astype(np.float32),
        SCALE: np.exp(frame.log_scales.astype(np.float64)).astype(np.float32),
        OPACITY: np.clip(frame.opacities, 0.0, 1.0).astype(np.float32)[:, None],
        SH_DC: splats.sh_dc(frame.colors),
    }


def glb_bytes(objects: list[tuple[str, splats.SplatFrame]], *, extras: dict | None = None) -> bytes:
    """One .glb holding each (name, Gaussians) pair as a node with a splat primitive."""
    if not objects:
        raise ValueError("a glTF splat file needs at least one object")
    blob = bytearray()
    accessors, views, nodes, meshes = [], [], [], []
    for name, frame in objects:
        if frame.count == 0:
            raise ValueError(f"{name} has no Gaussians to write")
        attributes = {}
        for semantic, arr in primitive_arrays(frame).items():
            data = np.ascontiguousarray(arr, "<f4").tobytes()
            views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data),
                          "target": ARRAY_BUFFER})
            blob += data  # float32 data keeps every view 4-byte aligned
            acc = {"bufferView": len(views) - 1, "componentType": FLOAT, "count": int(arr.shape[0]),
                   "type": _TYPES[arr.shape[1]]}
            if semantic == "POSITION":
                acc["min"] = [float(v) for v in arr.min(0)]
                acc["max"] = [float(v) for v in arr.max(0)]
            accessors.append(acc)
            attributes[semantic] = len(accessors) - 1
        meshes.append({"name": name, "primitives": [{
            "mode": MODE_POINTS, "attributes": attributes,
            "extensions": {EXTENSION: {"kernel": KERNEL, "colorSpace": COLOR_SPACE,
                                       "projection": PROJECTION, "sortingMethod": SORTING}}}]})
        nodes.append({"name": name, "mesh": len(meshes) - 1})
    asset = {"version": "2.0", "generator": GENERATOR}
    if extras:
        asset["extras"] = extras
    doc = {"asset": asset, "extensionsUsed": [EXTENSION], "scene": 0,
           "scenes": [{"nodes": list(range(len(nodes)))}], "nodes": nodes, "meshes": meshes,
           "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": len(blob)}]}
    js = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    js += b" " * (-len(js) % 4)
    bin_chunk = bytes(blob) + b"\0" * (-len(blob) % 4)
    total = 12 + 8 + len(js) + 8 + len(bin_chunk)
    return (struct.pack("<III", GLB_MAGIC, GLB_VERSION, total)
            + struct.pack("<II", len(js), CHUNK_JSON) + js
            + struct.pack("<II", len(bin_chunk), CHUNK_BIN) + bin_chunk)


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """The JSON document and binary chunk of a .glb (for tests and tools; checks the framing)."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != GLB_VERSION or length != len(data):
        raise ValueError("not a glTF 2.0 binary file (bad header)")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != CHUNK_JSON:
        raise ValueError("the first chunk of a .glb must be JSON")
    doc = json.loads(data[20:20 + jlen].decode("utf-8"))
    rest = 20 + jlen
    if rest == len(data):
        return doc, b""
    blen, btype = struct.unpack_from("<II", data, rest)
    if btype != CHUNK_BIN:
        raise ValueError("the second chunk of a .glb must be BIN")
    return doc, data[rest + 8:rest + 8 + blen]


def accessor_array(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` of a float, tightly packed, single-buffer document as an (count, k) array."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    k = {v: key for key, v in _TYPES.items()}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, "<f4", count=acc["count"] * k, offset=start).reshape(acc["count"], k)
