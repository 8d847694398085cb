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
    bpy.ops.genmojo.set_representation(representation="SPLATS", object_name="shot_object_002")
    ob2 = bpy.data.objects["shot_object_002"]
    ob2.hide_render = True
    mod = ob2.modifiers[0]
    size_key = next(k for k in mod.keys() if isinstance(mod[k], float))
    mod[size_key] = 3.0
    scene.frame_set(3)
    root_before = [list(r) for r in root.matrix_world]
    reports = []
    bpy.ops.genmojo.import_result(filepath={str(b)!r}, representation="POINTS")
    kept = dict(names=sorted(o.name for o in bpy.data.collections["GenMOJO shot"].objects),
                root=[list(r) for r in bpy.data.objects["shot_root"].matrix_world],
                hero_mats=[m.name for m in bpy.data.objects["hero"].data.materials],
                hero_id=bpy.data.objects["hero"]["genmojo_object_id"],
                ob2_render=bpy.data.objects["shot_object_002"].hide_render,
                ob2_rep=bpy.data.objects["shot_object_002"]["genmojo_representation"],
                ob2_size=bpy.data.objects["shot_object_002"].modifiers[0][size_key],
                frame=scene.frame_current, objects=len(bpy.data.objects))
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
    assert k["objects"] == 4  # nothing parked is left over
    assert r["names"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert r["mats"] == [] and r["ob2_rep"] == "POINTS" and r["frame"] == 1
    assert not np.allclose(r["root"], out["root_before"], atol=1e-3)
