"""The bundle write never loses the previous result: a stop, a full disk or a failed swap leave it
byte-identical and leave no hidden folder behind; a later run cleans up after one that was killed."""

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backend.io.bundle_writer as bw
from backend.errors import Cancelled, InputError
from backend.io import bundle_staging as staging
from bundle_factory import make_bundle
from genmojo_blender.core.bundle import open_bundle


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


@pytest.fixture
def old_result(tmp_path):
    out = tmp_path / "out"
    path = make_bundle(out, save_name="shot", frames=3, objects=2, gaussians=8, seed=1)
    return out, path, tree_digest(path)


class StopAfter:
    """A should_stop that turns true at its n-th call (0-based) and records what the staging folder
    held at every call."""

    def __init__(self, out: Path, n: int):
        self.out, self.n, self.calls, self.seen = out, n, 0, []

    def __call__(self) -> bool:
        partials = [p for p in self.out.iterdir() if ".partial-" in p.name]
        self.seen.append(sorted(str(q.relative_to(partials[0])) for q in partials[0].rglob("*")) if partials else None)
        self.calls += 1
        return self.calls - 1 >= self.n


def test_a_stop_at_any_check_before_the_swap_keeps_the_old_result(old_result):
    out, path, before = old_result
    n = 0
    while True:
        stop = StopAfter(out, n)
        try:
            make_bundle(out, save_name="shot", frames=3, objects=2, gaussians=8, seed=2, overwrite=True,
                        should_stop=stop)
        except Cancelled as e:
            assert "is untouched" in str(e) and str(path) in str(e)
            assert tree_digest(path) == before, f"stop at check {n} changed the old result"
            assert hidden(out) == [], f"stop at check {n} left {hidden(out)}"
            n += 1
            continue
        break
    # every check was tried, and the last one came when the new result was complete in its staging folder
    assert n == stop.calls >= 5
    assert "manifest.json" in stop.seen[-1] and "preview/input_view.mp4" in stop.seen[-1]
    assert tree_digest(path) != before and hidden(out) == []
    open_bundle(path)


def test_a_stop_before_a_first_write_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Cancelled, match="nothing was written"):
        make_bundle(out, save_name="fresh", frames=3, objects=1, gaussians=8, should_stop=StopAfter(out, 3))
    assert list(out.iterdir()) == []


def _fail_nth(real, n: int, counter: list):
    def wrapped(*a, **k):
        counter.append(1)
        if len(counter) == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)
    return wrapped


@pytest.mark.parametrize("where, n", [("savez", 1), ("savez", 2), ("savez", 3), ("ply", 2), ("preview", 1),
                                      ("manifest", 1)])
def test_a_full_disk_while_writing_keeps_the_old_result_and_no_partial(old_result, monkeypatch, where, n):
    out, path, before = old_result
    calls = []
    if where == "savez":
        monkeypatch.setattr(bw.np, "savez", _fail_nth(np.savez, n, calls))
    elif where == "ply":
        monkeypatch.setattr(bw, "write_canonical_ply", _fail_nth(bw.write_canonical_ply, n, calls))
    elif where == "preview":
        monkeypatch.setattr(bw, "write_preview", _fail_nth(bw.write_preview, n, calls))
    else:
        monkeypatch.setattr(bw.Path, "write_text", _fail_nth(Path.write_text, n, calls))
    with pytest.raises(OSError) as e:
        make_bundle(out, save_name="shot", frames=3, objects=2, gaussians=8, seed=2, overwrite=True)
    assert e.value.errno == errno.ENOSPC and len(calls) == n
    assert tree_digest(path) == before and hidden(out) == []


def test_a_failed_swap_puts_the_old_result_back(old_result, monkeypatch):
    out, path, before = old_result
    real = os.replace

    def replace(src, dst):
        if ".partial-" in str(src):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(bw.os, "replace", replace)
    with pytest.raises(OSError):
        make_bundle(out, save_name="shot", frames=3, objects=2, gaussians=8, seed=2, overwrite=True)
    assert tree_digest(path) == before and hidden(out) == []


def test_staging_folders_record_host_and_pid(tmp_path):
    assert staging.partial_prefix("shot") == f".shot.partial-{staging.host_tag()}-{os.getpid()}-"
    (tmp_path / f"{staging.partial_prefix('shot')}ab_12").mkdir()
    (tmp_path / ".shot.old-7").mkdir()
    (tmp_path / ".shot.partial-x.partial-h-1-abc").mkdir()  # not a staging folder of "shot"
    (tmp_path / ".shots.partial-h-1-abc").mkdir()
    found = staging.find_staging(tmp_path, "shot")
    assert [(f.kind, f.host, f.pid) for f in found] == [("old", None, 7),
                                                      ("partial", staging.host_tag(), os.getpid())]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_runs_partial_is_removed_and_logged(old_result):
    out, path, before = old_result
    stale = out / f".shot.partial-{staging.host_tag()}-{dead_pid()}-abc123"
    (stale / "objects").mkdir(parents=True)
    legacy = out / ".shot.partial-k2j4h5_x"
    legacy.mkdir()
    log = staging.recover_staging(out, "shot")
    assert not stale.exists() and not legacy.exists()
    assert len(log) == 2 and all("removed" in line for line in log)
    assert tree_digest(path) == before


def test_an_interrupted_swap_is_undone_at_the_next_start(old_result):
    out, path, before = old_result
    aside = out / f".shot.old-{staging.host_tag()}-{dead_pid()}"
    os.replace(path, aside)  # killed between moving the old result aside and moving the new one in
    log = staging.recover_staging(out, "shot")
    assert tree_digest(path) == before and hidden(out) == []
    assert len(log) == 1 and "restored" in log[0]


def test_a_finished_swap_leftover_is_removed(old_result):
    out, path, before = old_result
    aside = out / f".shot.old-{staging.host_tag()}-{dead_pid()}"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    log = staging.recover_staging(out, "shot")
    assert not aside.exists() and tree_digest(path) == before and "removed" in log[0]


@pytest.mark.parametrize("owner", ["live", "foreign"])
def test_a_live_or_foreign_partial_is_refused_before_anything_is_touched(old_result, owner):
    out, path, before = old_result
    stale = out / f".shot.partial-{staging.host_tag()}-{dead_pid()}-abc123"
    stale.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = staging.host_tag() if owner == "live" else "another-host"
        busy = out / f".shot.partial-{host}-{sleeper.pid}-zz9"
        busy.mkdir()
        with pytest.raises(InputError) as e:
            staging.recover_staging(out, "shot")
        assert str(busy) in str(e.value) and str(sleeper.pid) in str(e.value) and "delete" in e.value.hint
        assert busy.exists() and stale.exists() and tree_digest(path) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_partial_whose_pid_now_belongs_to_another_process_is_stale(old_result):
    out, path, before = old_result
    if staging.process_start(os.getpid()) is None:
        pytest.skip("this system does not tell when a process started")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reused = out / f".shot.partial-{staging.host_tag()}-{sleeper.pid}-re1"
        reused.mkdir()
        (reused / staging.OWNER_FILE).write_text('{"pid": %d, "start": "another-boot:123"}' % sleeper.pid)
        live = out / f".shot.partial-{staging.host_tag()}-{sleeper.pid}-li2"
        live.mkdir()
        (live / staging.OWNER_FILE).write_text('{"pid": %d, "start": "%s"}' % (sleeper.pid,
                                                                              staging.process_start(sleeper.pid)))
        with pytest.raises(InputError):
            staging.recover_staging(out, "shot")  # the one with the live writer's start refuses
        live.rename(out / "kept-aside")
        log = staging.recover_staging(out, "shot")
        assert not reused.exists() and len(log) == 1 and tree_digest(path) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_writer_record_is_not_published(tmp_path):
    path = make_bundle(tmp_path / "out", save_name="shot", frames=2, objects=1, gaussians=4, preview=False)
    assert not (path / staging.OWNER_FILE).exists()
