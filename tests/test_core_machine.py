"""The Auto preset: whether the backend's PyTorch has CUDA, asked in its own Python."""

from __future__ import annotations

import sys

from genmojo_blender.core import machine


def _fake_torch(folder, cuda: bool):
    pkg = folder / "torch"
    (pkg / "cuda").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '9.9-fake'\nfrom . import cuda\n")
    (pkg / "cuda" / "__init__.py").write_text(
        f"def is_available():\n    return {cuda}\n"
        "def device_count():\n    return 1\n"
        "def get_device_name(i):\n    return 'Fake GPU'\n")
    return str(folder)


def test_cuda_is_found_in_the_backends_python_and_cached(tmp_path):
    path = _fake_torch(tmp_path / "gpu", True)
    probe = machine.probe_cuda(sys.executable, path)
    assert probe.cuda is True and probe.devices == ("Fake GPU",) and "with CUDA" in probe.message
    assert machine.cached_cuda(sys.executable, path) is probe
    assert machine.resolve_preset("auto", "auto", sys.executable, path)[0] == "lite"
    no = _fake_torch(tmp_path / "cpu", False)
    assert machine.resolve_preset("auto", "auto", sys.executable, no) == (
        "cpu-tiny", "Preset Auto: cpu-tiny (the backend's PyTorch 9.9-fake without CUDA (CPU only))")


def test_explicit_presets_and_devices_win_and_a_failed_probe_says_why(tmp_path):
    assert machine.resolve_preset("lite", "auto", "/no/python", "") == ("lite", "")
    assert machine.resolve_preset("auto", "cuda", "/no/python", "")[0] == "lite"
    assert machine.resolve_preset("auto", "cpu", "/no/python", "")[0] == "cpu-tiny"
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no torch here')\n")
    chosen, why = machine.resolve_preset("auto", "auto", sys.executable, str(tmp_path / "broken"))
    assert chosen == "cpu-tiny" and "could not tell whether it has CUDA" in why and "no torch here" in why
    assert machine.cached_cuda(sys.executable, str(tmp_path / "broken")) is None  # not cached: tried again


def test_a_torch_in_the_working_folder_does_not_answer_the_probe(tmp_path, monkeypatch):
    path = _fake_torch(tmp_path / "backend", False)
    _fake_torch(tmp_path / "cwd", True)  # Blender's working folder: not the backend's path
    monkeypatch.chdir(tmp_path / "cwd")
    probe = machine.probe_cuda(sys.executable, path, refresh=True)
    assert probe.cuda is False and "without CUDA" in probe.message
