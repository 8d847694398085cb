"""Issue #22: the Blender side an artist lives in. Export buttons that need a result, a picked frame
read as its sequence, re-imports that keep the artist's edits, a saved .blend's Result panel,
object names, splat bounces in Cycles and the default preset."""

from __future__ import annotations

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
