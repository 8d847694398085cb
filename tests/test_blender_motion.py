"""Motion between frames: sub-frames (motion blur, retiming) interpolate the baked positions, the
camera moves smoothly, and visibility stays a step."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle_factory import make_bundle
from test_blender_import import EVAL_HELPERS, bundle_means, run_bpy

pytestmark = pytest.mark.blender


def test_subframes_show_the_midpoint_of_two_baked_frames(tmp_path):
    T = 4
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=60, preview=False)
    # object 001 is hidden on clip frame 2 only (Blender frame 3)
    m = json.loads((b / "manifest.json").read_text())
    m["objects"][0]["visible"] = [True, True, False, True]
    (b / "manifest.json").write_text(json.dumps(m))
    out = run_bpy(helpers=EVAL_HELPERS, code=f"""
    from genmojo_blender.blender import importer
    res = importer.import_bundle({str(b)!r}, representations={{"002": "MESH"}}, surface_resolution=24)
    scene = bpy.context.scene
    points, mesh = bpy.data.objects["shot_object_001"], bpy.data.objects["shot_object_002"]
    out = dict(points={{}}, mesh={{}}, hidden={{}})
    for f, sub in ((1, 0.0), (1, 0.5), (2, 0.0), (2, 0.25), (3, 0.5)):
        scene.frame_set(f, subframe=sub)
        key = f"{{f + sub:.2f}}"
        if not points.hide_viewport:  # a hidden object is not evaluated
            out["points"][key] = opencv_points(points, True).tolist()
        out["mesh"][key] = opencv_points(mesh, False).tolist()
        out["hidden"][key] = [points.hide_viewport, points.hide_render]
    # the surface's own baked frames, to compare the mesh's sub-frames with
    for f in (1, 2, 3):
        scene.frame_set(f)
        out["mesh"][f"{{f:.2f}}"] = opencv_points(mesh, False).tolist()
    scene.frame_set(4)
    out["mesh"]["4.00"] = opencv_points(mesh, False).tolist()
    emit(**out)
    """)
    means = bundle_means(b, "001")
    pts = {k: np.array(v) for k, v in out["points"].items()}
    assert np.abs(pts["1.00"] - means[0]).max() < 1e-5
    assert np.abs(pts["2.00"] - means[1]).max() < 1e-5
    assert np.abs(pts["1.50"] - 0.5 * (means[0] + means[1])).max() < 1e-5
    assert np.abs(pts["2.25"] - (0.75 * means[1] + 0.25 * means[2])).max() < 1e-5
    # a constant step would show frame 1's positions at 1.5: the factory moves 0.1 per frame
    assert np.abs(pts["1.50"] - means[0]).max() > 0.04

    mesh = {k: np.array(v) for k, v in out["mesh"].items()}
    assert np.abs(mesh["1.50"] - 0.5 * (mesh["1.00"] + mesh["2.00"])).max() < 1e-5
    assert np.abs(mesh["3.50"] - 0.5 * (mesh["3.00"] + mesh["4.00"])).max() < 1e-5
    assert np.abs(mesh["1.50"] - mesh["1.00"]).max() > 0.04

    # visibility is a step: hidden from Blender frame 3 up to frame 4, never faded in or out
    assert out["hidden"]["2.25"] == [False, False]
    assert out["hidden"]["3.50"] == [True, True]
