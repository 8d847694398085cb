"""scripts/gpu_session.sh: a groups file it cannot run is refused before any set-up, naming the line and the fix.

The runs themselves need the GPU machine (docs/results.md has what they measured); what the CPU can check is
that every mistake in the file is caught before the first call spends device time on it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_session.sh"


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """One bench folder holding the clips 'a' and 'b' (only their layout is looked at)."""
    for clip in ("a", "b"):
        (tmp_path / "bench" / clip / "JPEGImages").mkdir(parents=True)
        (tmp_path / "bench" / clip / "Annotations").mkdir()
    return tmp_path / "bench"


def _run(tmp_path: Path, bench: Path, text: str | None, verb: str = "start", *extra: str, **env_extra: str):
    groups = tmp_path / "groups.txt"
    if text is not None:
        groups.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "BENCH_DIRS": str(bench), "HOME": str(tmp_path),
           "GPU_SESSION_DIR": str(tmp_path / "results"), **env_extra}
    return subprocess.run(["bash", str(SCRIPT), verb, str(groups), *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("text, words", [
    (None, "no such groups file"),
    ("# only a comment\n\n", "holds no group"),
    ("base\n", "line 1: group 'base' names no clips"),
    ("base a\nbad/name b\n", "line 2: group name 'bad/name'"),
    ("base a\nbase b --seed 1\n", "line 2: group 'base' is named twice"),
    ("base a\nmirror a,c --set stage1.back_prior=mirror\n", "line 2: clip 'c' is in none of the bench folders"),
])
def test_a_groups_file_it_cannot_run_is_refused_before_any_work(tmp_path, bench, text, words):
    r = _run(tmp_path, bench, text)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr
    assert "nvidia-smi" not in r.stderr and "gsplat" not in r.stdout  # nothing was set up
    assert not (tmp_path / "src").exists()


def test_usage_and_seconds_are_checked(tmp_path, bench):
    r = _run(tmp_path, bench, "base a\n", "begin")
    assert r.returncode == 2 and "usage:" in r.stderr
    r = _run(tmp_path, bench, "base a\n", "start", "ten")
    assert r.returncode == 2 and "SECONDS must be a whole number" in r.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi", path="/usr/bin:/bin") is not None,
                    reason="on a GPU machine the set-up would run (and clear /tmp/src)")
def test_a_valid_file_gets_past_the_checks_to_the_set_up(tmp_path, bench):
    """Comments, blank lines and flags are accepted; the next refusal is this machine's want of a GPU, the first
    step of the set-up (which clears /tmp/src, so it must never run here)."""
    r = _run(tmp_path, bench, "# A/B\nbase a,b   # both clips\n\nmirror a --set stage1.back_prior=mirror\n")
    assert r.returncode == 2 and "no GPU here" in r.stderr


def test_wait_returns_at_its_deadline_and_packs_what_is_there(tmp_path, bench):
    """``wait`` ends SECONDS after the call began whether or not the fits are done, reports each clip, and packs
    the results folder into $OUT/res.tgz, so a device call given a timeout above SECONDS always brings them back."""
    import tarfile

    done = tmp_path / "results" / "base"
    done.mkdir(parents=True)
    (done / "a_status.txt").write_text("ok")
    out = tmp_path / "out"
    out.mkdir()
    r = _run(tmp_path, bench, "base a,b\n", "wait", "0", OUT=str(out))
    assert r.returncode == 0, r.stderr
    assert "1 clip(s) still running" in r.stdout
    assert "base a: ok" in r.stdout and "base b: running" in r.stdout
    with tarfile.open(out / "res.tgz") as tar:
        assert "results/base/a_status.txt" in tar.getnames()
