"""Blender's side of a solved camera, checked with Blender itself: the camera of a bundle with a
``camera.solve`` carries its per-frame error as an F-curve and a summary for the Result panel; the
Export Camera Solve operator is registered, refuses a clip without a solve, and a Blender camera set
up from a tracking camera projects points like the exported OpenCV camera (bpy's own projection)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle_factory import make_bundle
from test_blender_import import run_bpy

pytestmark = pytest.mark.blender


def test_imported_solved_camera_keys_its_error(tmp_path):
    root = make_bundle(tmp_path, frames=4, preview=False)
    data = json.loads((root / "manifest.json").read_text())
    data["camera"]["solve"] = {"method": "colmap", "registered": [True, False, True, True],
                               "error_px": [0.5, None, 1.5, 0.25], "points": [40, 0, 35, 50]}
    (root / "manifest.json").write_text(json.dumps(data))
    out = run_bpy(f"""
enable()
bpy.ops.genmojo.import_result(filepath={str(root)!r})
cam = next(o for o in bpy.data.objects if o.type == "CAMERA")
from genmojo_blender.blender import animation
from genmojo_blender.core import solve_report
fc = animation.fcurve_of(cam, '["' + solve_report.ERROR_PROP + '"]')
reg = animation.fcurve_of(cam, '["' + solve_report.REGISTERED_PROP + '"]')
emit(keys=[list(k.co) for k in fc.keyframe_points], registered=[reg.evaluate(f) for f in (1, 2, 3, 4)],
     summary=cam[solve_report.SUMMARY_PROP], start=bpy.context.scene.frame_start)
""")
    assert out["start"] == 1
    assert out["keys"] == [[1.0, 0.5], [3.0, 1.5], [4.0, 0.25]]
    assert out["registered"] == [1.0, 0.0, 1.0, 1.0]
    assert out["summary"].splitlines()[1] == "Worst frames: 3, 1, 4"
    assert "Interpolated (not solved): 2" in out["summary"]


def test_export_camera_solve_needs_a_solved_clip(tmp_path):
    import cv2
    frames = tmp_path / "plate"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:04d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    out = run_bpy(f"""
enable()
poll_without = bpy.ops.genmojo.export_camera_solve.poll()
clip = bpy.data.movieclips.load({str(frames / '0000.png')!r})
bpy.context.scene.active_clip = clip
from genmojo_blender.blender.camera_solve_export import SolveExportError, export_camera_solve
try:
    export_camera_solve(clip, {str(tmp_path / 'cam.npz')!r})
    message = ""
except SolveExportError as e:
    message = str(e)
emit(poll_without=poll_without, poll_with=bpy.ops.genmojo.export_camera_solve.poll(), message=message,
     duration=clip.frame_duration)
""")
    assert out["poll_without"] is False and out["poll_with"] is True
    assert out["duration"] == 3
    assert "has no camera solve" in out["message"] and not (tmp_path / "cam.npz").exists()


def test_blender_camera_from_the_tracking_camera_projects_like_the_exported_one():
    out = run_bpy("""
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Matrix, Vector
from genmojo_blender.core import camera as cm
W, H, focal, principal = 320, 180, 410.0, (166.0, 84.0)
scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
K = cm.tracking_intrinsics(focal, principal, W, H)
lens = cm.intrinsics_to_blender(K, W, H)
data = bpy.data.cameras.new("cam")
data.sensor_fit, data.sensor_width = "HORIZONTAL", lens.sensor_width
data.lens, data.shift_x, data.shift_y = float(lens.lens[0]), float(lens.shift_x[0]), float(lens.shift_y[0])
obj = bpy.data.objects.new("cam", data)
scene.collection.objects.link(obj)
M = Matrix.Translation((0.8, -6.0, 1.6)) @ Matrix.Rotation(0.4, 4, "Z") @ Matrix.Rotation(1.15, 4, "X")
obj.matrix_world = M
bpy.context.view_layer.update()
rng = np.random.default_rng(1)
local = np.stack([rng.uniform(-2, 2, 12), rng.uniform(-1, 1, 12), -rng.uniform(3, 9, 12)], 1)
Mn = np.array(M)
world = local @ Mn[:3, :3].T + Mn[:3, 3]
ndc = [world_to_camera_view(scene, obj, Vector(p)) for p in world]
blender_px = [[v.x * W, (1 - v.y) * H] for v in ndc]
c2w = cm.blender_camera_to_opencv_c2w(Mn)[0]
uv, _ = cm.project_opencv(K, c2w, world @ np.linalg.inv(cm.OPENCV_WORLD_TO_BLENDER)[:3, :3].T)
emit(blender=blender_px, opencv=uv.tolist())
""")
    np.testing.assert_allclose(out["opencv"], out["blender"], atol=1e-3)
