"""Floor and real-world scale of an imported result (blender/floor_scale.py, genmojo.set_floor,
genmojo.set_scale): the floor goes to Z = 0, an object gets the height asked for, running either
again changes nothing, and every object point projects to the same pixel before and after."""

from __future__ import annotations

import numpy as np
import pytest

from bundle_factory import make_bundle
from test_blender_import import run_bpy

pytestmark = pytest.mark.blender

T = 4

PROJECT = f"""
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

def pixels(rig):
    # every object point on every frame, through the scene camera, as normalised image coordinates
    scene = bpy.context.scene
    out = []
    for f in range(1, {T} + 1):
        scene.frame_set(f)
        for ob in rig.objects:
            M = ob.matrix_world
            for kb in ob.data.shape_keys.key_blocks[1:]:
                if kb.name != f"frame_{{f:04d}}":
                    continue
                for i in range(0, len(kb.data), 7):
                    p = world_to_camera_view(scene, rig.camera, M @ kb.data[i].co)
                    out.append([p.x, p.y, p.z])
    return np.array(out)

def contacts_z(rig):
    from genmojo_blender.core import scene_scale as ss
    data = [floor_scale.object_frames(o)[:2] for o in rig.objects]
    return ss.contact_points(data).T[2]
"""


def test_floor_and_scale_keep_every_pixel_and_are_idempotent(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=200, preview=False)
    out = run_bpy(helpers=PROJECT, code=f"""
    enable()
    from mathutils import Euler, Matrix
    from genmojo_blender.blender import floor_scale, importer, render_setup
    res = importer.import_bundle({str(b)!r})
    scene = bpy.context.scene
    rig = floor_scale.rig_of(res.collection)
    # tilt and lift the whole rig: the floor is then neither level nor at Z = 0
    rig.root.matrix_world = Matrix.Translation((0.4, -0.2, 1.3)) @ Euler((-1.45, 0.12, 0.3)).to_matrix().to_4x4()
    bpy.context.view_layer.update()
    render_setup.setup_render_scene(scene, rig)
    ground = bpy.data.objects["shot_shadow_catcher"]
    full, vis, frames = floor_scale.object_frames(rig.objects[0])
    sub = floor_scale.object_frames(rig.objects[0], max_points=50)[0]
    px0 = pixels(rig)
    tilted = contacts_z(rig)
    ground_before = [list(r) for r in ground.matrix_world]

    op = bpy.ops.genmojo.set_floor()
    px1 = pixels(rig)
    floor1 = contacts_z(rig)
    root1 = [list(r) for r in rig.root.matrix_world]
    ground1 = [list(r) for r in ground.matrix_world]
    bpy.ops.genmojo.set_floor()
    root1b = [list(r) for r in rig.root.matrix_world]

    clip0 = [rig.camera.data.clip_start, rig.camera.data.clip_end]
    h0 = floor_scale.measured_height(rig.objects[0])
    op2 = bpy.ops.genmojo.set_scale(object_name="shot_object_001", height=1.8)
    px2 = pixels(rig)
    h1 = floor_scale.measured_height(rig.objects[0])
    floor2 = contacts_z(rig)
    root2 = [list(r) for r in rig.root.matrix_world]
    bpy.ops.genmojo.set_scale(object_name="shot_object_001", height=1.8)
    root2b = [list(r) for r in rig.root.matrix_world]
    clip1 = [rig.camera.data.clip_start, rig.camera.data.clip_end]
    try:
        bpy.ops.genmojo.set_scale(object_name="shot_camera", height=1.8)
        bad = "ran"
    except RuntimeError as e:  # an operator's error report
        bad = str(e)
    emit(op=sorted(op), op2=sorted(op2), bad=bad, px0=px0.tolist(), px1=px1.tolist(), px2=px2.tolist(),
         tilted=tilted.tolist(), floor1=floor1.tolist(), floor2=floor2.tolist(), root1=root1, root1b=root1b,
         root2=root2, root2b=root2b, h0=h0, h1=h1, clip0=clip0, clip1=clip1, ground_before=ground_before,
         ground1=ground1, full=full.shape, frames=frames, vis=vis.tolist(),
         sub_ok=bool(np.array_equal(sub, full[:, ::-(-full.shape[1] // 50)])), sub=sub.shape)
    """)
    assert out["op"] == ["FINISHED"] and out["op2"] == ["FINISHED"]
    assert "Pick an object of an imported result" in out["bad"]
    # positions come from the frame shape keys; a large object is read every k-th point
    assert out["full"] == [T, 200, 3] and out["frames"] == [1, 2, 3, 4] and out["vis"] == [True] * T
    assert out["sub_ok"] and out["sub"] == [T, 50, 3]
    px0, px1, px2 = (np.array(out[k]) for k in ("px0", "px1", "px2"))
    assert len(px0) > 100 and (px0[:, 2] > 0).all()
    # the footage still lines up: the same pixels (and only the depth changes with the scale)
    assert np.abs(px1[:, :2] - px0[:, :2]).max() < 1e-5
    assert np.abs(px2[:, :2] - px0[:, :2]).max() < 1e-5
    assert np.allclose(px1[:, 2], px0[:, 2], atol=1e-5)

    # floor: the contact points were lifted and spread over heights by the tilt; now they sit at Z = 0
    assert np.min(out["tilted"]) > 1.0 and np.ptp(out["tilted"]) > 0.05
    assert np.abs(out["floor1"]).max() < 0.02
    assert np.allclose(out["root1"], out["root1b"], atol=1e-5)  # a second run changes nothing
    # the shadow catcher followed the floor: level, at Z = 0
    g = np.array(out["ground1"])
    assert np.allclose(g[:3, 2], [0, 0, 1], atol=1e-5) and abs(g[2, 3]) < 1e-5
    assert not np.allclose(out["ground_before"], out["ground1"], atol=1e-3)

    # scale: the object is now 1.8 tall, the floor stayed at Z = 0, a second run changes nothing
    s = 1.8 / out["h0"]
    assert out["h1"] == pytest.approx(1.8, rel=1e-4)
    assert np.abs(out["floor2"]).max() < 0.02 * s
    assert np.allclose(out["root2"], out["root2b"], atol=1e-5)
    assert np.allclose(out["clip1"], np.array(out["clip0"]) * s, rtol=1e-5)


def test_floor_of_one_result_among_several_needs_a_selection(tmp_path):
    b1 = make_bundle(tmp_path / "a", save_name="one", frames=T, objects=1, gaussians=50, preview=False)
    b2 = make_bundle(tmp_path / "b", save_name="two", frames=T, objects=1, gaussians=50, preview=False)
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import importer
    importer.import_bundle({str(b1)!r})
    importer.import_bundle({str(b2)!r})
    before = [list(r) for r in bpy.data.objects["two_root"].matrix_world]
    try:
        bpy.ops.genmojo.set_floor()
        none = "ran"
    except RuntimeError as e:
        none = str(e)
    bpy.context.view_layer.objects.active = bpy.data.objects["two_object_001"]
    ok = bpy.ops.genmojo.set_floor()
    emit(none=none, ok=sorted(ok), one=[list(r) for r in bpy.data.objects["one_root"].matrix_world],
         two=[list(r) for r in bpy.data.objects["two_root"].matrix_world], before=before)
    """)
    assert "select an object of the one to work on" in out["none"] and out["ok"] == ["FINISHED"]
    assert np.allclose(out["one"], out["before"])  # untouched: not the active object's result
    assert not np.allclose(out["two"], out["before"], atol=1e-4)
