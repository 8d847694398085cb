"""A stop after the fit (while baking, rendering previews, writing, or just before the swap) leaves the
previous result byte-identical and is reported as cancelled; a stop after the swap is a finished run."""

import io
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from backend.config import get_preset
from backend.errors import Cancelled
from backend.pipeline import RunRequest, run
from backend.progress import Reporter
from bundle_factory import make_bundle
from conftest import ROOT
from genmojo_blender.core.bundle import open_bundle
from genmojo_blender.core.protocol import decode_event
from test_bundle_write_safety import hidden, tree_digest

def staged(out):
    """Hidden folders other than the flow cache (which runs share on purpose)."""
    return [h for h in hidden(out) if h != ".genmojo-cache"]


STAGES = ["validate", "init", "objects", "fit", "bake", "write"]


class StopOn(Reporter):
    """Sets the stop flag when the run reaches ``when``: ("end", stage) or ("begin", stage)."""

    def __init__(self, when):
        super().__init__(STAGES, out=io.StringIO(), log=io.StringIO(), every_s=0)
        self.when, self.stop = when, False

    def begin(self, stage, **fields):
        super().begin(stage, **fields)
        self.stop |= self.when == ("begin", stage)

    def end(self, stage, **fields):
        super().end(stage, **fields)
        self.stop |= self.when == ("end", stage)


def request(clip, out):
    return RunRequest(data_dir=clip / "JPEGImages", mask_dir=clip / "Annotations", out_dir=out, save_name="shot",
                      device="cpu", overwrite=True, iterations=2)


def test_a_stop_at_every_point_after_the_fit_keeps_the_old_result(sample_clip_master, tmp_path, monkeypatch):
    out = tmp_path / "out"
    old = make_bundle(out, save_name="shot", frames=8, objects=3, gaussians=8)
    before = tree_digest(old)
    cfg = replace(get_preset("cpu-tiny"), method="skeleton")
    for when, message in [(("end", "fit"), "before baking"), (("begin", "bake"), "before rendering the previews"),
                          (("end", "bake"), "before writing the result"), (("begin", "write"), "before writing")]:
        rep = StopOn(when)
        with pytest.raises(Cancelled) as e:
            run(request(sample_clip_master, out), cfg, rep, should_stop=lambda rep=rep: rep.stop)
        assert message in str(e.value) and "is untouched" in str(e.value), when
        assert tree_digest(old) == before, f"a stop at {when} changed the old result"
        assert staged(out) == [], when

    # between two preview videos
    import backend.pipeline as pipeline

    rep = StopOn(None)
    real_view = pipeline.input_view

    def view_then_stop(*a, **k):
        out = real_view(*a, **k)
        rep.stop = True
        return out

    monkeypatch.setattr(pipeline, "input_view", view_then_stop)
    with pytest.raises(Cancelled, match="before rendering the rotating view"):
        run(request(sample_clip_master, out), cfg, rep, should_stop=lambda: rep.stop)
    monkeypatch.undo()
    assert tree_digest(old) == before and staged(out) == []

    # just before the swap: the staging folder holds the finished result, the stop still wins
    rep = StopOn(None)

    def before_swap():
        staged = [p for p in out.iterdir() if ".partial-" in p.name]
        return bool(staged) and (staged[0] / "manifest.json").is_file()

    with pytest.raises(Cancelled, match="before replacing the result"):
        run(request(sample_clip_master, out), cfg, rep, should_stop=before_swap)
    assert tree_digest(old) == before and staged(out) == []
    events = [decode_event(line) for line in rep.out.getvalue().splitlines()]
    assert not [e for e in events if e.type == "done"]


def test_sigterm_while_baking_is_cancelled_with_the_old_result_or_done_with_the_new(sample_clip_master, tmp_path):
    """Whenever the signal lands, the two outcomes are: cancelled and the old result byte-identical,
    or done and the new result in place. Never cancelled with a replaced result."""
    out = tmp_path / "out"
    old = make_bundle(out, save_name="shot", frames=8, objects=3, gaussians=8)
    before = tree_digest(old)
    clip = sample_clip_master
    p = subprocess.Popen([sys.executable, "-m", "backend", "--data_dir", clip / "JPEGImages", "--mask_dir",
                          clip / "Annotations", "--out_dir", out, "--save_name", "shot", "--overwrite",
                          "--preset", "cpu-tiny", "--method", "skeleton", "--device", "cpu", "--iters", "2"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    for line in p.stdout:
        events.append(decode_event(line))
        if events[-1].type == "stage" and events[-1].get("stage") == "bake":
            p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=600)
    p.stderr.close()
    last = events[-1]
    if code == 130:
        assert last.type == "failed" and last.get("kind") == "cancelled" and "is untouched" in last.get("error")
        assert tree_digest(old) == before
    else:
        assert code == 0 and last.type == "done"
        assert tree_digest(old) != before and open_bundle(old).manifest.run.optimizer == "skeleton"
    assert staged(out) == []


def test_a_run_starts_by_recovering_after_a_killed_one_and_refuses_beside_a_live_one(tmp_path):
    from backend.errors import InputError
    from backend.io.bundle_staging import host_tag

    out = tmp_path / "out"
    old = make_bundle(out, save_name="shot", frames=3, objects=1, gaussians=8)
    before = tree_digest(old)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    partial = out / f".shot.partial-{host_tag()}-{sleeper.pid}-abc"
    partial.mkdir()
    req = RunRequest(data_dir=tmp_path / "no-clip", mask_dir=tmp_path / "no-masks", out_dir=out, save_name="shot",
                     device="cpu", overwrite=True)
    try:
        with pytest.raises(InputError, match="another run may be writing 'shot'"):
            run(req, get_preset("cpu-tiny"), StopOn(None))
        assert partial.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    rep = StopOn(None)
    with pytest.raises(InputError, match="no-clip"):  # the dead run's folder goes first, then the input is checked
        run(req, get_preset("cpu-tiny"), rep)
    assert not partial.exists() and f"removed {partial}" in rep.log_stream.getvalue()
    assert tree_digest(old) == before
