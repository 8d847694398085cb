"""The exports artists asked for (#22), run in Blender on an imported result whose root the user has
moved and scaled: 3DGS PLY sequences (read back with plyfile), glTF KHR_gaussian_splatting files
per frame, USD splats and the USD cache (opened with OpenUSD), and the Alembic cache re-imported
into Blender with its vertices at two frames. One Blender run does every export; the tests check
its files."""

from __future__ import annotations

import numpy as np
import pytest

from bundle_factory import make_bundle
from genmojo_blender.core import gltf_splats, splats
from genmojo_blender.core.camera import OPENCV_WORLD_TO_BLENDER
from test_blender_import import run_bpy

pytestmark = pytest.mark.blender

T, FPS = 3, 12
OBJECTS = ("001", "002", "003")  # shown as points, as splats and as a surface
NAMES = [f"shot_object_{oid}" for oid in OBJECTS]
# what the test does to the result's root in Blender: move it and scale it 2x
ROOT_LOCATION = np.array([1.0, -2.0, 0.5])
ROOT_SCALE = 2.0

SCRIPT = """
import os
enable()
from genmojo_blender.blender import importer, export
from genmojo_blender.core.export_files import ExportError
scene = bpy.context.scene
polls_empty = {n: getattr(bpy.ops.genmojo, n).poll() for n in
               ("export_ply_sequence", "export_gltf_splats", "export_usd_splats", "export_usd", "export_alembic")}
# both display looks, and a surface
importer.import_bundle(BUNDLE, representations={"002": "SPLATS", "003": "MESH"}, surface_resolution=16)

def world_vertices(ob):
    dg = bpy.context.evaluated_depsgraph_get()
    me = ob.evaluated_get(dg).to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ob.evaluated_get(dg).to_mesh_clear()
    M = np.array(ob.matrix_world)
    return (co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]).tolist()

# the sidebar's Result panel, drawn into a recording layout (the bpy module has no window)
from types import SimpleNamespace
from genmojo_blender.ui import panels
drawn = []
class Layout:
    scale_y, operator_context = 1.0, ""
    def _sub(self, *a, **k):
        return Layout()
    column = row = box = split = _sub
    def operator(self, idname, **k):
        drawn.append(idname)
        return SimpleNamespace()
    def __getattr__(self, name):
        return lambda *a, **k: None
panels.GENMOJO_PT_result.draw(SimpleNamespace(layout=Layout()), bpy.context)

root = bpy.data.objects["shot_root"]
root.location = ROOT_LOCATION
root.scale = (ROOT_SCALE,) * 3
polls = {n: getattr(bpy.ops.genmojo, n).poll() for n in polls_empty}
surface = []
for f in (1, T):
    scene.frame_set(f)
    surface.append(world_vertices(bpy.data.objects["shot_object_003"]))
scene.frame_set(2)
ops = bpy.ops.genmojo
ops.export_ply_sequence(directory=OUT + "/ply", merged=True)
ops.export_ply_sequence(directory=OUT + "/ply_bundle", space="BUNDLE", sh_degree="3")
ops.export_gltf_splats(filepath=OUT + "/glb/shot.glb")
ops.export_usd_splats(filepath=OUT + "/shot_splats.usda")
ops.export_usd(filepath=OUT + "/shot_cache.usdc")
ops.export_alembic(filepath=OUT + "/shot_cache.abc")
frame_after = scene.frame_current
mods_after = {m.name: (m.show_viewport, m.show_render) for o in bpy.data.objects for m in getattr(o, "modifiers", [])}
# a second export to the same place is refused and leaves the files alone ...
before = {p: os.path.getmtime(p) for p in (OUT + "/shot_cache.abc", OUT + "/ply/shot_object_001/shot_object_001_0001.ply")}
refusals = []
for call in (lambda: ops.export_alembic(filepath=OUT + "/shot_cache.abc"),
             lambda: ops.export_ply_sequence(directory=OUT + "/ply")):
    try:
        call()
        refusals.append("")
    except RuntimeError as e:
        refusals.append(str(e))
unchanged = all(os.path.getmtime(p) == t for p, t in before.items())
# ... and allowed with Overwrite
overwritten = "FINISHED" in ops.export_alembic(filepath=OUT + "/shot_cache.abc", overwrite=True)
leftovers = sorted(n for n in os.listdir(OUT) if n.startswith("."))

# the Alembic cache, read back by Blender
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.fps = FPS
scene.frame_start, scene.frame_end = 1, T
bpy.ops.wm.alembic_import(filepath=OUT + "/shot_cache.abc")
abc = {}
for f in (1, T):
    scene.frame_set(f)
    dg = bpy.context.evaluated_depsgraph_get()
    for ob in bpy.data.objects:
        if ob.type == "MESH":
            abc.setdefault(ob.name, []).append(world_vertices(ob))
emit(surface=surface, drawn=drawn, polls_empty=polls_empty, polls=polls, frame_after=frame_after, mods_after=mods_after,
     refusals=refusals, unchanged=unchanged, overwritten=overwritten, leftovers=leftovers, abc=abc)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("splat_export")
    b = make_bundle(tmp, save_name="shot", frames=T, objects=3, gaussians=30, fps=FPS, preview=False)
    # give the Gaussians varied orientations and sizes, so the conversions are really exercised
    rng = np.random.default_rng(1)
    for oid in OBJECTS:
        path = b / "objects" / oid / "frames.npz"
        with np.load(path) as z:
            arrays = dict(z)
        q = rng.normal(size=arrays["quats"].shape)
        arrays["quats"] = (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)
        arrays["log_scales"] = (arrays["log_scales"] + rng.normal(size=arrays["log_scales"].shape) * 0.2).astype(np.float32)
        np.savez(path, **arrays)
    out = tmp / "out"
    out.mkdir()
    res = run_bpy(f"BUNDLE = {str(b)!r}\nOUT = {str(out)!r}\nT = {T}\nFPS = {FPS}\n"
                  f"ROOT_LOCATION = {tuple(ROOT_LOCATION)}\nROOT_SCALE = {ROOT_SCALE}\n" + SCRIPT, timeout=300)
    return b, out, res


def _bundle(b, oid):
    with np.load(b / "objects" / oid / "frames.npz") as z:
        return {k: z[k] for k in z.files}


def _scene_matrix() -> np.ndarray:
    """Bundle world -> Blender world for the moved, scaled root."""
    M = np.eye(4)
    M[:3, :3] = ROOT_SCALE * np.eye(3)
    M[:3, 3] = ROOT_LOCATION
    return M @ OPENCV_WORLD_TO_BLENDER


def _blender_points(means: np.ndarray) -> np.ndarray:
    M = _scene_matrix()
    return means.astype(np.float64) @ M[:3, :3].T + M[:3, 3]


def _read_ply(path):
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"]
    return {p.name: np.asarray(v[p.name]) for p in v.properties}


def test_exports_need_an_imported_result_and_leave_the_scene_as_it_was(exported):
    _, _, res = exported
    assert not any(res["polls_empty"].values())
    assert all(res["polls"].values())
    assert res["frame_after"] == 2  # the exports step through frames and come back
    assert res["mods_after"] == {"GenMOJO Points": [True, True], "GenMOJO Splats": [True, True]}  # display back on


def test_the_result_panel_offers_every_export(exported):
    _, _, res = exported
    for name in ("export_usd", "export_alembic", "export_ply_sequence", "export_gltf_splats", "export_usd_splats"):
        assert f"genmojo.{name}" in res["drawn"], res["drawn"]


def test_ply_sequences_in_blender_space_and_in_the_bundles_own(exported):
    b, out, _ = exported
    names = dict(zip(OBJECTS, NAMES))
    total = {f: 0 for f in range(1, T + 1)}
    for oid, name in names.items():
        arrays = _bundle(b, oid)
        files = sorted(p.name for p in (out / "ply" / name).iterdir())
        assert files == [f"{name}_{f:04d}.ply" for f in range(1, T + 1)]
        for i in range(T):
            f = i + 1
            own = _read_ply(out / "ply_bundle" / name / f"{name}_{f:04d}.ply")
            assert len([k for k in own if k.startswith("f_rest_")]) == 45
            # the bundle's space: its numbers, exactly
            assert np.array_equal(np.stack([own["x"], own["y"], own["z"]], 1), arrays["means"][i])
            assert np.array_equal(np.stack([own[f"rot_{j}"] for j in range(4)], 1), arrays["quats"][i])
            assert np.array_equal(np.stack([own[f"scale_{j}"] for j in range(3)], 1), arrays["log_scales"][i])
            assert np.array_equal(np.stack([own[f"f_dc_{j}"] for j in range(3)], 1), splats.sh_dc(arrays["colors"][i]))
            assert np.array_equal(own["opacity"], splats.logit(arrays["opacities"][i]))
            # Blender's space: where the scene shows them, sizes scaled with the root
            ply = _read_ply(out / "ply" / name / f"{name}_{f:04d}.ply")
            assert "f_rest_0" not in ply
            xyz = np.stack([ply["x"], ply["y"], ply["z"]], 1)
            assert np.allclose(xyz, _blender_points(arrays["means"][i]), atol=1e-5)
            logs = np.stack([ply[f"scale_{j}"] for j in range(3)], 1)
            assert np.allclose(logs, arrays["log_scales"][i] + np.log(ROOT_SCALE), atol=1e-6)
            total[f] += len(xyz)
    for f, n in total.items():
        merged = _read_ply(out / "ply" / "all_objects" / f"all_objects_{f:04d}.ply")
        assert len(merged["x"]) == n


def test_gltf_splat_file_per_frame_in_gltf_axes(exported):
    b, out, _ = exported
    assert sorted(p.name for p in (out / "glb").iterdir()) == [f"shot_{f:04d}.glb" for f in range(1, T + 1)]
    for i in range(T):
        doc, binary = gltf_splats.read_glb((out / "glb" / f"shot_{i + 1:04d}.glb").read_bytes())
        assert doc["extensionsUsed"] == ["KHR_gaussian_splatting"] and doc["asset"]["extras"]["frame"] == i + 1
        assert [n["name"] for n in doc["nodes"]] == NAMES
        for node, oid in zip(doc["nodes"], OBJECTS):
            prim = doc["meshes"][node["mesh"]]["primitives"][0]
            pos = gltf_splats.accessor_array(doc, binary, prim["attributes"]["POSITION"])
            blender = _blender_points(_bundle(b, oid)["means"][i])
            assert np.allclose(pos, blender @ splats.BLENDER_TO_GLTF[:3, :3].T, atol=1e-5)  # Y up
            acc = doc["accessors"][prim["attributes"]["POSITION"]]
            assert np.allclose(acc["min"], pos.min(0)) and np.allclose(acc["max"], pos.max(0))


def test_usd_splats_play_the_clip_in_openusd(exported):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom, UsdVol

    b, out, _ = exported
    stage = Usd.Stage.Open(str(out / "shot_splats.usda"))
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and stage.GetTimeCodesPerSecond() == FPS
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode()) == (1, T)
    for oid in OBJECTS:
        prim = stage.GetPrimAtPath(f"/shot/shot_object_{oid}")
        assert prim.IsA(UsdVol.ParticleField3DGaussianSplat)
        arrays = _bundle(b, oid)
        for t in (1, T):
            pos = np.array(prim.GetAttribute("positions").Get(t))
            assert np.allclose(pos, _blender_points(arrays["means"][t - 1]), atol=1e-5)
            scales = np.array(prim.GetAttribute("scales").Get(t))
            assert np.allclose(np.sort(scales, 1), np.sort(ROOT_SCALE * np.exp(arrays["log_scales"][t - 1]), 1), rtol=1e-5)


def test_usd_cache_has_the_points_and_the_surface_at_every_frame(exported):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom

    b, out, res = exported
    stage = Usd.Stage.Open(str(out / "shot_cache.usdc"))
    meshes = {p.GetName(): UsdGeom.Mesh(p) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)}
    assert sorted(meshes) == NAMES
    cache = UsdGeom.XformCache()
    for oid in OBJECTS:
        mesh = meshes[f"shot_object_{oid}"]
        attr = mesh.GetPointsAttr()
        assert attr.GetTimeSamples() == [float(f) for f in range(1, T + 1)]
        for k, t in enumerate((1, T)):
            cache.SetTime(t)
            M = np.array(cache.GetLocalToWorldTransform(mesh.GetPrim())).T  # USD matrices are row-vector
            local = np.array(attr.Get(t), np.float64)
            world = local @ M[:3, :3].T + M[:3, 3]
            expected = (np.array(res["surface"][k]) if oid == "003"
                        else _blender_points(_bundle(b, oid)["means"][t - 1]))
            assert len(local) == len(expected) > 0
            assert np.allclose(world, expected, atol=1e-4)
    assert len(meshes["shot_object_003"].GetFaceVertexCountsAttr().Get(1)) > 0  # the surface keeps its faces


def test_alembic_cache_reimports_with_vertices_that_move(exported):
    b, _, res = exported
    abc = res["abc"]
    assert sorted(abc) == NAMES
    for oid in OBJECTS:
        first, last = (np.array(p) for p in abc[f"shot_object_{oid}"])
        if oid == "003":
            expected = [np.array(p) for p in res["surface"]]
        else:
            means = _bundle(b, oid)["means"]
            expected = [_blender_points(means[0]), _blender_points(means[T - 1])]
        assert len(first) == len(last) == len(expected[0]) > 0
        assert not np.allclose(first, last)
        assert np.allclose(first, expected[0], atol=1e-4)
        assert np.allclose(last, expected[1], atol=1e-4)


def test_existing_files_are_refused_without_overwrite(exported):
    _, _, res = exported
    assert all("already exist" in r and "Overwrite" in r for r in res["refusals"]), res["refusals"]
    assert res["unchanged"] and res["overwritten"]
    assert res["leftovers"] == []  # no temporary files left behind


def _add_background(bundle, n: int = 16) -> np.ndarray:
    """Turn a factory bundle into one of background mode: static Gaussians in background/."""
    import json

    from backend.io.bundle_writer import CanonicalArrays, write_canonical_ply

    rng = np.random.default_rng(5)
    g = dict(means=(rng.normal(size=(n, 3)) + [0, 0, 6]).astype(np.float32),
             quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)), log_scales=np.full((n, 3), -2.0, np.float32),
             colors=rng.uniform(size=(n, 3)).astype(np.float32),
             opacities=rng.uniform(0.3, 0.9, n).astype(np.float32))
    (bundle / "background").mkdir()
    np.savez(bundle / "background" / "gaussians.npz", **g)
    write_canonical_ply(bundle / "background" / "background.ply", CanonicalArrays(**g))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["background"] = {"gaussians": "background/gaussians.npz", "ply": "background/background.ply",
                              "num_gaussians": n, "reference_frame": 0, "source": "test", "mask": "test"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return g["means"]


def test_background_is_exported_with_the_objects(tmp_path):
    b = make_bundle(tmp_path, save_name="bg", frames=2, objects=1, gaussians=10, fps=FPS, preview=False)
    bg_means = _add_background(b)
    out = tmp_path / "ply"
    res = run_bpy(f"""
    enable()
    from genmojo_blender.blender import importer
    importer.import_bundle({str(b)!r})
    bpy.ops.genmojo.export_ply_sequence(directory={str(out)!r}, space="BUNDLE", merged=True)
    emit(objects=sorted(o.name for o in bpy.data.objects))
    """)
    assert "bg_background" in res["objects"]
    assert sorted(p.name for p in out.iterdir()) == ["all_objects", "bg_background", "bg_object_001"]
    for f in (1, 2):  # static: the same Gaussians in every frame
        bg = _read_ply(out / "bg_background" / f"bg_background_{f:04d}.ply")
        assert np.array_equal(np.stack([bg["x"], bg["y"], bg["z"]], 1), bg_means)
        assert len(_read_ply(out / "all_objects" / f"all_objects_{f:04d}.ply")["x"]) == 10 + len(bg_means)


def test_hidden_frames_are_left_out(tmp_path):
    """An object hidden at a frame (its mask empty there, keyed hidden by the import) is not in that
    frame's files: no PLY of its own, not in the merged PLY, no glTF node, invisible in USD; a frame
    where every object is hidden gets no file; objects hidden in every frame are refused by name."""
    import json

    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom

    b = make_bundle(tmp_path, save_name="vis", frames=4, objects=2, gaussians=10, fps=FPS, preview=False)
    shown = {"001": [True, False, False, True], "002": [True, True, False, True]}
    manifest = json.loads((b / "manifest.json").read_text())
    for o in manifest["objects"]:
        o["visible"] = shown[o["id"]]
    (b / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    res = run_bpy(f"""
    enable()
    from genmojo_blender.blender import importer
    importer.import_bundle({str(b)!r})
    ops = bpy.ops.genmojo
    ops.export_ply_sequence(directory={str(out / "ply")!r}, merged=True)
    ops.export_gltf_splats(filepath={str(out / "glb" / "vis.glb")!r})
    ops.export_usd_splats(filepath={str(out / "vis.usda")!r})
    for ob in bpy.data.objects:
        if ob.get(importer.OBJECT_ID_PROP):
            ob.animation_data_clear()
            ob.hide_render = True
    try:
        ops.export_ply_sequence(directory={str(out / "none")!r})
        refusal = ""
    except RuntimeError as e:
        refusal = str(e)
    emit(refusal=refusal, none=os.path.exists({str(out / "none")!r}))
    """, helpers="import os")
    names = {oid: f"vis_object_{oid}" for oid in shown}
    for oid, name in names.items():
        files = sorted(p.name for p in (out / "ply" / name).iterdir())
        assert files == [f"{name}_{f:04d}.ply" for f, v in enumerate(shown[oid], 1) if v]
    counts = {oid: len(_read_ply(out / "ply" / names[oid] / f"{names[oid]}_0001.ply")["x"]) for oid in shown}
    assert sorted(p.name for p in (out / "ply" / "all_objects").iterdir()) == [
        f"all_objects_{f:04d}.ply" for f in (1, 2, 4)]
    assert len(_read_ply(out / "ply" / "all_objects" / "all_objects_0002.ply")["x"]) == counts["002"]
    assert len(_read_ply(out / "ply" / "all_objects" / "all_objects_0004.ply")["x"]) == sum(counts.values())
    assert sorted(p.name for p in (out / "glb").iterdir()) == [f"vis_{f:04d}.glb" for f in (1, 2, 4)]
    nodes = {f: [n["name"] for n in gltf_splats.read_glb((out / "glb" / f"vis_{f:04d}.glb").read_bytes())[0]["nodes"]]
             for f in (1, 2, 4)}
    assert nodes == {1: list(names.values()), 2: [names["002"]], 4: list(names.values())}
    stage = Usd.Stage.Open(str(out / "vis.usda"))
    for oid, name in names.items():
        prim = UsdGeom.Imageable(stage.GetPrimAtPath(f"/vis/{name}"))
        assert [prim.ComputeVisibility(t) == "inherited" for t in range(1, 5)] == shown[oid]
    assert "vis_object_001, vis_object_002 are hidden from the render in every frame" in res["refusal"]
    assert not res["none"]
