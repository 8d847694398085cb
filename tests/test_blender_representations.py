"""Import representations (points, splats, mesh), all-or-nothing imports, switching representation
per object, drag and drop, and the splat look rendered by Cycles and EEVEE."""

from __future__ import annotations

import numpy as np
import pytest

from bundle_factory import make_bundle
from test_blender_import import EVAL_HELPERS, bundle_means, run_bpy

pytestmark = pytest.mark.blender


def test_each_object_gets_the_representation_asked_for(tmp_path):
    T = 4
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=3, gaussians=200, preview=False)
    out = run_bpy(helpers=EVAL_HELPERS, code=f"""
    enable()
    res = bpy.ops.genmojo.import_result(filepath={str(b / 'manifest.json')!r}, representation="POINTS",
                                        object_representations="2=MESH, 003=splats")
    scene = bpy.context.scene
    objs = {{}}
    for name in ("shot_object_001", "shot_object_002", "shot_object_003"):
        ob = bpy.data.objects[name]
        me = ob.data
        raw = []
        for f in range(1, {T} + 1):
            scene.frame_set(f)
            for m in ob.modifiers:
                m.show_viewport = False
            raw.append(opencv_points(ob, False).tolist())
            for m in ob.modifiers:
                m.show_viewport = True
        dg = bpy.context.evaluated_depsgraph_get()
        ev = ob.evaluated_get(dg).to_mesh()
        evaluated = dict(verts=len(ev.vertices), polys=len(ev.polygons), attrs=sorted(ev.attributes.keys()),
                         mats=[m.name for m in ev.materials if m])
        ob.evaluated_get(dg).to_mesh_clear()
        objs[name] = dict(rep=ob["genmojo_representation"], verts=len(me.vertices), polys=len(me.polygons),
                          mods=[m.name for m in ob.modifiers], mats=[m.name for m in me.materials if m],
                          attrs=sorted(a.name for a in me.attributes if not a.name.startswith(".")),
                          keys=len(me.shape_keys.key_blocks), raw=raw, evaluated=evaluated,
                          color=list(ob.color))
    emit(result=sorted(res), objs=objs)
    """)
    assert out["result"] == ["FINISHED"]
    o1, o2, o3 = (out["objs"][f"shot_object_00{i}"] for i in (1, 2, 3))
    assert [o1["rep"], o2["rep"], o3["rep"]] == ["POINTS", "MESH", "SPLATS"]
    for o in (o1, o2, o3):
        assert o["keys"] == T + 1
    # points and splats carry the Gaussians' attributes and move exactly with them
    for o, oid in ((o1, "001"), (o3, "003")):
        assert {"Color", "_opacity", "_scale", "splat_sigma", "splat_rotation"} <= set(o["attrs"])
        means = bundle_means(b, oid)
        assert o["verts"] == means.shape[1] and o["polys"] == 0
        for i in range(T):
            assert np.abs(np.array(o["raw"][i]) - means[i]).max() < 1e-5
    assert o1["mods"] == ["GenMOJO Points"] and o3["mods"] == ["GenMOJO Splats"]
    # splats: one smooth ellipsoid per Gaussian with the splat material and the per-point attributes
    ev = o3["evaluated"]
    assert ev["verts"] == o3["verts"] * 42 and ev["polys"] == o3["verts"] * 80  # ico-sphere, detail 2
    assert ev["mats"] == ["GenMOJO Splats"] and {"Color", "_opacity"} <= set(ev["attrs"])
    # mesh: a real surface with faces, a colour and the surface material, following the motion
    assert o2["polys"] > 100 and o2["mods"] == [] and o2["mats"] == ["GenMOJO Surface"]
    assert "Color" in o2["attrs"]
    raw = np.array(o2["raw"])
    shift = raw - raw[0]
    assert np.allclose(shift[3], [0.3, 0, 0], atol=1e-4)  # the factory moves objects 0.1 / frame in x
    means = bundle_means(b, "002")
    lo, hi = means[0].min(0), means[0].max(0)
    assert (raw[0].min(0) > lo - 0.2).all() and (raw[0].max(0) < hi + 0.2).all()
    assert np.allclose(o2["color"], [0.2, 0.5, 0.9, 1.0])  # manifest colour as object colour


def test_a_failure_while_building_leaves_the_scene_exactly_as_it_was(tmp_path):
    good = make_bundle(tmp_path / "a", save_name="shot", frames=3, preview=False)
    other = make_bundle(tmp_path / "b", save_name="other", frames=5, width=80, height=40, preview=False)
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import importer
    bpy.ops.genmojo.import_result(filepath={str(good)!r})
    scene = bpy.context.scene
    scene.frame_set(2)
    def snapshot():
        ids = {{k: sorted(x.name for x in getattr(bpy.data, k)) for k in
                ("objects", "meshes", "materials", "node_groups", "cameras", "actions", "shape_keys",
                 "movieclips", "collections")}}
        ob = bpy.data.objects["shot_object_001"]
        return dict(ids=ids, res=[scene.render.resolution_x, scene.render.resolution_y],
                    fps=[scene.render.fps, scene.render.fps_base], frames=[scene.frame_start, scene.frame_end],
                    current=scene.frame_current, camera=scene.camera.name,
                    keys=len(ob.data.shape_keys.key_blocks), mods=[m.name for m in ob.modifiers],
                    children=sorted(c.name for c in scene.collection.children))
    before = snapshot()

    real = importer._build_camera
    def boom(*a, **k):
        real(*a, **k)       # the camera exists when the failure hits
        raise RuntimeError("injected failure")
    importer._build_camera = boom
    errors = []
    for path, rep in (({str(good)!r}, "SPLATS"), ({str(other)!r}, "MESH")):
        try:
            bpy.ops.genmojo.import_result(filepath=path, representation=rep)
        except RuntimeError as e:
            errors.append(str(e))
        errors.append(bpy.context.window_manager.genmojo_run.error)
    after = snapshot()
    importer._build_camera = real
    ok = sorted(bpy.ops.genmojo.import_result(filepath={str(good)!r}, representation="SPLATS"))
    emit(before=before, after=after, errors=errors, ok=ok, final=snapshot()["ids"]["objects"])
    """)
    assert out["after"] == out["before"]
    assert len(out["errors"]) == 4 and all("injected failure" in e for e in out["errors"])
    assert out["ok"] == ["FINISHED"]
    assert out["final"] == out["before"]["ids"]["objects"]  # the same names after a real re-import


def test_switching_representation_rebuilds_one_object_in_place(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=3, objects=2, gaussians=150, preview=False)
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import importer
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    ob = bpy.data.objects["shot_object_002"]
    ob.location.z = 0.5                       # a user edit that must survive
    coll = ob.users_collection[0].name
    steps = []
    for rep in ("MESH", "SPLATS", "POINTS"):
        res = bpy.ops.genmojo.set_representation(object_name="shot_object_002", representation=rep)
        ob = bpy.data.objects["shot_object_002"]
        steps.append(dict(res=sorted(res), rep=ob["genmojo_representation"], polys=len(ob.data.polygons),
                          mods=[m.name for m in ob.modifiers], z=ob.location.z, parent=ob.parent.name,
                          coll=ob.users_collection[0].name, keys=len(ob.data.shape_keys.key_blocks)))
    bpy.data.orphans_purge(do_recursive=True)
    names = sorted(o.name for o in bpy.data.objects)
    meshes = sorted(m.name for m in bpy.data.meshes)
    other = bpy.data.objects["shot_object_001"]["genmojo_representation"]
    emit(steps=steps, names=names, meshes=meshes, coll=coll, other=other)
    """)
    reps = [s["rep"] for s in out["steps"]]
    assert reps == ["MESH", "SPLATS", "POINTS"]
    assert all(s["res"] == ["FINISHED"] for s in out["steps"])
    assert out["steps"][0]["polys"] > 0 and out["steps"][1]["mods"] == ["GenMOJO Splats"]
    assert all(s["z"] == pytest.approx(0.5) and s["parent"] == "shot_root" and s["coll"] == out["coll"]
               and s["keys"] == 4 for s in out["steps"])
    assert out["other"] == "POINTS"
    assert out["names"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert out["meshes"] == ["shot_object_001", "shot_object_002"]  # nothing left behind


def test_bad_representation_options_are_refused_before_anything_changes(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=2, preview=False)
    out = run_bpy(f"""
    enable()
    errors = []
    for spec in ("009=MESH", "001=VOXELS", "first=MESH"):
        try:
            bpy.ops.genmojo.import_result(filepath={str(b)!r}, object_representations=spec)
        except RuntimeError as e:
            errors.append(str(e))
    emit(errors=errors, objects=len(bpy.data.objects))
    """)
    assert out["objects"] == 0 and len(out["errors"]) == 3
    assert "no object 009" in out["errors"][0] and "VOXELS" in out["errors"][1]


def test_file_handler_offers_the_importer_for_dropped_manifests():
    out = run_bpy("""
    mod = enable()
    from genmojo_blender.operators import import_result
    fh = bpy.types.FileHandler.bl_rna_get_subclass_py("GENMOJO_FH_import_result")
    op = bpy.ops.genmojo.import_result.get_rna_type()
    emit(op=fh.bl_import_operator, ext=fh.bl_file_extensions,
         has_filepath="filepath" in op.properties.keys(),
         menu=import_result.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize())
    """)
    assert out["op"] == "genmojo.import_result" and out["ext"] == ".json" and out["has_filepath"]
    assert out["menu"]


RENDER = """
from genmojo_blender.blender import importer
res = importer.import_bundle(BUNDLE, representation="SPLATS")
sc = bpy.context.scene
sc.render.engine = ENGINE
sc.view_settings.view_transform = "Standard"
sc.render.film_transparent = True
if ENGINE == "CYCLES":
    sc.cycles.device = "CPU"
    sc.cycles.samples = 64
    sc.cycles.use_denoising = False
    sc.cycles.filter_width = 0.5
else:
    sc.eevee.taa_render_samples = 32
sc.render.filepath = OUT
sc.render.image_settings.file_format = "PNG"
sc.render.image_settings.color_mode = "RGBA"
bpy.ops.render.render(write_still=True)
img = bpy.data.images.load(OUT)
px = np.array(img.pixels[:]).reshape(img.size[1], img.size[0], 4)[::-1]
emit(px=px.tolist())
"""


@pytest.mark.parametrize("engine", ["CYCLES", "BLENDER_EEVEE"])
def test_splat_look_renders_colour_opacity_and_size(tmp_path, engine):
    """Two Gaussians in front of the camera: an opaque red one and a half-transparent blue one.
    The render shows each colour at its projected centre with its opacity, fading with the
    Gaussian profile, and nothing elsewhere."""
    T, W, H = 2, 64, 48
    b = make_bundle(tmp_path, save_name="shot", frames=T, objects=1, gaussians=2, width=W, height=H,
                    preview=False)
    means = np.array([[-0.3, 0, 3], [0.3, 0, 3]], np.float32)
    np.savez(b / "objects" / "001" / "frames.npz", means=np.repeat(means[None], T, 0),
             quats=np.tile(np.float32([1, 0, 0, 0]), (T, 2, 1)),
             log_scales=np.full((T, 2, 3), np.log(0.15), np.float32),
             colors=np.tile(np.float32([[1, 0, 0], [0, 0, 1]]), (T, 1, 1)),
             opacities=np.tile(np.float32([1.0, 0.5]), (T, 1)))
    out = run_bpy(f"BUNDLE = {str(b)!r}\nENGINE = {engine!r}\nOUT = {str(tmp_path / 'r.png')!r}\n" + RENDER,
                  timeout=600)
    px = np.array(out["px"])
    f = 0.5 * H / np.tan(np.deg2rad(49.1) / 2)
    sigma_px = f * 0.15 / 3
    red = px[H // 2, int(W / 2 - f * 0.1)]
    blue = px[H // 2, int(W / 2 + f * 0.1)]
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1 and red[3] > 0.85
    assert blue[2] > 0.9 and blue[0] < 0.1 and 0.35 < blue[3] < 0.65
    # one standard deviation out from the red centre the coverage has dropped, as a Gaussian does
    side = px[H // 2, int(W / 2 - f * 0.1 + sigma_px)]
    assert 0.3 < side[3] < 0.8 and side[0] > 0.9
    assert px[2, 2, 3] < 0.02 and px[H - 3, W - 3, 3] < 0.02  # empty corners stay transparent
