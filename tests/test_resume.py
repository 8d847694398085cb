"""Checkpoints and --resume: a killed run continues where it stopped and ends as if never stopped."""

import json
import signal
import subprocess
import sys

import numpy as np

from conftest import ROOT
from genmojo_blender.core.bundle import open_bundle
from genmojo_blender.core.protocol import decode_event
from test_pipeline import backend, clip_args

ARGS = ["--preset", "cpu-tiny", "--device", "cpu", "--iters", "40", "--checkpoint_every", "10"]


def _kill_after(clip, out, name, step):
    """Start a run and SIGKILL it (no chance to clean up) once it reports ``step`` (every step is reported, so
    the kill does not wait on the progress rate limit)."""
    p = subprocess.Popen([sys.executable, "-m", "backend", *map(str, clip_args(clip, out, name)), *ARGS,
                          "--progress_every_s", "0"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in p.stdout:
            ev = decode_event(line)
            if ev.type == "progress" and ev.get("stage") == "fit" and ev.get("step") >= step:
                p.send_signal(signal.SIGKILL)
                break
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()


def test_killed_run_resumes_to_the_same_result(sample_clip_master, tmp_path):
    out = tmp_path / "out"
    code, events, err = backend(*clip_args(sample_clip_master, out, "straight"), *ARGS)
    assert code == 0, err

    _kill_after(sample_clip_master, out, "resumed", 23)
    info = json.loads((out / ".resumed.checkpoint" / "checkpoint.json").read_text())
    assert info["step"] == 20 and info["iterations"] == 40
    assert not (out / "resumed").exists()

    code, events, err = backend(*clip_args(sample_clip_master, out, "resumed"), *ARGS, "--resume")
    assert code == 0, err
    steps = [e.get("step") for e in events if e.type == "progress" and e.get("stage") == "fit"]
    assert not [e for e in events if e.type == "progress" and e.get("stage") == "objects"]  # stage 1 kept
    assert steps[0] == 21 and steps[-1] == 40  # continues after the checkpoint, same budget
    assert "resuming from the checkpoint at step 20" in err
    assert not (out / ".resumed.checkpoint").exists()  # removed once the result is complete

    a, b = open_bundle(out / "straight"), open_bundle(out / "resumed")
    assert b.manifest.run.iterations == 40
    for oa, ob in zip(a.manifest.objects, b.manifest.objects):
        fa, fb = a.load_frames(oa), b.load_frames(ob)
        for name in ("means", "quats", "log_scales", "colors", "opacities"):
            np.testing.assert_array_equal(getattr(fb, name), getattr(fa, name))  # bit-identical


def test_resume_refusals(sample_clip_master, tmp_path):
    out = tmp_path / "out"
    code, events, _ = backend(*clip_args(sample_clip_master, out, "x"), *ARGS, "--resume")
    assert code == 2 and "no checkpoint" in events[-1].get("error")

    _kill_after(sample_clip_master, out, "x", 12)
    code, events, _ = backend(*clip_args(sample_clip_master, out, "x"), *ARGS)
    assert code == 2 and "left a checkpoint" in events[-1].get("error") and "--resume" in events[-1].get("hint")

    other = [a if a != "40" else "50" for a in ARGS]
    code, events, _ = backend(*clip_args(sample_clip_master, out, "x"), *other, "--resume")
    assert code == 2 and "iterations" in events[-1].get("error")

    code, events, _ = backend(*clip_args(sample_clip_master, out, "x"), *ARGS, "--overwrite")
    assert code == 0 and not (out / ".x.checkpoint").exists()


def test_failed_checkpoint_write_does_not_end_the_run(sample_clip_master, tmp_path, monkeypatch):
    """A full disk while checkpointing is reported on stderr; the fit goes on and the result is written."""
    import io

    import torch

    from backend import pipeline
    from backend.config import get_preset, with_overrides
    from backend.progress import Reporter

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    log = io.StringIO()
    req = pipeline.RunRequest(data_dir=sample_clip_master / "JPEGImages", mask_dir=sample_clip_master / "Annotations",
                              out_dir=tmp_path, save_name="r", iterations=12)
    cfg = with_overrides(get_preset("cpu-tiny"), fit={"checkpoint_every": 5})
    path = pipeline.run(req, cfg, Reporter(pipeline.STAGES, out=io.StringIO(), log=log))
    assert open_bundle(path).manifest.run.iterations == 12
    # after each of the 3 objects of stage 1, then at steps 5 and 10 of the joint fit
    assert log.getvalue().count("could not save a checkpoint") == 5
    assert not (tmp_path / ".r.checkpoint").exists() or not any((tmp_path / ".r.checkpoint").iterdir())


def test_stop_in_stage_one_keeps_finished_objects(sample_clip_master, tmp_path):
    """Stopped while fitting the second object: the first is kept, and --resume starts at the second."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "backend", *map(str, clip_args(sample_clip_master, out, "s1")), *ARGS],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in p.stdout:
            ev = decode_event(line)
            if ev.type == "progress" and ev.get("stage") == "objects" and ev.get("step") > 60:
                p.send_signal(signal.SIGTERM)
                break
        rest = p.stdout.read()
        assert p.wait(timeout=30) == 130
    finally:
        if p.poll() is None:
            p.kill()
    last = decode_event(rest.strip().splitlines()[-1])
    assert "1 finished object" in last.get("error") and "--resume" in last.get("hint")

    code, events, err = backend(*clip_args(sample_clip_master, out, "s1"), *ARGS, "--resume")
    assert code == 0, err
    assert "stage 1 done for 1 of 3 objects" in err
    first = next(e for e in events if e.type == "progress" and e.get("stage") == "objects")
    assert first.get("step") > 60  # object 001 was not fitted again
