"""Acceptance of real cameras and background mode, end to end on CPU: a moving-camera synthetic clip
run through the backend (cpu-tiny, --cam_path and --bg_path), imported into Blender, and every
shown point of every object projected through Blender's own imported camera at each frame must fall
inside that object's mask (grown by 2 px) for at least 95 % of the points. "Shown" is the
backend's definition (``backend/check_alignment.py``: the joint render of the objects shows it, in
front of what the render shows there). The same figure and the background's masked PSNR come from
``python -m backend.check_alignment``, the command the GPU runs use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, load_script
from test_blender_import import run_bpy
from test_pipeline import backend, clip_args

pytestmark = pytest.mark.blender
pytest.importorskip("bpy")

MIN_FRACTION = 0.95
# the run: a 64x48 clip of 6 frames, two objects, the camera panning 0.2 scene units (the near card
# moves ~4 px more than the background), cpu-tiny with its own step counts but a shorter background
# fit. The 2 px silhouette band (stage 1 and 2) keeps cpu-tiny's short fits from spilling over the
# silhouettes: without it this run measured 94.8 % (the spill is the fit's, the same on a static
# camera: 95.6 % on the 96x96 demo clip), with it 97.1 %.
RUN_FLAGS = ["--preset", "cpu-tiny", "--device", "cpu", "--set", "background.iterations=40",
             "--set", "stage1.silhouette_band_px=2", "--set", "stage2.silhouette_band_px=2"]


@pytest.fixture(scope="module")
def pan_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bgmode")
    clip = root / "clip"
    load_script("make_synthetic_clip").make_clip(clip, width=64, height=48, frames=6, objects=2, seed=0,
                                                 camera_motion="pan", camera_pan=0.2)
    code, events, err = backend(*clip_args(clip, root / "out", "pan"), *RUN_FLAGS,
                                "--cam_path", clip / "megasam.npz", "--bg_path", clip / "background.png")
    assert code == 0, err[-3000:]
    return clip, Path(events[-1].get("bundle"))


def test_check_alignment_command_reports_alignment_and_background(pan_run, tmp_path):
    clip, bundle = pan_run
    report_path = tmp_path / "report.json"
    p = subprocess.run([sys.executable, "-m", "backend.check_alignment", str(bundle), "--mask_dir",
                        str(clip / "Annotations"), "--device", "cpu", "--out", str(report_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads(report_path.read_text())
    a = report["alignment"]
    assert p.returncode == 0, (p.stderr[-2000:], a)
    assert a["fraction"] >= MIN_FRACTION and a["counted"] > 1000
    assert set(a["per_object"]) == {"001", "002"}
    bg = report["background"]
    assert bg["mask"] == "folder 000" and bg["train"]["frames"] == list(range(6))
    assert bg["train"]["psnr"] > 28 and bg["train"]["coverage"] > 0.98, bg
    # the gate works: an impossible threshold fails with exit 3
    p = subprocess.run([sys.executable, "-m", "backend.check_alignment", str(bundle), "--mask_dir",
                        str(clip / "Annotations"), "--device", "cpu", "--min_fraction", "1.01"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 3


def test_bundle_holds_the_real_cameras_and_the_background(pan_run):
    from genmojo_blender.core.bundle import open_bundle

    clip, bundle = pan_run
    gt = json.loads((clip / "ground_truth.json").read_text())
    b = open_bundle(bundle)
    m = b.manifest
    assert m.camera.source == "megasam" and not m.camera.static
    np.testing.assert_allclose(b.load_camera().c2w, np.array(gt["camera"]["c2w_per_frame"]), atol=1e-6)
    assert m.background is not None and m.background.reference_frame == 0
    g = b.load_background()
    assert g.num_gaussians == 64 * 48
    # the background stays where the clip's background plane is: 20 units in front of frame 0's camera
    c2w0 = np.array(gt["camera"]["c2w_per_frame"][0])
    z = (g.means - c2w0[:3, 3]) @ c2w0[:3, 2]
    assert abs(np.median(z) / gt["camera"]["background_depth"] - 1) < 0.05


def test_imported_points_line_up_through_blenders_camera(pan_run, tmp_path):
    from backend.check_alignment import load_reference, projected_points, shown_gaussians
    from genmojo_blender.core import alignment as al
    from genmojo_blender.core.bundle import open_bundle

    clip, bundle = pan_run
    b = open_bundle(bundle)
    ref = load_reference(b, clip / "Annotations", None)
    shown = shown_gaussians(b, torch.device("cpu"))
    expected = al.mask_alignment(projected_points(b), shown,
                                 {oid: ref.masks[k] for k, oid in enumerate(ref.object_ids)}).fraction
    data = tmp_path / "check.npz"
    np.savez(data, **{f"shown_{oid}": shown[oid] for oid in shown},
             **{f"mask_{oid}": ref.masks[k] for k, oid in enumerate(ref.object_ids)})
    out = run_bpy(f"""
from mathutils import Vector
from bpy_extras.object_utils import world_to_camera_view
from genmojo_blender.blender.importer import import_bundle
from genmojo_blender.core import alignment as al
from genmojo_blender.core.bundle import open_bundle
d = np.load({str(data)!r})
scene = bpy.context.scene
res = import_bundle({str(bundle)!r}, scene, point_display=False, load_plate=False)
b = open_bundle({str(bundle)!r})
cam = b.load_camera()
W, H = scene.render.resolution_x, scene.render.resolution_y
uv, uv_k, shown, masks = {{}}, {{}}, {{}}, {{}}
for ob in res.objects:
    oid = ob["genmojo_object_id"]
    means = b.load_frames(next(o for o in b.manifest.objects if o.id == oid)).means
    T, N = means.shape[:2]
    uv[oid] = np.zeros((T, N, 2))
    uv_k[oid] = np.stack([al.project(cam.K[t], cam.c2w[t], means[t])[0] for t in range(T)])
    shown[oid], masks[oid] = d["shown_" + oid], d["mask_" + oid]
for t in range(len(cam.K)):
    scene.frame_set(t + 1)
    dg = bpy.context.evaluated_depsgraph_get()
    for ob in res.objects:
        ev = ob.evaluated_get(dg)
        mesh = ev.to_mesh()
        co = np.zeros(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
        mw = np.array(ev.matrix_world)
        world = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
        view = np.array([tuple(world_to_camera_view(scene, scene.camera, Vector(p))) for p in world])
        uv[ob["genmojo_object_id"]][t] = al.from_normalized_view(view, W, H)[0]
r = al.mask_alignment(uv, shown, masks, 2.0)
diff = max(float(np.nanmax(np.abs(uv[k] - uv_k[k]))) for k in uv)
bg = res.background
bgco = np.zeros(len(bg.data.vertices) * 3)
bg.data.vertices.foreach_get("co", bgco)
emit(fraction=r.fraction, counted=r.counted, per_object=r.to_dict()["per_object"], diff_px=diff,
     camera=scene.camera.name, frames=len(cam.K), bg_name=bg.name, bg_parent=bg.parent.name,
     bg_in_collection=bg.name in res.collection.objects, bg_keys=bg.data.shape_keys is not None,
     bg_count=len(bg.data.vertices), bg_max_err=float(np.abs(bgco.reshape(-1, 3) - b.load_background().means).max()),
     bg_anim=bg.animation_data is not None)
""", timeout=300)
    assert out["frames"] == 6 and out["camera"] == "pan_camera"
    assert out["diff_px"] < 1e-2  # Blender's camera projects exactly like the bundle's K and c2w
    assert out["counted"] > 1000
    assert out["fraction"] >= MIN_FRACTION, out["per_object"]
    assert abs(out["fraction"] - expected) < 1e-3
    # the background: its own static object in the result collection, under the root, at the bundle's points
    assert out["bg_name"] == "pan_background" and out["bg_parent"] == "pan_root" and out["bg_in_collection"]
    assert not out["bg_keys"] and not out["bg_anim"]
    assert out["bg_count"] == 64 * 48 and out["bg_max_err"] < 1e-5
