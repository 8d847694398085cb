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


def test_guidance_and_depth_settings_reach_the_backend(tmp_path):
    """The scene's guidance model/variant and depth settings become the exact backend flags."""
    model = tmp_path / "zero123 model"
    for part in ("unet/config.json", "vae/config.json", "image_encoder/config.json",
                 "clip_camera_projection/config.json", "scheduler/scheduler_config.json"):
        (model / part).parent.mkdir(parents=True, exist_ok=True)
        (model / part).write_text("{}")
    (tmp_path / "depth").mkdir()
    argv_file = tmp_path / "argv.json"
    out = run_bpy(_inputs(tmp_path) + f"""
    import json
    from pathlib import Path
    argv_file = Path({str(argv_file)!r})
    s.use_guidance = True
    s.guidance_model = {str(model) + '/'!r}       # the folder browser leaves a trailing slash
    s.guidance_variant = "stable-zero123"
    s.depth_dir = {str(tmp_path / 'depth')!r}
    s.depth_is_disparity = True
    s.overwrite = True
    s.overrides = "sds.compile=none; kernels=torch"
    runs = [sorted(bpy.ops.genmojo.run_backend())]
    argvs = [json.loads(argv_file.read_text())]
    s.overrides = ""
    s.guidance_model = "ashawkey/zero123-xl-diffusers"   # a hub id is passed as typed
    s.guidance_variant = "auto"
    s.depth_dir = ""
    s.depth_model = {str(tmp_path / 'depth')!r}
    Path({str(tmp_path / 'depth' / 'config.json')!r}).write_text("{{}}")
    Path({str(tmp_path / 'depth' / 'preprocessor_config.json')!r}).write_text("{{}}")
    runs.append(sorted(bpy.ops.genmojo.run_backend()))
    argvs.append(json.loads(argv_file.read_text()))
    s.use_guidance = False                               # guidance off: model and variant are not passed
    s.guidance_variant = "zero123-xl"
    runs.append(sorted(bpy.ops.genmojo.run_backend()))
    argvs.append(json.loads(argv_file.read_text()))
    emit(runs=runs, argvs=argvs)
    """, env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert out["runs"] == [["FINISHED"]] * 3
    head = ["--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"), "--save_name", "shot",
            "--out_dir", str(tmp_path / "out"), "--preset", "cpu-tiny", "--device", "auto"]
    tail = ["--fps", "24", "--overwrite"]
    assert out["argvs"][0] == head + ["--guidance_model", str(model), "--guidance_variant", "stable-zero123",
                                      "--depth_dir", str(tmp_path / "depth"), "--depth_is_disparity"] + tail + [
        "--set", "sds.compile=none", "--set", "kernels=torch"]  # the panel's config overrides, in order
    assert out["argvs"][1] == head + ["--guidance_model", "ashawkey/zero123-xl-diffusers",
                                      "--depth_model", str(tmp_path / "depth")] + tail
    assert out["argvs"][2] == head + ["--disable_guidance", "--depth_model", str(tmp_path / "depth")] + tail


def test_missing_model_and_depth_folders_are_named_before_a_run(tmp_path):
    argv_file = tmp_path / "argv.json"
    out = run_bpy(_inputs(tmp_path) + f"""
    s.use_guidance = True
    s.guidance_model = {str(tmp_path / 'no model')!r}
    s.depth_dir = {str(tmp_path / 'no depth')!r}
    s.depth_model = {str(tmp_path / 'no depth model')!r}
    s.overrides = "sds.compile"
    errors = []
    try:
        bpy.ops.genmojo.run_backend()
    except RuntimeError as e:
        errors.append(str(e))
    emit(errors=errors, error=state.error, exit_status=state.exit_status, running=state.running)
    """, env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file)))
    assert len(out["errors"]) == 1
    for text in (f"Guidance model folder not found: {tmp_path / 'no model'}",
                 f"Depth maps folder not found: {tmp_path / 'no depth'}",
                 f"Depth model folder not found: {tmp_path / 'no depth model'}",
                 "Give either a depth maps folder or a depth model, not both",
                 "Config override 'sds.compile' is not section.field=value"):
        assert text in out["error"] and text in out["errors"][0]
    assert out["exit_status"] == 2 and not out["running"]
    assert not argv_file.exists()  # the backend never started


def test_panels_show_guidance_model_only_with_guidance_and_flag_missing_folders(tmp_path):
    """Draw the panels into a recording layout (the bpy module has no window to draw in)."""
    out = run_bpy(_inputs(tmp_path) + f"""
    from types import SimpleNamespace
    from genmojo_blender.ui import panels

    class Layout:
        def __init__(self, log):
            self.log = log
            self.use_property_split = self.use_property_decorate = self.alert = self.active = False
            self.enabled = True
            self.scale_y = 1.0
        def _sub(self, *a, **k):
            return Layout(self.log)
        column = row = box = _sub
        def prop(self, data, name, **k):
            self.log.append(("prop", name, self.active if name == "depth_is_disparity" else None))
        def label(self, text="", **k):
            self.log.append(("label", text, None))
        def operator(self, *a, **k):
            return SimpleNamespace()
        def separator(self, *a, **k):
            pass

    def draw(cls):
        log = []
        ctx = SimpleNamespace(scene=bpy.context.scene, region=SimpleNamespace(width=4000), preferences=bpy.context.preferences,
                              window_manager=bpy.context.window_manager)
        cls.draw(SimpleNamespace(layout=Layout(log)), ctx)
        return log

    def props_of(log):
        return [n for kind, n, _ in log if kind == "prop"]

    def labels(log):
        return " | ".join(n for kind, n, _ in log if kind == "label")

    off = draw(panels.GENMOJO_PT_main)
    s.use_guidance = True
    on_default = draw(panels.GENMOJO_PT_main)
    s.guidance_model = {str(tmp_path / 'gone')!r}
    on_missing = draw(panels.GENMOJO_PT_main)
    opts = draw(panels.GENMOJO_PT_options)
    s.depth_dir = {str(tmp_path / 'no depth')!r}
    opts_missing = draw(panels.GENMOJO_PT_options)
    emit(off=props_of(off), on=props_of(on_default), on_labels=labels(on_default),
         missing_labels=labels(on_missing), opts=props_of(opts),
         disparity_active=[a for k, n, a in opts + opts_missing if n == "depth_is_disparity"],
         opts_missing=labels(opts_missing))
    """)
    assert "guidance_model" not in out["off"] and "guidance_variant" not in out["off"]
    assert out["on"][-3:] == ["use_guidance", "guidance_model", "guidance_variant"]
    assert "Default: the backend's Zero123-XL" in out["on_labels"]
    assert str(tmp_path / "gone") in out["missing_labels"] and "not found" in out["missing_labels"]
    for name in ("depth_dir", "depth_is_disparity", "depth_model"):
        assert name in out["opts"]
    assert out["disparity_active"] == [False, True]
    assert f"Depth maps folder not found: {tmp_path / 'no depth'}" in out["opts_missing"]
