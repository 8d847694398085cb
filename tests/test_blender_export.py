"""FBX and glTF exports re-imported into Blender and compared per frame: shape-key motion, camera
motion, and the rigid-transform option for engines without morph targets."""

from __future__ import annotations

import numpy as np
import pytest

from bundle_factory import make_bundle
from genmojo_blender.core.camera import quaternion_to_rotation
from test_blender_import import EVAL_HELPERS, run_bpy

pytestmark = pytest.mark.blender

T = 5


def _rigid_moving_bundle(tmp_path, *, wobble: float = 0.0):
    """Two objects that turn about their centre and translate, under a moving camera."""
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=2, gaussians=60, fps=12, preview=False)
    rng = np.random.default_rng(0)
    for k, oid in enumerate(("001", "002")):
        path = b / "objects" / oid / "frames.npz"
        with np.load(path) as z:
            arrays = dict(z)
        m0 = arrays["means"][0].astype(np.float64)
        c = m0.mean(0)
        frames = []
        for t in range(T):
            R = quaternion_to_rotation(np.array([np.cos(0.15 * t), 0.3 * np.sin(0.15 * t),
                                                 np.sin(0.15 * t), 0.1 * k]))[0]
            pts = (m0 - c) @ R.T + c + [0.1 * t, -0.05 * t, 0.02 * t * t]
            pts += wobble * t * rng.normal(size=pts.shape)
            frames.append(pts)
        arrays["means"] = np.array(frames, np.float32)
        np.savez(path, **arrays)
    with np.load(b / "camera.npz") as z:
        K, c2w = z["K"], z["c2w"].copy()
    for t in range(T):
        c2w[t][:3, :3] = quaternion_to_rotation(np.array([1.0, 0.02 * t, -0.03 * t, 0.01 * t]))[0]
        c2w[t][:3, 3] = [0.05 * t, -0.02 * t, 0.1 * t]
    np.savez(b / "camera.npz", K=K, c2w=c2w)
    return b


ROUND_TRIP = """
def world_points(ob):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = ob.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    M = np.array(ob.matrix_world)
    return co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]

def sample(names):
    scene = bpy.context.scene
    out = {n: [] for n in names}
    cams = []
    for f in range(1, T + 1):
        scene.frame_set(f)
        for n in names:
            out[n].append(world_points(bpy.data.objects[n]).tolist())
        cam = next(o for o in bpy.data.objects if o.type == "CAMERA")
        cams.append([list(r) for r in cam.matrix_world])
    return out, cams

enable()
bpy.ops.genmojo.import_result(filepath=BUNDLE, point_display=False)  # raw vertices to compare
names = ["shot_object_001", "shot_object_002"]
ref, ref_cams = sample(names)
wm = bpy.context.window_manager
if FMT == "glb":
    bpy.ops.genmojo.export_glb(filepath=OUT, rigid=RIGID)
else:
    bpy.ops.genmojo.export_fbx(filepath=OUT, rigid=RIGID)
after_export = sorted(o.name for o in bpy.data.objects)
keys_kept = [len(bpy.data.objects[n].data.shape_keys.key_blocks) for n in names]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.render.fps = 12
bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, T
if FMT == "glb":
    bpy.ops.import_scene.gltf(filepath=OUT)
else:
    # the importer's default settings (Animation Offset 1): frame 1 is written at time 0 for them
    bpy.ops.import_scene.fbx(filepath=OUT)
got, got_cams = sample(names)
shape_keys = [bool(bpy.data.objects[n].data.shape_keys) for n in names]
emit(ref=ref, got=got, ref_cams=ref_cams, got_cams=got_cams, shape_keys=shape_keys,
     after_export=after_export, keys_kept=keys_kept)
"""


@pytest.mark.parametrize("fmt", ["glb", "fbx"])
@pytest.mark.parametrize("rigid", [False, True])
def test_export_round_trip_matches_every_frame(tmp_path, fmt, rigid):
    """Re-imported objects and camera sit where they were in Blender on every frame, whether the
    motion travels as shape keys or as rigid transforms."""
    b = _rigid_moving_bundle(tmp_path)
    out_path = tmp_path / f"shot.{fmt}"
    out = run_bpy(f"BUNDLE = {str(b)!r}\nOUT = {str(out_path)!r}\nFMT = {fmt!r}\nRIGID = {rigid}\nT = {T}\n"
                  + ROUND_TRIP, timeout=300)
    # the scene is untouched by the export (stand-ins removed, names and shape keys back)
    assert out["after_export"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert out["keys_kept"] == [T + 1, T + 1]
    assert out["shape_keys"] == [not rigid, not rigid]
    tol = 1e-4 if fmt == "glb" else 1e-3  # FBX stores float32 transforms and centimetre-scaled curves
    for name in out["ref"]:
        ref, got = np.array(out["ref"][name]), np.array(out["got"][name])
        assert ref.shape == got.shape
        for f in range(T):
            assert np.abs(ref[f] - got[f]).max() < tol, (name, f, np.abs(ref[f] - got[f]).max())
    for f in range(T):
        assert np.allclose(np.array(out["ref_cams"][f]), np.array(out["got_cams"][f]), atol=tol), f


def test_rigid_export_warns_when_the_motion_is_not_rigid(tmp_path):
    b = _rigid_moving_bundle(tmp_path, wobble=0.05)
    out = run_bpy(f"""
    enable()
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    from genmojo_blender.blender import export
    warnings = []
    export.export_glb({str(tmp_path / 'x.glb')!r}, rigid=True, warnings=warnings)
    clean = []
    export.export_glb({str(tmp_path / 'y.glb')!r}, rigid=False, warnings=clean)
    emit(warnings=warnings, clean=clean)
    """)
    assert len(out["warnings"]) == 2 and all("not rigid" in w for w in out["warnings"])
    assert out["clean"] == []


def test_rigid_export_of_selected_objects_only(tmp_path):
    b = _rigid_moving_bundle(tmp_path)
    glb = tmp_path / "sel.glb"
    out = run_bpy(f"""
    import struct
    enable()
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    for o in bpy.data.objects:
        o.select_set(o.name in ("shot_object_002", "shot_root"))
    bpy.ops.genmojo.export_glb(filepath={str(glb)!r}, rigid=True, selected_only=True)
    data = open({str(glb)!r}, "rb").read()
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + n])
    emit(nodes=sorted(nd["name"] for nd in doc["nodes"]),
         selected=sorted(o.name for o in bpy.data.objects if o.select_get()),
         targets=[len(p.get("targets", [])) for m in doc["meshes"] for p in m["primitives"]])
    """)
    assert out["nodes"] == ["shot_object_002", "shot_root"]
    assert out["targets"] == [0]  # no morph targets in a rigid export
    assert out["selected"] == ["shot_object_002", "shot_root"]  # the user's selection is restored


def test_glb_and_fbx_never_replace_a_file_unless_told(tmp_path):
    """The older exports follow the rule of the newer ones (core/export_files.py): an existing file
    is refused naming it, untouched; Overwrite replaces it; nothing temporary is left behind."""
    b = _rigid_moving_bundle(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name in ("shot.glb", "shot.fbx", "sep.bin"):
        (out_dir / name).write_bytes(b"the user's own file")
    out = run_bpy(f"""
    import os
    enable()
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    from genmojo_blender.blender import export
    from genmojo_blender.core.export_files import ExportError
    OUT = {str(out_dir)!r}
    refused = {{}}
    for name, op in (("shot.glb", bpy.ops.genmojo.export_glb), ("shot.fbx", bpy.ops.genmojo.export_fbx)):
        try:
            op(filepath=OUT + "/" + name)
            refused[name] = ""
        except RuntimeError as e:
            refused[name] = str(e)
    try:
        export.export_glb(OUT + "/sep.gltf")  # its .bin is in the way
        refused["sep.gltf"] = ""
    except ExportError as e:
        refused["sep.gltf"] = str(e)
    done = [sorted(op(filepath=OUT + "/" + name, overwrite=True)) for name, op in
            (("shot.glb", bpy.ops.genmojo.export_glb), ("shot.fbx", bpy.ops.genmojo.export_fbx))]
    emit(refused=refused, done=done, exists_sep=os.path.exists(OUT + "/sep.gltf"))
    """)
    for name in ("shot.glb", "shot.fbx"):
        assert f"{out_dir / name} already exists" in out["refused"][name] and "Overwrite" in out["refused"][name]
    assert f"{out_dir / 'sep.bin'} already exists" in out["refused"]["sep.gltf"] and not out["exists_sep"]
    assert (out_dir / "sep.bin").read_bytes() == b"the user's own file"
    assert out["done"] == [["FINISHED"], ["FINISHED"]]
    assert (out_dir / "shot.glb").read_bytes()[:4] == b"glTF"
    assert (out_dir / "shot.fbx").read_bytes().startswith(b"Kaydara FBX Binary")
    assert sorted(p.name for p in out_dir.iterdir()) == ["sep.bin", "shot.fbx", "shot.glb"]  # no temporary files
