"""Importing result bundles into Blender, checked with Blender itself (the bpy module).

bpy's state is global to a process, so every test runs a short script in a fresh interpreter
(``run_bpy``); the script prints one ``RESULT:`` JSON line that the test asserts on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import make_bundle

pytestmark = pytest.mark.blender
pytest.importorskip("bpy")

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = f"""
import json, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
import bpy
import numpy as np
bpy.ops.wm.read_factory_settings(use_empty=True)

def emit(**kw):
    print("RESULT:" + json.dumps(kw), flush=True)

def enable():
    import addon_utils
    mod = addon_utils.enable("genmojo_blender", default_set=True)
    assert mod is not None and hasattr(bpy.types.Scene, "genmojo")
    return mod

def counts():
    return {{k: sorted(x.name for x in getattr(bpy.data, k))
            for k in ("objects", "meshes", "actions", "cameras", "shape_keys", "movieclips", "collections")}}
"""


def run_bpy(code: str, *, helpers: str = "", env: dict | None = None, timeout: float = 180,
            expect_ok: bool = True) -> dict:
    """Run ``code`` after PRELUDE (and ``helpers``) in a fresh Python with bpy; return the RESULT dict."""
    script = PRELUDE + textwrap.dedent(helpers) + textwrap.dedent(code)
    cp = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, timeout=timeout, env=env or dict(os.environ), cwd=str(ROOT))
    if expect_ok and cp.returncode != 0:
        raise AssertionError(f"bpy script failed ({cp.returncode}):\n{cp.stdout[-4000:]}\n{cp.stderr[-4000:]}")
    lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("RESULT:")]
    if not lines:
        raise AssertionError(f"no RESULT line:\n{cp.stdout[-4000:]}\n{cp.stderr[-4000:]}")
    out = json.loads(lines[-1][len("RESULT:"):])
    out["_returncode"] = cp.returncode
    return out


def write_plate(folder: Path, frames: int, width: int, height: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.full((height, width, 3), 30 * i, np.uint8))


def bundle_means(bundle: Path, obj_id: str) -> np.ndarray:
    with np.load(bundle / "objects" / obj_id / "frames.npz") as z:
        return z["means"]


# Evaluates the imported result per frame: positions of the display point cloud and of the mesh
# (modifier off), both mapped back into the bundle's OpenCV world through the root's inverse.
EVAL_HELPERS = """
def opencv_points(obj, use_display):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    if use_display:
        geometry = ev.evaluated_geometry()  # keep it alive while its point cloud is read
        pc = geometry.pointcloud
        co = np.empty(len(pc.points) * 3, np.float32)
        pc.attributes["position"].data.foreach_get("vector", co)
    else:
        me = ev.to_mesh()
        co = np.empty(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
    co = co.reshape(-1, 3).astype(np.float64)
    world = co @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    root = np.array(obj.parent.matrix_world)
    inv = np.linalg.inv(root)
    return world @ inv[:3, :3].T + inv[:3, 3]
"""


def test_import_creates_collection_root_points_camera_and_plate(tmp_path):
    T, W, H = 5, 64, 48
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=50, width=W, height=H,
                    fps=12, preview=False)
    write_plate(tmp_path / "JPEGImages", T, W, H)
    out = run_bpy(helpers=EVAL_HELPERS, code=f"""
    enable()
    res = bpy.ops.genmojo.import_result(filepath={str(b / 'manifest.json')!r})
    scene = bpy.context.scene
    coll = bpy.data.collections["GenMOJO shot"]
    root = bpy.data.objects["shot_root"]
    cam = bpy.data.objects["shot_camera"]
    objs = {{}}
    for name in ("shot_object_001", "shot_object_002"):
        ob = bpy.data.objects[name]
        me = ob.data
        kbs = me.shape_keys.key_blocks
        anim = me.shape_keys.animation_data
        fcs = list(anim.action.layers[0].strips[0].channelbag(anim.action_slot).fcurves)
        interp = sorted({{k.interpolation for fc in fcs for k in fc.keyframe_points}})
        disp, raw, weights = [], [], []
        for f in range(1, {T} + 1):
            scene.frame_set(f)
            disp.append(opencv_points(ob, True).tolist())
            ob.modifiers["GenMOJO Points"].show_viewport = False
            raw.append(opencv_points(ob, False).tolist())
            ob.modifiers["GenMOJO Points"].show_viewport = True
            weights.append([kb.value for kb in kbs[1:]])
        col = np.empty(len(me.vertices) * 4, np.float32)
        me.color_attributes["Color"].data.foreach_get("color_srgb", col)
        opa = np.empty(len(me.vertices), np.float32)
        me.attributes["_opacity"].data.foreach_get("value", opa)
        sca = np.empty(len(me.vertices), np.float32)
        me.attributes["_scale"].data.foreach_get("value", sca)
        objs[name] = dict(parent=ob.parent.name, verts=len(me.vertices), polys=len(me.polygons),
                          keys=[kb.name for kb in kbs], disp=disp, raw=raw, weights=weights,
                          interp=interp, color=list(ob.color), srgb=col.reshape(-1, 4)[:, :3].tolist(),
                          opacity=opa.tolist(), scale=sca.tolist(),
                          in_coll=ob.name in coll.objects, modifiers=[m.type for m in ob.modifiers],
                          slot=anim.action_slot.identifier if anim.action_slot else None)
    cam_mats, lens = [], []
    for f in range(1, {T} + 1):
        scene.frame_set(f)
        cam_mats.append([list(r) for r in cam.matrix_world])
    anim = cam.animation_data
    cam_fc = list(anim.action.layers[0].strips[0].channelbag(anim.action_slot).fcurves)
    bg = cam.data.background_images[0] if cam.data.background_images else None
    emit(result=sorted(res), colls=[c.name for c in scene.collection.children],
         root_rot=list(root.rotation_euler), root_mat=[list(r) for r in root.matrix_world],
         root_children=sorted(c.name for c in root.children), objs=objs,
         cam_mats=cam_mats, cam_keys={{fc.data_path + str(fc.array_index): len(fc.keyframe_points) for fc in cam_fc}},
         lens=cam.data.lens, shift=[cam.data.shift_x, cam.data.shift_y], fit=cam.data.sensor_fit,
         sensor=cam.data.sensor_width, clip=[cam.data.clip_start, cam.data.clip_end],
         res=[scene.render.resolution_x, scene.render.resolution_y], fps=[scene.render.fps, scene.render.fps_base],
         frames=[scene.frame_start, scene.frame_end], scene_cam=scene.camera.name,
         show_bg=cam.data.show_background_images, bg_source=bg.source if bg else None,
         bg_clip=bpy.path.abspath(bg.clip.filepath) if bg else None,
         clip_frames=bg.clip.frame_duration if bg else 0)
    """)
    assert out["result"] == ["FINISHED"]
    assert out["colls"] == ["GenMOJO shot"]
    assert np.allclose(out["root_rot"], [-np.pi / 2, 0, 0])
    # the root maps OpenCV down (+y) to Blender down (-z) and forward (+z) to +y
    R = np.array(out["root_mat"])[:3, :3]
    assert np.allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-6) and np.allclose(R @ [0, 0, 1], [0, 1, 0], atol=1e-6)
    assert out["root_children"] == ["shot_camera", "shot_object_001", "shot_object_002"]

    with np.load(b / "objects" / "001" / "frames.npz") as z:
        colors, opac, logs = z["colors"], z["opacities"], z["log_scales"]
    for oid, name in (("001", "shot_object_001"), ("002", "shot_object_002")):
        o = out["objs"][name]
        means = bundle_means(b, oid)
        N = means.shape[1]
        assert o["parent"] == "shot_root" and o["in_coll"]
        assert o["verts"] == N and o["polys"] == 0
        assert o["keys"] == ["Basis"] + [f"frame_{f:04d}" for f in range(1, T + 1)]
        assert o["interp"] == ["LINEAR"] and o["slot"]
        assert o["modifiers"] == ["NODES"]
        for i in range(T):
            assert np.abs(np.array(o["raw"][i]) - means[i]).max() < 1e-5
            assert np.abs(np.array(o["disp"][i]) - means[i]).max() < 1e-5
            assert o["weights"][i] == [1.0 if k == i else 0.0 for k in range(T)]
    o = out["objs"]["shot_object_001"]
    assert np.allclose(o["srgb"], colors[0], atol=1e-3)
    assert np.allclose(o["opacity"], opac[0], atol=1e-6)
    assert np.allclose(o["scale"], np.exp(logs[0]).mean(1), atol=1e-6)
    assert np.allclose(o["color"], [0.0, 0.5, 0.9, 1.0])
    assert np.allclose(out["objs"]["shot_object_002"]["color"], [0.2, 0.5, 0.9, 1.0])

    # camera: keyed every frame, pose = root @ c2w @ diag(1,-1,-1,1), intrinsics from K
    assert out["cam_keys"] == {f"location{i}": T for i in range(3)} | {f"rotation_quaternion{i}": T for i in range(4)}
    with np.load(b / "camera.npz") as z:
        K, c2w = z["K"], z["c2w"]
    flip = np.diag([1.0, -1, -1, 1])
    for i in range(T):
        assert np.allclose(out["cam_mats"][i], np.array(out["root_mat"]) @ c2w[i] @ flip, atol=1e-6)
    assert out["fit"] == "HORIZONTAL" and out["sensor"] == pytest.approx(36.0)
    assert out["lens"] == pytest.approx(K[0, 0, 0] * 36.0 / W, rel=1e-6)
    assert np.allclose(out["shift"], [(W / 2 - K[0, 0, 2]) / W, (K[0, 1, 2] - H / 2) / W], atol=1e-7)
    assert np.allclose(out["clip"], [0.01, 100.0])
    assert out["res"] == [W, H] and out["fps"] == [12, 1.0] and out["frames"] == [1, T]
    assert out["scene_cam"] == "shot_camera"
    assert out["show_bg"] and out["bg_source"] == "MOVIE_CLIP"
    assert Path(out["bg_clip"]) == tmp_path / "JPEGImages" / "00000.png"
    assert out["clip_frames"] == T


CAMERA_CHECK = """
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from genmojo_blender.blender import importer
from genmojo_blender.core import camera as gcam
scene = bpy.context.scene
res = importer.import_bundle(BUNDLE, scene)
with np.load(BUNDLE + "/camera.npz") as z:
    K, c2w = z["K"], z["c2w"]
W, H = scene.render.resolution_x, scene.render.resolution_y
root = np.array(res.root.matrix_world)
rng = np.random.default_rng(1)
errs = []
for i in range(len(K)):
    scene.frame_set(1 + i)
    local = np.column_stack([rng.uniform(-2, 2, 100), rng.uniform(-2, 2, 100), rng.uniform(1, 20, 100)])
    pts = local @ c2w[i][:3, :3].T + c2w[i][:3, 3]          # OpenCV world, in front of camera i
    uv_cv, _ = gcam.project_opencv(K[i], c2w[i], pts)
    bl = pts @ root[:3, :3].T + root[:3, 3]                   # the same points in Blender's world
    for p, (u, v) in zip(bl, uv_cv):
        ndc = world_to_camera_view(scene, res.camera, Vector(p.tolist()))
        errs.append(max(abs(ndc.x * W - u), abs((1 - ndc.y) * H - v)))
emit(max_err_px=float(max(errs)), n=len(errs), lens_keys=bool(res.camera.data.animation_data))
"""


@pytest.mark.parametrize("W,H", [(640, 360), (360, 640)])
def test_camera_projection_matches_opencv_through_blender(tmp_path, W, H):
    """Random points projected with K/c2w (OpenCV) land on the same pixels in Blender's camera."""
    T = 4
    b = make_bundle(tmp_path, save_name="cam", frames=T, objects=1, gaussians=10, width=W, height=H,
                    preview=False)
    rng = np.random.default_rng(W)
    K = np.zeros((T, 3, 3))
    c2w = np.zeros((T, 4, 4))
    for i in range(T):
        f = rng.uniform(0.6, 1.4) * max(W, H)
        K[i] = [[f, 0, rng.uniform(0.35, 0.65) * W], [0, f, rng.uniform(0.35, 0.65) * H], [0, 0, 1]]
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        from genmojo_blender.core.camera import quaternion_to_rotation
        c2w[i] = np.eye(4)
        c2w[i][:3, :3] = quaternion_to_rotation(q)[0]
        c2w[i][:3, 3] = rng.normal(size=3)
    np.savez(b / "camera.npz", K=K, c2w=c2w)
    out = run_bpy(f"BUNDLE = {str(b)!r}\n" + CAMERA_CHECK)
    assert out["n"] == T * 100
    assert out["max_err_px"] < 1e-3
    assert out["lens_keys"]  # intrinsics vary per frame, so lens/shift are keyed


def test_reimport_replaces_without_leftovers(tmp_path):
    a = make_bundle(tmp_path / "a", save_name="shot", frames=3, preview=False)
    write_plate(tmp_path / "a" / "JPEGImages", 3, 64, 48)
    other = make_bundle(tmp_path / "b", save_name="other", frames=2, preview=False)
    out = run_bpy(f"""
    from genmojo_blender.blender import importer
    importer.import_bundle({str(a)!r})
    first = counts()
    importer.import_bundle({str(a)!r})
    second = counts()
    importer.import_bundle({str(other)!r})
    third = counts()
    bpy.data.orphans_purge(do_recursive=True)
    emit(first=first, second=second, third=third, purged=counts())
    """)
    assert out["first"] == out["second"]  # same names, no ".001", nothing left over
    assert "shot_object_001" in out["second"]["objects"] and len(out["second"]["movieclips"]) == 1
    assert set(out["third"]["collections"]) == {"GenMOJO shot", "GenMOJO other"}
    assert set(out["second"]["objects"]) < set(out["third"]["objects"])
    # nothing the importer created was orphaned (purging removes nothing of ours)
    for k in ("objects", "meshes", "actions", "cameras", "shape_keys", "movieclips"):
        assert out["purged"][k] == out["third"][k], k


def test_corrupt_bundle_leaves_scene_unchanged(tmp_path):
    good = make_bundle(tmp_path / "g", save_name="good", frames=3, preview=False)
    bad = make_bundle(tmp_path / "b", save_name="bad", frames=3, preview=False)
    npz = bad / "objects" / "002" / "frames.npz"
    npz.write_bytes(npz.read_bytes()[:200])
    out = run_bpy(f"""
    enable()
    bpy.ops.genmojo.import_result(filepath={str(good)!r})
    before = counts()
    scene = bpy.context.scene
    settings = (scene.render.resolution_x, scene.frame_end, scene.camera.name)
    errors = []
    try:
        bpy.ops.genmojo.import_result(filepath={str(bad / 'manifest.json')!r})
    except RuntimeError as e:
        errors.append(str(e))
    # the same folder as an existing import, now broken: the old import must survive
    import shutil
    shutil.copy({str(npz)!r}, {str(good / 'objects' / '001' / 'frames.npz')!r})
    try:
        bpy.ops.genmojo.import_result(filepath={str(good)!r})
    except RuntimeError as e:
        errors.append(str(e))
    emit(before=before, after=counts(), errors=errors,
         same_settings=settings == (scene.render.resolution_x, scene.frame_end, scene.camera.name),
         state_error=bpy.context.window_manager.genmojo_run.error)
    """)
    assert out["before"] == out["after"]
    assert out["same_settings"]
    assert len(out["errors"]) == 2
    assert all("unreadable npz" in e and "frames.npz" in e for e in out["errors"])
    assert "Cannot import" in out["state_error"]


def test_missing_footage_still_imports_with_a_warning(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=2, preview=False)  # no JPEGImages folder
    out = run_bpy(f"""
    from genmojo_blender.blender import importer
    res = importer.import_bundle({str(b)!r})
    found = dict(warnings=res.warnings, objects=len(res.objects), bg=len(res.camera.data.background_images))
    enable()
    op = bpy.ops.genmojo.import_result(filepath={str(b)!r})  # replaces the import above
    emit(op=sorted(op), clips=len(bpy.data.movieclips), **found)
    """)
    assert out["objects"] == 2 and out["bg"] == 0 and out["clips"] == 0
    assert out["op"] == ["FINISHED"]
    assert any("footage not found" in w for w in out["warnings"])


def test_visibility_keys_and_drop_frame_rate(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=4, objects=1, fps=29.97, preview=False)
    m = json.loads((b / "manifest.json").read_text())
    m["objects"][0]["visible"] = [True, False, False, True]
    (b / "manifest.json").write_text(json.dumps(m))
    out = run_bpy(f"""
    from genmojo_blender.blender import importer
    res = importer.import_bundle({str(b)!r}, point_display=False)
    ob = res.objects[0]
    scene = bpy.context.scene
    hidden = []
    for f in range(1, 5):
        scene.frame_set(f)
        hidden.append([ob.hide_viewport, ob.hide_render])
    emit(hidden=hidden, fps=[scene.render.fps, scene.render.fps_base], mods=len(ob.modifiers))
    """)
    assert out["hidden"] == [[False, False], [True, True], [True, True], [False, False]]
    assert out["fps"][0] == 30 and out["fps"][1] == pytest.approx(30 / 29.97, rel=1e-6)
    assert out["mods"] == 0


def test_gltf_export_round_trip_keeps_per_frame_positions(tmp_path):
    T = 4
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=40, fps=12, preview=False)
    glb = tmp_path / "out" / "shot.glb"
    out = run_bpy(helpers=EVAL_HELPERS, code=f"""
    import struct
    enable()
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    bpy.ops.genmojo.export_glb(filepath={str(glb)!r})
    data = open({str(glb)!r}, "rb").read()
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + n])
    prims = [m["primitives"][0] for m in doc["meshes"]]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = 12        # glTF stores seconds; import at the clip's rate
    bpy.ops.import_scene.gltf(filepath={str(glb)!r})
    scene = bpy.context.scene
    per_obj = {{}}
    for name in ("shot_object_001", "shot_object_002"):
        ob = bpy.data.objects[name]
        pts = []
        for f in range(1, {T} + 1):
            scene.frame_set(f)
            pts.append(opencv_points(ob, False).tolist())
        per_obj[name] = dict(pts=pts, keys=len(ob.data.shape_keys.key_blocks),
                             colors=list(ob.data.color_attributes.keys()))
    emit(modes=[p.get("mode") for p in prims], attrs=[sorted(p["attributes"]) for p in prims],
         targets=[len(p.get("targets", [])) for p in prims], cameras=len(doc.get("cameras", [])),
         anims=len(doc.get("animations", [])), per_obj=per_obj,
         cam=[o.name for o in bpy.data.objects if o.type == "CAMERA"])
    """)
    assert out["modes"] == [0, 0]  # POINTS
    for attrs in out["attrs"]:
        assert {"POSITION", "COLOR_0", "_OPACITY", "_SCALE"} <= set(attrs)
    assert out["targets"] == [T, T] and out["cameras"] == 1 and out["anims"] == 1
    assert out["cam"] == ["shot_camera"]
    for oid, name in (("001", "shot_object_001"), ("002", "shot_object_002")):
        means = bundle_means(b, oid)
        got = out["per_obj"][name]
        assert got["keys"] == T + 1 and got["colors"] == ["Color"]
        for i in range(T):
            assert np.abs(np.array(got["pts"][i]) - means[i]).max() < 1e-4, (name, i)


def test_fbx_export_keeps_blend_shapes_and_their_animation(tmp_path):
    T = 3
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=1, gaussians=20, preview=False)
    fbx = tmp_path / "shot.fbx"
    out = run_bpy(f"""
    enable()
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    bpy.ops.genmojo.export_fbx(filepath={str(fbx)!r})
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath={str(fbx)!r})
    ob = next(o for o in bpy.data.objects if o.type == "MESH")
    keys = ob.data.shape_keys
    anim = keys.animation_data if keys else None
    emit(verts=len(ob.data.vertices), keys=len(keys.key_blocks) if keys else 0,
         animated=bool(anim and anim.action), cams=sum(o.type == "CAMERA" for o in bpy.data.objects))
    """)
    assert out["verts"] == 20 and out["keys"] == T + 1
    assert out["animated"] and out["cams"] == 1


def test_every_export_flag_is_known_to_this_blender():
    """``supported_settings`` drops unknown flags for other Blender versions; on the tested version
    nothing may be dropped, or an export would silently lose animation or attributes."""
    out = run_bpy("""
    from genmojo_blender.blender import export
    gl = export.gltf_settings("/tmp/x.glb")
    fb = export.fbx_settings("/tmp/x.fbx")
    emit(gltf=sorted(set(gl) - set(export.supported_settings(bpy.ops.export_scene.gltf, gl))),
         fbx=sorted(set(fb) - set(export.supported_settings(bpy.ops.export_scene.fbx, fb))),
         n=len(gl))
    """)
    assert out["gltf"] == [] and out["fbx"] == [] and out["n"] > 10
