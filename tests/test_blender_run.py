"""``genmojo.run_backend`` inside Blender, against the fake backend of test_core_backend_process.

Background mode exercises the blocking ``execute()`` path. The modal path needs a window, which the
bpy module does not have, so its building blocks (``session.start``/``update``/``request_cancel``/
``finish``, exactly what ``modal()`` calls on each timer tick) are driven by hand instead.
"""

from __future__ import annotations

import sys

import pytest

from test_blender_import import run_bpy
from test_core_backend_process import fake_env, write_fake_backend

pytestmark = pytest.mark.blender


def _inputs(tmp_path):
    for name in ("clip", "masks"):
        (tmp_path / name).mkdir(exist_ok=True)
    return f"""
    enable()
    prefs = bpy.context.preferences.addons["genmojo_blender"].preferences
    prefs.backend_python = {sys.executable!r}
    prefs.backend_path = {str(write_fake_backend(tmp_path / 'fake'))!r}
    s = bpy.context.scene.genmojo
    s.clip_path = {str(tmp_path / 'clip')!r}
    s.mask_dir = {str(tmp_path / 'masks')!r}
    s.output_dir = {str(tmp_path / 'out')!r}
    s.result_name = "shot"
    s.preset = "cpu-tiny"
    state = bpy.context.window_manager.genmojo_run
    """


def test_blocking_run_imports_the_result(tmp_path):
    out = run_bpy(_inputs(tmp_path) + """
    result = bpy.ops.genmojo.run_backend()
    emit(result=sorted(result), colls=[c.name for c in bpy.context.scene.collection.children],
         objects=sorted(o.name for o in bpy.data.objects), result_path=state.result_path,
         fraction=state.fraction, running=state.running, status=state.status, error=state.error,
         frames=[bpy.context.scene.frame_start, bpy.context.scene.frame_end])
    """, env=fake_env("ok", FAKE_FRAMES="3"))
    assert out["result"] == ["FINISHED"]
    assert out["colls"] == ["GenMOJO shot"]
    assert out["objects"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert out["result_path"] == str(tmp_path / "out" / "shot")
    assert out["fraction"] == 1.0 and not out["running"] and out["error"] == ""
    assert out["frames"] == [1, 3]


def test_backend_failure_is_reported_with_its_hint(tmp_path):
    out = run_bpy(_inputs(tmp_path) + """
    errors = []
    try:
        bpy.ops.genmojo.run_backend()
    except RuntimeError as e:
        errors.append(str(e))
    emit(errors=errors, error=state.error, hint=state.hint, exit_status=state.exit_status,
         colls=len(bpy.context.scene.collection.children), running=state.running)
    """, env=fake_env("fail"))
    assert len(out["errors"]) == 1
    assert "mask folder has no masks" in out["errors"][0] and "put one PNG" in out["errors"][0]
    assert out["error"] == "mask folder has no masks" and out["hint"] == "put one PNG per frame in it"
    assert out["exit_status"] == 2 and out["colls"] == 0 and not out["running"]


def test_backend_crash_shows_its_last_stderr_lines(tmp_path):
    out = run_bpy(_inputs(tmp_path) + """
    try:
        bpy.ops.genmojo.run_backend()
    except RuntimeError:
        pass
    emit(error=state.error, hint=state.hint, tail=state.log_tail, exit_status=state.exit_status)
    """, env=fake_env("crash"))
    assert "exited with code 1" in out["error"]
    assert "CUDA error: out of memory" in out["hint"]
    assert out["tail"].splitlines()[-1] == "RuntimeError: CUDA error: out of memory"
    assert out["exit_status"] == 1


def test_modal_building_blocks_progress_and_cancel(tmp_path):
    out = run_bpy(_inputs(tmp_path) + f"""
    import time
    from pathlib import Path
    from genmojo_blender.blender import session
    run = session.start(bpy.context)
    running_poll = [bpy.ops.genmojo.run_backend.poll(), bpy.ops.genmojo.cancel_backend.poll()]
    child_file = Path({str(tmp_path / 'child.pid')!r})
    for _ in range(1000):                  # timer ticks until the backend reports its first stage
        session.update(bpy.context, run)
        if state.stage:
            break
        time.sleep(0.01)
    seen_stage, seen_running = state.stage, state.running
    session.request_cancel(bpy.context)
    cancelling = state.cancelling
    for _ in range(1000):
        session.update(bpy.context, run)
        if run.outcome is not None:
            break
        time.sleep(0.01)
    fin = session.finish(bpy.context, run)
    emit(running_poll=running_poll, seen_stage=seen_stage, seen_running=seen_running, cancelling=cancelling,
         status=state.status, running=state.running, reports=fin.reports, ok=fin.ok,
         exit_status=state.exit_status, active=session.active() is not None,
         run_poll=bpy.ops.genmojo.run_backend.poll())
    """, env=fake_env("hang", FAKE_CHILD_PID_FILE=str(tmp_path / "child.pid")))
    assert out["running_poll"] == [False, True]
    assert out["seen_stage"] == "load" and out["seen_running"] and out["cancelling"]
    assert out["status"] == "Cancelled" and not out["running"] and not out["ok"]
    assert out["reports"] == [["WARNING", "GenMOJO run cancelled"]]
    assert out["exit_status"] == 130 and not out["active"] and out["run_poll"]


def test_check_backend_operator(tmp_path):
    out = run_bpy(_inputs(tmp_path) + """
    ok = sorted(bpy.ops.genmojo.check_backend())
    prefs.backend_path = ""
    import os
    os.environ["GENMOJO_BACKEND_MODULE"] = "no_such_backend_module"
    errors = []
    try:
        bpy.ops.genmojo.check_backend()
    except RuntimeError as e:
        errors.append(str(e))
    emit(ok=ok, errors=errors)
    """, env=fake_env("ok"))
    assert out["ok"] == ["FINISHED"]
    assert len(out["errors"]) == 1 and "not importable" in out["errors"][0]
