"""Animated Gaussian splats as a USD text layer (.usda), written with the standard library and numpy.

OpenUSD's own 3D Gaussian splat schema is used: ``ParticleField3DGaussianSplat`` from ``UsdVol``
(OpenUSD 25.11 and later; usd-core 26 has it). One prim per object, under an ``Xform`` named after
the result, with every per-particle attribute time-sampled at each Blender frame (time code = frame,
``timeCodesPerSecond`` = the clip's fps), so a USD timeline plays the clip:

==============================================  ===========  =====================================
``positions``                                    point3f[]    centres (scene units, stage space)
``orientations``                                 quatf[]      unit quaternions, written (w, x, y, z)
                                                              as USD's text format does
``scales``                                       float3[]     standard deviations, linear (not log)
``opacities``                                    float[]      opacity in [0, 1]
``radiance:sphericalHarmonicsDegree``            uniform int  0 (colours are not view-dependent)
``radiance:sphericalHarmonicsCoefficients``      float3[]     degree-0 coefficients (3DGS ``f_dc``;
                                                              colour = 0.5 + 0.28209479 · f_dc)
``primvars:displayColor``                        color3f[]    linear RGB, per particle (``vertex``)
``primvars:displayOpacity``                      float[]      opacity, per particle
``extent``                                       float3[]     bounds of the centres per frame
==============================================  ===========  =====================================

Visibility: an object hidden at some frames (``visible``) gets a ``token visibility`` time sample
at each change (``invisible`` / ``inherited``; token values are held, not interpolated), the
Imageable attribute every USD reader honours, and zero ``opacities`` and ``primvars:displayOpacity``
at its hidden frames, so a splat renderer that reads only the particle attributes draws nothing there
either. Every other array keeps its values, so each attribute has the same length at every time code.

Stage metadata: ``upAxis`` (Z for Blender's world), ``metersPerUnit`` 1, start and end time codes.
Numbers are written with 9 significant digits, which round-trips float32 exactly.
"""

from __future__ import annotations

import re

import numpy as np

from . import splats

SCHEMA = "ParticleField3DGaussianSplat"
SH_DEGREE = 0
_IDENT = re.compile(r"[^A-Za-z0-9_]")


def prim_name(name: str, taken: set[str]) -> str:
    """A valid, unused USD prim name for ``name`` (letters, digits, underscore; no leading digit)."""
    base = _IDENT.sub("_", name) or "object"
    if base[0].isdigit():
        base = "_" + base
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _tuples(a: np.ndarray) -> str:
    a = np.asarray(a, np.float32)
    if a.ndim == 1:
        return "[" + ", ".join(["%.9g"] * a.shape[0]) % tuple(a.tolist()) + "]"
    k = a.shape[1]
    one = "(" + ", ".join(["%.9g"] * k) + ")"
    return "[" + ", ".join([one] * a.shape[0]) % tuple(a.ravel().tolist()) + "]"


def _samples(kind: str, attr: str, frames: list[int], values: list[np.ndarray], indent: str) -> list[str]:
    lines = [f"{indent}{kind} {attr}.timeSamples = {{"]
    lines += [f"{indent}    {f}: {_tuples(v)}," for f, v in zip(frames, values)]
    lines.append(f"{indent}}}")
    return lines


def visibility_samples(frames: list[int], visible: list[bool]) -> list[tuple[int, str]]:
    """(time code, ``inherited``/``invisible``) at the first frame and wherever visibility changes."""
    out = []
    for f, v in zip(frames, visible):
        token = "inherited" if v else "invisible"
        if not out or out[-1][1] != token:
            out.append((int(f), token))
    return out


def usda_text(result_name: str, objects: list[tuple[str, list[splats.SplatFrame]]], frames: list[int], *,
              fps: float, up_axis: str = "Z", meters_per_unit: float = 1.0,
              visible: list[list[bool]] | None = None) -> str:
    """The whole layer: ``objects`` are (name, one SplatFrame per entry of ``frames``); ``visible``
    (one list per object, one flag per frame; default: always visible) hides objects at frames."""
    if not objects:
        raise ValueError("a USD splat layer needs at least one object")
    if not frames:
        raise ValueError("a USD splat layer needs at least one frame")
    if up_axis not in ("Y", "Z"):
        raise ValueError(f"upAxis must be Y or Z, not {up_axis!r}")
    if visible is None:
        visible = [[True] * len(frames) for _ in objects]
    if len(visible) != len(objects) or any(len(v) != len(frames) for v in visible):
        raise ValueError("visible needs one flag per frame for every object")
    taken: set[str] = set()
    root = prim_name(result_name, taken)
    out = ["#usda 1.0", "(",
           f'    defaultPrim = "{root}"',
           f"    metersPerUnit = {meters_per_unit:.9g}",
           f'    upAxis = "{up_axis}"',
           f"    startTimeCode = {int(frames[0])}",
           f"    endTimeCode = {int(frames[-1])}",
           f"    timeCodesPerSecond = {fps:.9g}",
           f"    framesPerSecond = {fps:.9g}",
           '    doc = "GenMOJO result as animated 3D Gaussian splats"',
           ")", "", f'def Xform "{root}"', "{"]
    for (name, seq), shown in zip(objects, visible):
        if len(seq) != len(frames):
            raise ValueError(f"{name}: {len(seq)} frames of Gaussians for {len(frames)} time codes")
        counts = {f.count for f in seq}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"{name}: every frame needs the same, non-zero number of Gaussians")
        ind = "        "
        out += [f'    def {SCHEMA} "{prim_name(name, taken)}"', "    {"]
        if not all(shown):
            out.append(f"{ind}token visibility.timeSamples = {{")
            out += [f'{ind}    {f}: "{token}",' for f, token in visibility_samples(frames, shown)]
            out.append(f"{ind}}}")
        opacities = [np.clip(f.opacities, 0, 1) if v else np.zeros_like(f.opacities) for f, v in zip(seq, shown)]
        out += _samples("point3f[]", "positions", frames, [f.means for f in seq], ind)
        out += _samples("quatf[]", "orientations", frames,
                        [f.quats / np.linalg.norm(f.quats, axis=1, keepdims=True) for f in seq], ind)
        out += _samples("float3[]", "scales", frames, [np.exp(f.log_scales.astype(np.float64)) for f in seq], ind)
        out += _samples("float[]", "opacities", frames, opacities, ind)
        out.append(f"{ind}uniform int radiance:sphericalHarmonicsDegree = {SH_DEGREE}")
        out += _samples("float3[]", "radiance:sphericalHarmonicsCoefficients", frames,
                        [splats.sh_dc(f.colors) for f in seq], ind)
        out += [f'{ind}color3f[] primvars:displayColor (', f'{ind}    interpolation = "vertex"', f"{ind})"]
        out += _samples("color3f[]", "primvars:displayColor", frames,
                        [splats.srgb_to_linear(f.colors) for f in seq], ind)
        out += [f'{ind}float[] primvars:displayOpacity (', f'{ind}    interpolation = "vertex"', f"{ind})"]
        out += _samples("float[]", "primvars:displayOpacity", frames, opacities, ind)
        out += _samples("float3[]", "extent", frames,
                        [np.stack([f.means.min(0), f.means.max(0)]) for f in seq], ind)
        out.append("    }")
    out += ["}", ""]
    return "\n".join(out)
