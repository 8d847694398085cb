"""Standard 3D Gaussian Splatting PLY files, written with numpy alone (the extension has no plyfile).

The layout is the one the INRIA reference code writes and splat viewers (SuperSplat, the INRIA
viewer, gsplat's tools) read: binary little-endian, one ``vertex`` element with float32 properties
in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 ... f_rest_{K-1}  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

Normals are 0; ``f_dc`` are degree-0 spherical harmonics (``rgb = 0.5 + 0.28209479 · f_dc``);
``f_rest`` are the higher degrees, channel-major as the INRIA code stores them, all 0 here (GenMOJO's
colours are not view-dependent), K = 3·((d+1)² − 1) for SH degree d, so 0 for degree 0 and 45 for
degree 3 (for loaders that insist on 45); ``opacity`` is the pre-sigmoid logit; ``scale_*`` are
natural logs of the standard deviations; ``rot_*`` is the unit quaternion w, x, y, z.
"""

from __future__ import annotations

import numpy as np

from . import splats

MAX_SH_DEGREE = 3


def rest_count(sh_degree: int) -> int:
    """Number of ``f_rest_*`` properties for an SH degree (0..3)."""
    if not 0 <= int(sh_degree) <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree {sh_degree} out of range (0..{MAX_SH_DEGREE})")
    return 3 * ((int(sh_degree) + 1) ** 2 - 1)


def property_names(sh_degree: int = 0) -> list[str]:
    """The vertex properties in file order."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest_count(sh_degree))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def vertex_table(frame: splats.SplatFrame, sh_degree: int = 0) -> np.ndarray:
    """The Gaussians as a little-endian float32 structured array, one record per Gaussian."""
    names = property_names(sh_degree)
    table = np.zeros(frame.count, dtype=np.dtype([(n, "<f4") for n in names]))
    for i, axis in enumerate("xyz"):
        table[axis] = frame.means[:, i]
    dc = splats.sh_dc(frame.colors)
    for i in range(3):
        table[f"f_dc_{i}"] = dc[:, i]
        table[f"scale_{i}"] = frame.log_scales[:, i]
    table["opacity"] = splats.logit(frame.opacities)
    for i in range(4):
        table[f"rot_{i}"] = frame.quats[:, i]
    return table


def ply_bytes(frame: splats.SplatFrame, sh_degree: int = 0, comment: str = "") -> bytes:
    """A complete binary PLY file holding ``frame``."""
    table = vertex_table(frame, sh_degree)
    lines = ["ply", "format binary_little_endian 1.0"]
    if comment:
        lines.append("comment " + " ".join(comment.split()))  # one line, no control characters
    lines.append(f"element vertex {frame.count}")
    lines += [f"property float {n}" for n in table.dtype.names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii") + table.tobytes()
