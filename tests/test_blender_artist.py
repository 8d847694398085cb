"""Issue #22: the Blender side an artist lives in. Export buttons that need a result, a picked frame
read as its sequence, re-imports that keep the artist's edits, a saved .blend's Result panel,
object names, splat bounces in Cycles and the default preset."""

from __future__ import annotations

import numpy as np
import pytest

from bundle_factory import make_bundle
from test_blender_import import run_bpy

pytestmark = pytest.mark.blender


def test_export_buttons_wait_for_an_imported_result(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=2, preview=False)
    out = run_bpy(f"""
    enable()
    before = [bpy.ops.genmojo.export_glb.poll(), bpy.ops.genmojo.export_fbx.poll()]
    errors = []
    try:
        bpy.ops.genmojo.export_glb(filepath={str(tmp_path / 'x.glb')!r})
    except RuntimeError as e:
        errors.append(str(e))
    bpy.ops.genmojo.import_result(filepath={str(b)!r})
    after = [bpy.ops.genmojo.export_glb.poll(), bpy.ops.genmojo.export_fbx.poll()]
    emit(before=before, after=after, errors=errors)
    """)
    assert out["before"] == [False, False] and out["after"] == [True, True]
    assert len(out["errors"]) == 1 and "Import a GenMOJO result first" in out["errors"][0]
    assert not (tmp_path / "x.glb").exists()


def test_a_picked_frame_file_runs_its_folders_sequence(tmp_path):
    frames = tmp_path / "JPEGImages"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i:05d}.jpg").write_bytes(b"x")
    movie = tmp_path / "shot.mp4"
    movie.write_bytes(b"x")
    out = run_bpy(f"""
    enable()
    from genmojo_blender import props
    s = bpy.context.scene.genmojo
    s.output_dir = {str(tmp_path / 'out')!r}
    s.fps = 25
    s.clip_path = {str(frames / '00000.jpg')!r}
    seq = props.make_request(s)
    s.clip_path = {str(movie)!r}
    mov = props.make_request(s)
    emit(seq=[seq.data_dir, seq.fps], mov=[mov.data_dir, mov.fps])
    """)
    assert out["seq"] == [str(frames), 25.0]  # the folder, with the sequence's frame rate
    assert out["mov"] == [str(movie), 0.0]


def test_reimport_keeps_the_artists_edits_and_reset_drops_them(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=4, preview=False)
    out = run_bpy(f"""
    enable()
    from mathutils import Matrix
    scene = bpy.context.scene
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="POINTS")
    root = bpy.data.objects["shot_root"]
    root.location = (1.0, 2.0, 3.0)
    root.rotation_euler[2] = 0.5
    ob1, ob2 = bpy.data.objects["shot_object_001"], bpy.data.objects["shot_object_002"]
    ob1.name = "hero"
    mat = bpy.data.materials.new("artist look")
    ob1.data.materials.append(mat)
    bpy.data.objects["shot_object_002"].hide_select = True  # a representation switch keeps it
    bpy.ops.genmojo.set_representation(representation="SPLATS", object_name="shot_object_002")
    ob2 = bpy.data.objects["shot_object_002"]
    switch_kept_select = ob2.hide_select
    ob2.hide_render = True
    mod = ob2.modifiers[0]
    size_key = next(k for k in mod.keys() if isinstance(mod[k], float))
    mod[size_key] = 3.0
    scene.frame_set(3)
    coll = bpy.data.collections["GenMOJO shot"]
    shots = bpy.data.collections.new("Shots")
    scene.collection.children.link(shots)
    shots.children.link(coll)
    scene.collection.children.unlink(coll)
    coll.hide_render = True
    bpy.context.view_layer.layer_collection.children["Shots"].children["GenMOJO shot"].hide_viewport = True
    root_before = [list(r) for r in root.matrix_world]
    reports = []
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="POINTS")
    kept = dict(names=sorted(o.name for o in bpy.data.collections["GenMOJO shot"].objects),
                root=[list(r) for r in bpy.data.objects["shot_root"].matrix_world],
                hero_mats=[m.name for m in bpy.data.objects["hero"].data.materials],
                hero_id=bpy.data.objects["hero"]["genmojo_object_id"],
                ob2_render=bpy.data.objects["shot_object_002"].hide_render,
                ob2_rep=bpy.data.objects["shot_object_002"]["genmojo_representation"],
                ob2_select=bpy.data.objects["shot_object_002"].hide_select, switch_kept_select=switch_kept_select,
                ob2_size=bpy.data.objects["shot_object_002"].modifiers[0][size_key],
                frame=scene.frame_current, objects=len(bpy.data.objects),
                coll=[c.name for c in bpy.data.collections["Shots"].children],
                top=[c.name for c in scene.collection.children],
                coll_render=bpy.data.collections["GenMOJO shot"].hide_render,
                layer_hidden=bpy.context.view_layer.layer_collection.children["Shots"]
                .children["GenMOJO shot"].hide_viewport)
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="POINTS", keep_edits=False)
    reset = dict(names=sorted(o.name for o in bpy.data.collections["GenMOJO shot"].objects),
                 root=[list(r) for r in bpy.data.objects["shot_root"].matrix_world],
                 mats=[m.name for m in bpy.data.objects["shot_object_001"].data.materials],
                 ob2_rep=bpy.data.objects["shot_object_002"]["genmojo_representation"],
                 frame=scene.frame_current)
    emit(kept=kept, reset=reset, root_before=root_before)
    """)
    k, r = out["kept"], out["reset"]
    assert k["names"] == ["hero", "shot_camera", "shot_object_002", "shot_root"]
    assert k["hero_id"] == "001" and k["hero_mats"] == ["artist look"]
    assert np.allclose(k["root"], out["root_before"], atol=1e-6)
    assert k["ob2_render"] is True and k["ob2_rep"] == "SPLATS" and k["ob2_size"] == 3.0 and k["frame"] == 3
    assert k["switch_kept_select"] is True and k["ob2_select"] is True
    assert k["objects"] == 4  # nothing parked is left over
    assert k["coll"] == ["GenMOJO shot"] and k["top"] == ["Shots"]
    assert k["coll_render"] is True and k["layer_hidden"] is True
    assert r["names"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert r["mats"] == [] and r["ob2_rep"] == "POINTS" and r["frame"] == 1
    assert not np.allclose(r["root"], out["root_before"], atol=1e-3)


def test_a_reopened_file_lists_its_results_and_their_controls_work(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=3, preview=False)
    blend, glb = tmp_path / "scene.blend", tmp_path / "named.glb"
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import result_store, session
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="SPLATS", surface_resolution=24)
    bpy.data.objects["shot_object_001"].name = "hero"  # what the panel's name field does
    bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})
    bpy.ops.wm.read_factory_settings(use_empty=True)
    enable()
    empty = result_store.rows(bpy.context.scene)
    bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
    scene = bpy.context.scene
    rows = result_store.rows(scene)
    entry, objects = rows[0]
    listed = dict(n=len(rows), bundle=entry.bundle_root, coll=entry.collection.name, rep=entry.representation,
                  res=entry.surface_resolution, objects=[o.name for o in objects])
    bpy.ops.genmojo.set_representation(representation="MESH", object_name="hero")
    switched = bpy.data.objects["hero"]["genmojo_representation"]
    fin = session.import_into_scene(bpy.context, entry.bundle_root, representation=entry.representation,
                                    surface_resolution=entry.surface_resolution)
    bpy.ops.genmojo.export_glb(filepath={str(glb)!r})
    emit(empty=len(empty), listed=listed, switched=switched, reports=fin.reports,
         after=[o.name for o in result_store.rows(scene)[0][1]],
         hero_rep=bpy.data.objects["hero"]["genmojo_representation"])
    """)
    import json
    import struct

    assert out["empty"] == 0
    listed = out["listed"]
    assert listed["n"] == 1 and listed["bundle"] == str(b.resolve()) and listed["coll"] == "GenMOJO shot"
    assert (listed["rep"], listed["res"]) == ("SPLATS", 24)
    assert listed["objects"] == ["hero", "shot_object_002"]
    assert out["switched"] == "MESH" and out["hero_rep"] == "MESH"  # kept over the entry's SPLATS
    assert out["after"] == ["hero", "shot_object_002"]
    kept = [m for level, m in out["reports"] if m.startswith("Kept from the previous import")]
    assert len(kept) == 1 and "object names (hero)" in kept[0]
    data = glb.read_bytes()
    n = struct.unpack_from("<I", data, 12)[0]
    nodes = [nd.get("name") for nd in json.loads(data[20:20 + n])["nodes"]]
    assert "hero" in nodes and "shot_object_001" not in nodes


def test_splats_raise_cycles_transparent_bounces_from_the_data_and_keep_a_higher_value(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=3, gaussians=400, preview=False)
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import importer, session
    from genmojo_blender.core import import_plan as ip
    scene = bpy.context.scene
    default = scene.cycles.transparent_max_bounces
    expected = importer.splat_bounces(ip.plan_import({str(b)!r}), ["001", "002"])
    fin = session.import_into_scene(bpy.context, {str(b)!r}, representation="SPLATS")
    got = scene.cycles.transparent_max_bounces
    scene.cycles.transparent_max_bounces = 900
    session.import_into_scene(bpy.context, {str(b)!r}, representation="SPLATS")
    high = scene.cycles.transparent_max_bounces
    scene.cycles.transparent_max_bounces = 8
    session.import_into_scene(bpy.context, {str(b)!r}, representation="POINTS", keep_edits=False)
    points = scene.cycles.transparent_max_bounces
    bpy.ops.genmojo.set_representation(representation="SPLATS", object_name="shot_object_001")
    switched = scene.cycles.transparent_max_bounces
    emit(default=default, expected=expected, got=got, high=high, points=points, switched=switched,
         reports=[m for _, m in fin.reports])
    """)
    assert out["default"] == 8
    assert out["got"] == out["expected"] > 8  # 400+ Gaussians in a small blob overlap far more than 4 deep
    assert any(m.startswith(f"Cycles transparent bounces raised from 8 to {out['got']}") for m in out["reports"])
    assert out["high"] == 900 and out["points"] == 8
    assert 8 < out["switched"] <= out["expected"]  # one object's splats alone


def test_the_default_preset_follows_the_backends_machine(tmp_path):
    from test_blender_run import _inputs
    from test_core_backend_process import fake_env

    argv_file = tmp_path / "argv.json"
    out = run_bpy(_inputs(tmp_path) + f"""
    import json
    from pathlib import Path
    from genmojo_blender import props
    fresh = props.GENMOJO_PG_settings.bl_rna.properties["preset"].default
    numbers = {{i.identifier: i.value for i in bpy.context.scene.genmojo.bl_rna.properties["preset"].enum_items}}
    s.preset = "auto"
    runs = [sorted(bpy.ops.genmojo.run_backend())]
    argvs = [json.loads(Path({str(argv_file)!r}).read_text())]
    note = state.preset_note
    s.preset, s.overwrite = "full", True  # an explicit choice is passed as it is
    runs.append(sorted(bpy.ops.genmojo.run_backend()))
    argvs.append(json.loads(Path({str(argv_file)!r}).read_text()))
    emit(fresh=fresh, numbers=numbers, runs=runs, presets=[a[a.index("--preset") + 1] for a in argvs], note=note)
    """, env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert out["fresh"] == "auto"
    # files saved before Auto existed store cpu-tiny/lite/full as 0/1/2: they must read back the same
    assert out["numbers"] == {"auto": 3, "cpu-tiny": 0, "lite": 1, "full": 2}
    assert out["runs"] == [["FINISHED"]] * 2
    assert out["presets"] == ["cpu-tiny", "full"]  # this machine's torch has no CUDA
    assert out["note"].startswith("Preset Auto: cpu-tiny (the backend's PyTorch") and "without CUDA" in out["note"]


def test_fbx_round_trip_with_default_import_settings_keeps_frames_and_mesh_colours(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=4, gaussians=60, preview=False)
    fbx = tmp_path / "shot.fbx"
    out = run_bpy(f"""
    enable()
    from genmojo_blender.blender import export
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="POINTS",
                                  object_representations="001=MESH", surface_resolution=16)
    scene = bpy.context.scene
    ob = bpy.data.objects["shot_object_001"]
    def world(ob):
        dg = bpy.context.evaluated_depsgraph_get()
        me = ob.evaluated_get(dg).to_mesh()
        co = np.empty(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        M = np.array(ob.matrix_world)
        ob.evaluated_get(dg).to_mesh_clear()
        return (co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]).tolist()
    def frames(ob):
        out = []
        for f in range(1, 5):
            scene.frame_set(f)
            out.append(world(ob))
        return out
    def keys():
        act = ob.data.shape_keys.animation_data.action
        fc = act.layers[0].strips[0].channelbags[0].fcurves[0]
        co = np.empty(2 * len(fc.keyframe_points))
        fc.keyframe_points.foreach_get("co", co)
        return co.tolist()
    ref = frames(ob)
    col = ob.data.color_attributes["Color"]
    ref_col = np.empty(len(ob.data.vertices) * 4, np.float32)
    col.data.foreach_get("color", ref_col)
    keys_before, range_before = keys(), (scene.frame_start, scene.frame_end)
    warnings = []
    export.export_fbx({str(fbx)!r}, warnings=warnings)
    kept = dict(keys=keys() == keys_before, range=(scene.frame_start, scene.frame_end) == range_before)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.frame_start, scene.frame_end = 12, 1, 4
    bpy.ops.import_scene.fbx(filepath={str(fbx)!r})  # default settings
    got_ob = bpy.data.objects["shot_object_001"]
    got = frames(got_ob)
    me = got_ob.data
    cattr = me.color_attributes[0]
    corner = np.empty(len(me.loops) * 4, np.float32)
    cattr.data.foreach_get("color", corner)
    loop_vert = np.empty(len(me.loops), np.int64)
    me.loops.foreach_get("vertex_index", loop_vert)
    emit(ref=ref, got=got, warnings=warnings, kept=kept, domain=cattr.domain,
         col_err=float(np.abs(corner.reshape(-1, 4)[:, :3] - ref_col.reshape(-1, 4)[loop_vert, :3]).max()))
    """)
    ref, got = np.array(out["ref"]), np.array(out["got"])
    assert ref.shape == got.shape
    assert np.abs(ref - got).max() < 1e-3  # every frame where it was, not one late
    assert np.abs(ref[1] - ref[0]).max() > 0.05  # the frames differ, so a shift would show
    assert out["kept"] == {"keys": True, "range": True}  # the scene's keys are back where they were
    assert out["domain"] == "CORNER" and out["col_err"] < 0.01  # 8-bit sRGB in the file
    assert len(out["warnings"]) == 1 and "point colours of shot_object_002" in out["warnings"][0]


def test_the_result_panel_of_a_reopened_file_draws_its_per_object_controls(tmp_path):
    """Draw the Result panel into a recording layout (the bpy module has no window to draw in)."""
    b = make_bundle(tmp_path, save_name="shot", frames=2, preview=False)
    blend = tmp_path / "scene.blend"
    out = run_bpy(f"""
    enable()
    from types import SimpleNamespace
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="SPLATS", load_plate=False)
    bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})
    bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
    from genmojo_blender.ui import panels

    class Layout:
        def __init__(self, log):
            self.log = log
            self.use_property_split = self.use_property_decorate = self.alert = self.active = False
            self.enabled, self.scale_y, self.operator_context = True, 1.0, "INVOKE_DEFAULT"
        def _sub(self, *a, **k):
            return Layout(self.log)
        column = row = box = _sub
        def prop(self, data, name, **k):
            self.log.append(("prop", getattr(data, "name", ""), name))
        def label(self, text="", **k):
            self.log.append(("label", text, None))
        def operator(self, idname, **k):
            op = SimpleNamespace(idname=idname, context=self.operator_context, **k)
            self.log.append(("op", idname, op))
            return op
        def separator(self, *a, **k):
            pass

    log = []
    ctx = SimpleNamespace(scene=bpy.context.scene, region=SimpleNamespace(width=4000),
                          preferences=bpy.context.preferences, window_manager=bpy.context.window_manager)
    panels.GENMOJO_PT_result.draw(SimpleNamespace(layout=Layout(log)), ctx)
    reimport = [op for kind, name, op in log if kind == "op" and name == "genmojo.import_result"
                and getattr(op, "filepath", "")]
    emit(renames=[n for kind, n, p in log if kind == "prop" and p == "name"],
         rep_buttons=sorted({{op.object_name for kind, name, op in log
                             if kind == "op" and name == "genmojo.set_representation"}}),
         pressed=sorted(op.representation for kind, name, op in log
                        if kind == "op" and name == "genmojo.set_representation" and op.depress),
         reimport=[(op.filepath, op.representation, op.load_plate, op.keep_edits, op.context) for op in reimport],
         labels=[n for kind, n, _ in log if kind == "label"])
    """)
    assert out["renames"] == ["shot_object_001", "shot_object_002"]
    assert out["rep_buttons"] == ["shot_object_001", "shot_object_002"] and out["pressed"] == ["SPLATS", "SPLATS"]
    assert out["reimport"] == [[str(b.resolve()), "SPLATS", False, True, "EXEC_DEFAULT"]]
    assert "GenMOJO shot" in out["labels"]
