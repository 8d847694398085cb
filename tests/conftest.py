"""Shared test set-up: the repository root and tests/ on sys.path, Blender kept out of $HOME."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

# bpy writes its user resources and caches under $HOME unless told otherwise.
_scratch = Path(os.environ.get("GENMOJO_TEST_SCRATCH", "/tmp/genmojo-test-home"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(_scratch / "blender"))
os.environ.setdefault("XDG_CACHE_HOME", str(_scratch / "cache"))

import importlib.util  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402


def load_script(name: str):
    """Import a file from scripts/ as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def run_interpreted(script: str) -> dict:
    """Run ``script`` with Triton's CPU interpreter (TRITON_INTERPRET=1, read when kernels are defined, so
    in a fresh process) and return the JSON object it prints last; skips where Triton is not installed."""
    import json
    import subprocess

    pytest.importorskip("triton", reason="Triton is not installed (requirements/cpu.txt has it)")
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def sample_clip_master(tmp_path_factory):
    """A small synthetic clip with occlusion (64x64, 8 frames, 3 objects), generated once per session."""
    out = tmp_path_factory.mktemp("sample") / "clip"
    load_script("make_synthetic_clip").make_clip(out, width=64, height=64, frames=8, objects=3, seed=0)
    return out


@pytest.fixture
def sample_clip(sample_clip_master, tmp_path):
    """A private copy of the sample clip that a test may modify."""
    dst = tmp_path / "clip"
    shutil.copytree(sample_clip_master, dst)
    return dst
