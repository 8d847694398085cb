"""The backend runner without Blender: argv, environment, checks, and a fake backend end to end.

The fake backend (written to a temporary folder by ``write_fake_backend``) accepts exactly the
backend's documented command line, prints protocol events on stdout and logs on stderr, and behaves
according to $FAKE_MODE: ok (writes a real bundle with tests/bundle_factory.py), fail, crash, noise,
hang (ignores SIGTERM and leaves a grandchild running), linger-done / linger (writes the bundle, with or
without its done event, then ignores SIGTERM until killed).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from genmojo_blender.core import backend_process as bp
from genmojo_blender.core.protocol import RunState, encode_event

ROOT = Path(__file__).resolve().parents[1]

FAKE_MODULE = "fake_genmojo_backend"

FAKE_BACKEND = r'''
"""A stand-in for ``python -m backend`` used by the extension's tests."""
import argparse, json, os, signal, subprocess, sys, time
from pathlib import Path

from genmojo_blender.core.protocol import encode_event


def emit(type_, **kw):
    print(encode_event(type_, **kw), flush=True)


ap = argparse.ArgumentParser()
ap.add_argument("--data_dir", required=True)
ap.add_argument("--mask_dir", required=True)
ap.add_argument("--save_name", required=True)
ap.add_argument("--out_dir", required=True)
ap.add_argument("--preset", choices=["cpu-tiny", "lite", "full"], default="lite")
ap.add_argument("--lite", action="store_true")
ap.add_argument("--disable_guidance", action="store_true")
ap.add_argument("--guidance_model")
ap.add_argument("--guidance_variant", choices=["auto", "zero123-xl", "stable-zero123"])
ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
ap.add_argument("--cam_path")
ap.add_argument("--bg_path")
ap.add_argument("--depth_dir")
ap.add_argument("--depth_is_disparity", action="store_true")
ap.add_argument("--depth_model")
ap.add_argument("--fps", type=float)
ap.add_argument("--overwrite", action="store_true")
ap.add_argument("--resume", action="store_true")
ap.add_argument("--set", action="append", default=[])
args = ap.parse_args()
if args.disable_guidance and (args.guidance_model is not None or args.guidance_variant is not None):
    print("genmojo: --disable_guidance conflicts with --guidance_model/--guidance_variant", file=sys.stderr)
    sys.exit(2)
mode = os.environ.get("FAKE_MODE", "ok")
if os.environ.get("FAKE_ARGV_FILE"):
    Path(os.environ["FAKE_ARGV_FILE"]).write_text(json.dumps(sys.argv[1:]))
print("fake backend starting", file=sys.stderr, flush=True)
stages = ["load", "optimize", "bake"]
emit("start", run_id="r1", save_name=args.save_name, out_dir=args.out_dir, stages=stages,
     device="cpu", preset=args.preset)

if mode == "fail":
    emit("failed", error="mask folder has no masks", kind="input", hint="put one PNG per frame in it")
    sys.exit(2)
if mode == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: CUDA error: out of memory", file=sys.stderr, flush=True)
    sys.exit(1)
if mode == "hang":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(os.environ["FAKE_CHILD_PID_FILE"]).write_text(str(child.pid))
    emit("stage", stage="load", index=0, total_stages=3, status="begin")
    while True:
        time.sleep(0.05)
if mode == "noise":
    print("some library printed this on stdout", flush=True)

for i, st in enumerate(stages):
    emit("stage", stage=st, index=i, total_stages=len(stages), status="begin")
    for k in (1, 2):
        emit("progress", stage=st, step=k, total=2, losses={"rgb": 0.5 / k}, elapsed_s=1.0,
             eta_s=float(10 - 3 * i - k))
    emit("stage", stage=st, index=i, total_stages=len(stages), status="end")

sys.path.insert(0, os.environ["FAKE_TESTS_DIR"])
from bundle_factory import make_bundle  # noqa: E402

bundle = make_bundle(Path(args.out_dir), save_name=args.save_name, frames=int(os.environ.get("FAKE_FRAMES", "4")),
                     objects=2, gaussians=30, preview=False, overwrite=args.overwrite)
if mode.startswith("linger"):  # the result is in place; then the process is slow to exit and ignores SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "linger-done":
        emit("done", bundle=str(bundle), elapsed_s=1.0)
    Path(os.environ["FAKE_READY_FILE"]).write_text("1")
    while True:
        time.sleep(0.05)
emit("done", bundle=str(bundle), elapsed_s=1.0)
'''


def write_fake_backend(folder: Path) -> Path:
    """Write the fake backend module into ``folder`` (to be put on PYTHONPATH); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{FAKE_MODULE}.py").write_text(FAKE_BACKEND)
    return folder


def fake_env(mode: str = "ok", **extra: str) -> dict[str, str]:
    """Environment for a run of the fake backend: repo and tests importable, mode selected."""
    env = dict(os.environ)
    env.update({
        "FAKE_MODE": mode,
        "FAKE_TESTS_DIR": str(ROOT / "tests"),
        bp.BACKEND_MODULE_ENV: FAKE_MODULE,
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    env.update(extra)
    return env


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Returns a function(mode, **env) that points this process's environment at the fake backend."""
    backend_dir = write_fake_backend(tmp_path / "fakebackend")

    def setup(mode="ok", **extra):
        for k, v in fake_env(mode, **extra).items():
            monkeypatch.setenv(k, v)
        return str(backend_dir)

    return setup


def make_request(tmp_path: Path, **kw) -> bp.RunRequest:
    clip = tmp_path / "clip"
    masks = tmp_path / "masks"
    clip.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    base = dict(data_dir=str(clip), mask_dir=str(masks), out_dir=str(tmp_path / "out"), save_name="shot")
    base.update(kw)
    return bp.RunRequest(**base)


# --------------------------------------------------------------------------------------------
# argv and environment


def test_argv_defaults_disable_guidance_and_keep_documented_order():
    req = bp.RunRequest(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s")
    argv = bp.build_argv("/py", req, module="backend")
    assert argv == ["/py", "-c", bp.BOOTSTRAP, "backend", "--data_dir", "/d", "--mask_dir", "/m", "--save_name", "s",
                    "--out_dir", "/o", "--preset", "lite", "--device", "auto", "--disable_guidance"]


def test_argv_with_every_option():
    req = bp.RunRequest(data_dir="/clip dir/a b", mask_dir="/m", out_dir="/o", save_name="s",
                        preset="full", device="cuda", guidance=True, cam_path="/c.npz",
                        bg_path="/bg.png", fps=29.97, overwrite=True, resume=True)
    argv = bp.build_argv("/venv/bin/python", req, module="backend")
    assert "--disable_guidance" not in argv
    assert argv[argv.index("--preset") + 1] == "full"
    assert argv[argv.index("--device") + 1] == "cuda"
    assert argv[argv.index("--cam_path") + 1] == "/c.npz"
    assert argv[argv.index("--bg_path") + 1] == "/bg.png"
    assert argv[argv.index("--fps") + 1] == "29.97"
    assert argv[-2:] == ["--overwrite", "--resume"]
    # paths with spaces stay single arguments: no shell is involved
    assert "/clip dir/a b" in argv
    assert all(isinstance(a, str) for a in argv)


def test_config_overrides_become_set_flags_in_order_and_malformed_ones_are_named():
    assert bp.split_overrides(" sds.compile=none;kernels=torch\n stage2.w_rigid=20000 ") == [
        "sds.compile=none", "kernels=torch", "stage2.w_rigid=20000"]
    req = bp.RunRequest(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s",
                        overrides=("sds.compile=none", "sds.stage2_render_sizes=[128,128,128]"))
    argv = bp.build_argv("/py", req, module="backend")
    assert argv[-4:] == ["--set", "sds.compile=none", "--set", "sds.stage2_render_sizes=[128,128,128]"]
    bad = bp.RunRequest(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s", overrides=("sds.compile",))
    assert "Config override 'sds.compile' is not section.field=value (e.g. sds.compile=none)" in \
        bp.validate_request(bad)
    problems = bp.check_overrides(["kernels=torch", "sds.compile", "a.b.c=1", "=3", "x=1"])
    assert problems == [f"Config override {o!r} is not section.field=value (e.g. sds.compile=none)"
                        for o in ("sds.compile", "a.b.c=1", "=3")]


def test_argv_omits_unset_optional_flags():
    req = bp.RunRequest(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s", fps=0.0)
    argv = bp.build_argv("/py", req, module="backend")
    for flag in ("--cam_path", "--bg_path", "--fps", "--overwrite", "--resume", "--guidance_model",
                 "--guidance_variant", "--depth_dir", "--depth_is_disparity", "--depth_model", "--set"):
        assert flag not in argv


def test_argv_guidance_model_and_variant_exact():
    base = dict(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s")
    head = ["/py", "-c", bp.BOOTSTRAP, "backend", "--data_dir", "/d", "--mask_dir", "/m", "--save_name", "s",
            "--out_dir", "/o", "--preset", "lite", "--device", "auto"]
    req = bp.RunRequest(**base, guidance=True, guidance_model="/models/zero 123", guidance_variant="stable-zero123")
    assert bp.build_argv("/py", req, module="backend") == head + [
        "--guidance_model", "/models/zero 123", "--guidance_variant", "stable-zero123"]
    # a hub id goes through unchanged; "auto" is the backend's default and is not passed
    req = bp.RunRequest(**base, guidance=True, guidance_model="ashawkey/zero123-xl-diffusers")
    assert bp.build_argv("/py", req, module="backend") == head + [
        "--guidance_model", "ashawkey/zero123-xl-diffusers"]
    # guidance on without a model: the backend's default model, no extra flags
    assert bp.build_argv("/py", bp.RunRequest(**base, guidance=True), module="backend") == head
    # guidance off: the model and variant are dropped (the backend refuses them with --disable_guidance)
    req = bp.RunRequest(**base, guidance=False, guidance_model="/models/z", guidance_variant="zero123-xl")
    assert bp.build_argv("/py", req, module="backend") == head + ["--disable_guidance"]


def test_argv_depth_options_exact():
    base = dict(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s", cam_path="/c.npz", fps=24.0)
    head = ["/py", "-c", bp.BOOTSTRAP, "backend", "--data_dir", "/d", "--mask_dir", "/m", "--save_name", "s",
            "--out_dir", "/o", "--preset", "lite", "--device", "auto", "--disable_guidance",
            "--cam_path", "/c.npz"]
    req = bp.RunRequest(**base, depth_dir="/depth maps", depth_is_disparity=True)
    assert bp.build_argv("/py", req, module="backend") == head + [
        "--depth_dir", "/depth maps", "--depth_is_disparity", "--fps", "24"]
    req = bp.RunRequest(**base, depth_dir="/depth")
    assert bp.build_argv("/py", req, module="backend") == head + ["--depth_dir", "/depth", "--fps", "24"]
    # the disparity switch means nothing without maps and is not passed
    req = bp.RunRequest(**base, depth_model="/models/depth-anything", depth_is_disparity=True)
    assert bp.build_argv("/py", req, module="backend") == head + [
        "--depth_model", "/models/depth-anything", "--fps", "24"]


def test_backend_module_override(monkeypatch):
    req = bp.RunRequest(data_dir="/d", mask_dir="/m", out_dir="/o", save_name="s")
    monkeypatch.delenv(bp.BACKEND_MODULE_ENV, raising=False)
    assert bp.build_argv("/py", req)[3] == "backend"
    monkeypatch.setenv(bp.BACKEND_MODULE_ENV, "other_backend")
    assert bp.build_argv("/py", req)[3] == "other_backend"


def test_env_prepends_backend_path_and_drops_blender_python_vars():
    base = {"PYTHONPATH": "/a", "PYTHONHOME": "/blender/python", "PATH": "/bin"}
    env = bp.build_env("/src", base)
    assert env["PYTHONPATH"].split(os.pathsep) == ["/src", "/a"]
    assert "PYTHONHOME" not in env
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"] == "/bin"
    assert "PYTHONPATH" not in bp.build_env("", {"PATH": "/bin"})


def test_check_python(tmp_path):
    assert "No backend Python" in bp.check_python("")
    assert "not found" in bp.check_python(str(tmp_path / "nope"))
    assert "folder" in bp.check_python(str(tmp_path))
    f = tmp_path / "python"
    f.write_text("")
    f.chmod(0o644)
    assert "not executable" in bp.check_python(str(f))
    assert bp.check_python(sys.executable) == ""


def test_validate_request(tmp_path):
    assert bp.validate_request(make_request(tmp_path)) == []
    problems = bp.validate_request(make_request(tmp_path, data_dir=str(tmp_path / "missing"),
                                                save_name="../escape", preset="huge",
                                                cam_path=str(tmp_path / "nocam.npz")))
    text = " | ".join(problems)
    assert "Clip not found" in text and "Result name" in text and "Unknown preset" in text
    assert "Camera file" in text
    (tmp_path / "out" / "shot").mkdir(parents=True)
    assert any("already exists" in p for p in bp.validate_request(make_request(tmp_path)))
    assert bp.validate_request(make_request(tmp_path, overwrite=True)) == []


def _guidance_folder(root: Path, skip: str = "") -> Path:
    for part in bp.GUIDANCE_MODEL_PARTS:
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        if part != skip:
            (root / part).write_text("{}")
    return root


def test_is_hub_id(tmp_path):
    assert bp.is_hub_id("ashawkey/zero123-xl-diffusers")
    assert bp.is_hub_id("stabilityai/stable-zero123")
    for spec in ("", "zero123", "/abs/folder", "a/b/c", "./x/y", "~/models/z"):
        assert not bp.is_hub_id(spec), spec
    # an existing folder of the owner/name form is a folder (the backend's rule)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not bp.is_hub_id("owner/name")
    finally:
        os.chdir(cwd)


def test_validate_guidance_and_depth_paths(tmp_path):
    missing = tmp_path / "no such model"
    # guidance off: the model field is ignored
    assert bp.validate_request(make_request(tmp_path, guidance_model=str(missing))) == []
    problems = bp.validate_request(make_request(tmp_path, guidance=True, guidance_model=str(missing)))
    assert problems == [f"Guidance model folder not found: {missing}"]
    incomplete = _guidance_folder(tmp_path / "z123", skip="vae/config.json")
    problems = bp.validate_request(make_request(tmp_path, guidance=True, guidance_model=str(incomplete)))
    assert problems == [f"Guidance model folder {incomplete} is not a Zero123 model in the diffusers layout "
                        "(missing vae/config.json)"]
    (incomplete / "vae" / "config.json").write_text("{}")
    for spec in (str(incomplete), "ashawkey/zero123-xl-diffusers", ""):
        assert bp.validate_request(make_request(tmp_path, guidance=True, guidance_model=spec)) == [], spec
    problems = bp.validate_request(make_request(tmp_path, guidance=True, guidance_variant="zero999"))
    assert len(problems) == 1 and "Unknown guidance variant 'zero999'" in problems[0]
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    assert bp.validate_request(make_request(tmp_path, guidance=True, guidance_model=str(a_file))) == [
        f"Guidance model is a file, not a folder: {a_file}"]

    # depth maps folder
    assert bp.validate_request(make_request(tmp_path, depth_dir=str(tmp_path / "nodepth"))) == [
        f"Depth maps folder not found: {tmp_path / 'nodepth'}"]
    assert bp.validate_request(make_request(tmp_path, depth_dir=str(a_file))) == [
        f"Depth maps path is a file, not a folder: {a_file}"]
    (tmp_path / "depth").mkdir()
    assert bp.validate_request(make_request(tmp_path, depth_dir=str(tmp_path / "depth"),
                                            depth_is_disparity=True)) == []
    # depth model folder
    dm = tmp_path / "depth-anything"
    assert bp.validate_request(make_request(tmp_path, depth_model=str(dm))) == [
        f"Depth model folder not found: {dm}"]
    dm.mkdir()
    (dm / "config.json").write_text("{}")
    assert bp.validate_request(make_request(tmp_path, depth_model=str(dm))) == [
        f"Depth model folder {dm} is not a transformers depth model saved with save_pretrained "
        "(missing preprocessor_config.json)"]
    (dm / "preprocessor_config.json").write_text("{}")
    assert bp.validate_request(make_request(tmp_path, depth_model=str(dm))) == []
    assert bp.validate_request(make_request(tmp_path, depth_model=str(dm), depth_dir=str(tmp_path / "depth"))) == [
        bp.DEPTH_BOTH_MESSAGE]


def test_format_duration_and_progress_line():
    assert bp.format_duration(None) == ""
    assert bp.format_duration(42) == "42 s"
    assert bp.format_duration(185) == "3 m 05 s"
    assert bp.format_duration(3720) == "1 h 02 m"
    st = RunState(stages=["load", "optimize"], stage="optimize", stage_index=1, step=5, total=10, eta_s=65)
    line = bp.describe_progress(st)
    assert "optimize (2/2)" in line and "step 5/10" in line and "75%" in line and "1 m 05 s" in line


# --------------------------------------------------------------------------------------------
# running the fake backend


def _pump_until_done(run: bp.BackendRun) -> list:
    events = []
    for _ in range(3000):  # bounded: the fake backend finishes in well under a second
        events += run.pump()
        if run.outcome is not None:
            return events
        time.sleep(0.01)
    run.process.kill()
    raise AssertionError("fake backend did not finish")


def test_done_path_decodes_events_and_reports_bundle(tmp_path, fake):
    path = fake("ok")
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path)
    events = _pump_until_done(run)
    types = [e.type for e in events]
    assert types[0] == "start" and types[-1] == "done"
    assert types.count("progress") == 6
    assert run.outcome.ok and run.outcome.exit_status() == 0
    assert Path(run.outcome.bundle) == tmp_path / "out" / "shot"
    assert (Path(run.outcome.bundle) / "manifest.json").is_file()
    assert run.state.fraction == 1.0
    assert any("fake backend starting" in line for line in run.process.stderr_tail())


def test_failed_path_carries_error_hint_and_kind(tmp_path, fake):
    path = fake("fail")
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path)
    _pump_until_done(run)
    o = run.outcome
    assert o.status == "failed" and o.kind == "input"
    assert o.error == "mask folder has no masks"
    assert o.hint == "put one PNG per frame in it"
    assert o.exit_code == 2 and o.exit_status() == bp.EXIT_BAD_INPUT
    assert "put one PNG" in o.message()


def test_crash_without_event_reports_stderr_tail(tmp_path, fake):
    path = fake("crash")
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path)
    _pump_until_done(run)
    o = run.outcome
    assert o.status == "crashed" and o.exit_code == 1 and o.exit_status() == bp.EXIT_INTERNAL
    assert "exited with code 1" in o.error
    assert "CUDA error: out of memory" in o.hint
    assert o.stderr_tail[-1] == "RuntimeError: CUDA error: out of memory"


def test_stray_stdout_does_not_break_the_run(tmp_path, fake):
    path = fake("noise")
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path)
    _pump_until_done(run)
    assert run.outcome.ok
    assert "[stdout] some library printed this on stdout" in run.process.stderr_tail(0)


def test_argv_reaches_the_backend_unchanged(tmp_path, fake):
    argv_file = tmp_path / "argv.json"
    path = fake("ok", FAKE_ARGV_FILE=str(argv_file))
    (tmp_path / "depth").mkdir()
    req = make_request(tmp_path, preset="cpu-tiny", device="cpu", fps=12.5,
                       data_dir=str(tmp_path / "clip with space"), guidance=True,
                       guidance_model="owner/model", guidance_variant="zero123-xl",
                       depth_dir=str(tmp_path / "depth"), depth_is_disparity=True)
    Path(req.data_dir).mkdir()
    run = bp.BackendRun.start(sys.executable, req, backend_path=path)
    _pump_until_done(run)
    assert run.outcome.ok
    got = json.loads(argv_file.read_text())
    assert got == bp.backend_arguments(bp.build_argv("x", req))


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or os.name == "nt", reason="needs /proc")
def test_cancel_kills_the_whole_process_group(tmp_path, fake):
    child_file = tmp_path / "child.pid"
    path = fake("hang", FAKE_CHILD_PID_FILE=str(child_file))
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path,
                              cancel_grace_s=0.5)
    for _ in range(1000):  # wait for the grandchild to exist
        run.pump()
        if child_file.exists() and child_file.read_text():
            break
        time.sleep(0.01)
    child = int(child_file.read_text())
    leader = run.process.pid
    assert _alive(child) and _alive(leader)
    assert os.getpgid(child) == leader  # the backend leads its own group, the child is in it

    rc = run.process.cancel()  # SIGTERM is ignored by the fake, so this must escalate to SIGKILL
    assert rc == -signal.SIGKILL
    for _ in range(200):  # the grandchild is reparented; give init a moment to reap it
        if not _alive(child):
            break
        time.sleep(0.01)
    assert not _alive(leader) and not _alive(child)
    _pump_until_done(run)
    assert run.outcome.status == "cancelled" and run.outcome.exit_status() == bp.EXIT_CANCELLED


def test_non_blocking_cancel_escalates_from_pump(tmp_path, fake):
    child_file = tmp_path / "child.pid"
    path = fake("hang", FAKE_CHILD_PID_FILE=str(child_file))
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path,
                              cancel_grace_s=0.2)
    for _ in range(1000):
        run.pump()
        if child_file.exists() and child_file.read_text():
            break
        time.sleep(0.01)
    run.cancel()
    assert run.process.cancel_requested
    _pump_until_done(run)
    assert run.outcome.status == "cancelled"
    assert run.process.returncode == -signal.SIGKILL


def test_run_blocking_reports_every_event(tmp_path, fake):
    path = fake("ok")
    run = bp.BackendRun.start(sys.executable, make_request(tmp_path), backend_path=path)
    seen, logs = [], []
    outcome = bp.run_blocking(run, on_event=lambda ev, st: seen.append((ev.type, st.stage)),
                              on_log=logs.append, poll_interval_s=0.01)
    assert outcome.ok
    # each callback sees the state as of its own event, even when events arrive in one batch
    expected = [("start", "")]
    for st in ("load", "optimize", "bake"):
        expected += [("stage", st), ("progress", st), ("progress", st), ("stage", st)]
    assert seen == expected + [("done", "bake")]
    assert "fake backend starting" in logs


def test_start_errors_are_clear(tmp_path):
    req = make_request(tmp_path)
    with pytest.raises(bp.BackendStartError, match="not found"):
        bp.BackendRun.start(str(tmp_path / "no-python"), req)
    with pytest.raises(bp.BackendStartError, match="source folder"):
        bp.BackendRun.start(sys.executable, req, backend_path=str(tmp_path / "nowhere"))
    script = tmp_path / "not-an-interpreter"
    script.write_bytes(b"\x00\x01garbage")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(bp.BackendStartError, match="Could not start"):
        bp.BackendRun.start(str(script), req)


def test_probe_backend(tmp_path, fake):
    path = fake("ok")
    ok = bp.probe_backend(sys.executable, path, module=FAKE_MODULE)
    assert ok.ok, ok.message
    assert ok.module_path.endswith(f"{FAKE_MODULE}.py") and ok.torch_found
    missing = bp.probe_backend(sys.executable, "", module="no_such_genmojo_module")
    assert not missing.ok and "not importable" in missing.message
    assert not bp.probe_backend("", "").ok


def test_encode_decode_contract_used_by_the_fake():
    # The fake prints with the shared encoder; a line from it must decode into the runner's events.
    line = encode_event("progress", stage="s", step=1, total=2, losses={}, eta_s=None)
    proc = bp.BackendProcess([sys.executable, "-c", f"print({line!r})"]).start()
    proc.wait(10)
    events = proc.poll()
    assert [e.type for e in events] == ["progress"] and events[0].get("eta_s") is None


def test_extension_offers_exactly_the_backends_presets_and_devices():
    """The extension cannot import the backend (torch), so its copies of these lists are checked here."""
    import subprocess
    import sys

    from backend.config import PRESETS
    from conftest import ROOT

    assert set(bp.PRESETS) == set(PRESETS)
    helptext = subprocess.run([sys.executable, "-m", "backend", "--help"], cwd=ROOT, capture_output=True,
                              text=True).stdout
    compact = "".join(helptext.split())
    assert "{" + ",".join(bp.DEVICES) + "}" in compact
    assert "--guidance_variant{" + ",".join(bp.GUIDANCE_VARIANTS) + "}" in compact
    for flag in ("--guidance_model", "--depth_dir", "--depth_is_disparity", "--depth_model"):
        assert flag in helptext


def test_extension_checks_the_model_folders_as_the_backend_does(tmp_path):
    """The folder checks mirror the backend's (which the extension cannot import): a folder passes
    the extension's check exactly when it passes the backend's."""
    from backend.errors import InputError
    from backend.priors import depth, zero123

    assert bp._HUB_ID.pattern == zero123._HUB_ID.pattern
    for skip in ("",) + bp.GUIDANCE_MODEL_PARTS:
        folder = _guidance_folder(tmp_path / f"g{len(skip)}{skip.replace('/', '_')}", skip=skip)
        assert (bp.check_guidance_model(str(folder)) == "") == (zero123._missing_parts(folder) == []), skip
    for skip in ("",) + bp.DEPTH_MODEL_PARTS:
        folder = tmp_path / f"d_{skip}"
        folder.mkdir()
        for part in bp.DEPTH_MODEL_PARTS:
            if part != skip:
                (folder / part).write_text("{}")
        try:
            depth.check_depth_model(folder)
            backend_ok = True
        except InputError:
            backend_ok = False
        assert (bp.check_depth_model(str(folder)) == "") == backend_ok, skip


def test_the_real_backend_parses_every_flag_the_extension_builds():
    """The extension's command line against the backend's own parser (not the fake above)."""
    from backend.cli import build_parser

    req = bp.RunRequest(data_dir="/clip", mask_dir="/m", out_dir="/o", save_name="s", preset="full", device="cuda",
                        guidance=True, cam_path="/c.npz", bg_path="/bg.png", fps=30.0, overwrite=True, resume=True,
                        guidance_model="owner/model", guidance_variant="stable-zero123", depth_dir="/depth",
                        depth_is_disparity=True, overrides=("sds.compile=none", "kernels=torch"))
    args = build_parser().parse_args(bp.backend_arguments(bp.build_argv("/py", req, module="backend")))
    assert (args.preset, args.device, args.guidance_model, args.guidance_variant) == (
        "full", "cuda", "owner/model", "stable-zero123")
    assert str(args.depth_dir) == "/depth" and args.depth_is_disparity and args.overwrite and args.resume
    assert args.set == ["sds.compile=none", "kernels=torch"]


# --------------------------------------------------------------------------------------------
# the working folder is never on the backend's import path

PLANTED = '''from pathlib import Path
Path({marker!r}).write_text(__file__)
raise SystemExit("planted module ran")
'''


def plant(folder: Path, names: list[str], marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))


def test_modules_planted_in_the_output_and_working_folders_never_run(tmp_path, fake, monkeypatch):
    """The fake backend imports plyfile (through bundle_factory and the bundle writer), so a plyfile.py in
    the output folder or in the caller's working folder would run if either were on its import path."""
    path = fake("ok")
    marker = tmp_path / "planted-ran"
    names = ["plyfile", FAKE_MODULE, "runpy", "backend", "numpy"]
    req = make_request(tmp_path)
    plant(Path(req.out_dir), names, marker)
    plant(tmp_path / "cwd", names, marker)
    monkeypatch.chdir(tmp_path / "cwd")
    run = bp.BackendRun.start(sys.executable, req, backend_path=path)
    workdir = Path(run.process.cwd)
    assert workdir.is_dir() and list(workdir.iterdir()) == []  # its own empty folder
    _pump_until_done(run)
    assert run.outcome.ok, run.outcome.message()
    assert not marker.exists(), marker.read_text()
    assert not workdir.exists()  # removed once the process has gone


def test_relative_paths_reach_the_backend_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    req = bp.absolute_request(bp.RunRequest(data_dir="clip", mask_dir="./m", out_dir="out", save_name="s",
                                            guidance_model="owner/model", depth_dir="", cam_path="cams/c.npz"))
    assert (req.data_dir, req.mask_dir, req.out_dir, req.cam_path) == (
        str(tmp_path / "clip"), str(tmp_path / "m"), str(tmp_path / "out"), str(tmp_path / "cams" / "c.npz"))
    assert req.guidance_model == "owner/model" and req.depth_dir == "" and req.save_name == "s"


def test_the_real_backend_ignores_a_planted_backend_and_plyfile(tmp_path, monkeypatch):
    """The real backend (torch and all) started as Blender starts it, with planted modules in its output
    folder and the caller's folder: it runs and refuses the missing clip itself."""
    monkeypatch.delenv(bp.BACKEND_MODULE_ENV, raising=False)
    marker = tmp_path / "planted-ran"
    req = bp.RunRequest(data_dir=str(tmp_path / "no-clip"), mask_dir=str(tmp_path / "no-masks"),
                        out_dir=str(tmp_path / "out"), save_name="shot", preset="cpu-tiny", device="cpu")
    plant(Path(req.out_dir), ["plyfile", "backend", "torch", "runpy"], marker)
    plant(tmp_path / "cwd", ["plyfile", "backend", "torch", "runpy"], marker)
    monkeypatch.chdir(tmp_path / "cwd")
    run = bp.BackendRun.start(sys.executable, req, backend_path=str(ROOT), module="backend")
    outcome = bp.run_blocking(run, poll_interval_s=0.05)
    assert not marker.exists(), marker.read_text()
    assert outcome.status == "failed" and outcome.kind == "input" and "no-clip" in outcome.error, outcome.message()


def test_probe_does_not_find_a_module_planted_in_the_working_folder(tmp_path, monkeypatch):
    marker = tmp_path / "planted-ran"
    plant(tmp_path / "cwd", ["genmojo_planted_only"], marker)
    monkeypatch.chdir(tmp_path / "cwd")
    probe = bp.probe_backend(sys.executable, "", module="genmojo_planted_only")
    assert not probe.ok and "not importable" in probe.message


# --------------------------------------------------------------------------------------------
# cancel: the outcome says what happened to the result


def _wait_for(path: Path, run: bp.BackendRun) -> None:
    for _ in range(3000):
        run.pump()
        if path.exists():
            return
        time.sleep(0.01)
    run.process.kill()
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("mode", ["linger-done", "linger"])
def test_a_cancel_after_the_result_was_replaced_is_reported_done(tmp_path, fake, mode):
    """Killed after the swap, with or without its done event: the new result is there, so the run is done."""
    ready = tmp_path / "ready"
    path = fake(mode, FAKE_READY_FILE=str(ready))
    req = make_request(tmp_path, overwrite=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from bundle_factory import make_bundle
    old = make_bundle(Path(req.out_dir), save_name="shot", frames=4, objects=1, gaussians=5, preview=False)
    run = bp.BackendRun.start(sys.executable, req, backend_path=path, cancel_grace_s=0.3)
    _wait_for(ready, run)
    assert run.process.cancel() == -signal.SIGKILL
    _pump_until_done(run)
    assert run.outcome.status == "done", run.outcome
    assert Path(run.outcome.bundle) == old and len(json.loads((old / "manifest.json").read_text())["objects"]) == 2


def test_a_cancel_that_leaves_the_old_result_is_reported_cancelled(tmp_path, fake):
    child_file = tmp_path / "child.pid"
    path = fake("hang", FAKE_CHILD_PID_FILE=str(child_file))
    req = make_request(tmp_path, overwrite=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from bundle_factory import make_bundle
    make_bundle(Path(req.out_dir), save_name="shot", frames=4, objects=1, gaussians=5, preview=False)
    run = bp.BackendRun.start(sys.executable, req, backend_path=path, cancel_grace_s=0.3)
    _wait_for(child_file, run)
    run.process.cancel()
    _pump_until_done(run)
    assert run.outcome.status == "cancelled"


def test_the_logged_command_is_the_one_a_person_would_type():
    req = bp.RunRequest(data_dir="/my clips/a", mask_dir="/m", out_dir="/o", save_name="s", preset="lite")
    argv = bp.build_argv("/py", req)
    shown = bp.display_command(argv)
    assert shown.startswith("/py -m backend --data_dir '/my clips/a' --mask_dir /m")
    assert bp.BOOTSTRAP not in shown and shlex.split(shown)[3:] == bp.backend_arguments(argv)
