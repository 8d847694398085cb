"""scripts/bench_guidance.py on the CPU with a tiny random model: a smoke run of the whole report (the
figures themselves are the GPU's business), the optional kernel table, and its refusals."""

import json

import pytest

from conftest import load_script

pytest.importorskip("diffusers")


def test_the_step_benchmark_reports_its_figures_and_a_kernel_table_when_asked(tmp_path):
    bench = load_script("bench_guidance")
    out = tmp_path / "g"
    assert bench.main(["--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--profile_steps", "1",
                       "--out", str(out)]) == 0
    r = json.loads((out / "guidance_bench.json").read_text())
    assert r["images_per_step"] == 32 and len(r["ms_all"]) == 2 and r["ms_per_step"] > 0
    assert r["flops_per_step"] > 0 and r["layout"] == "NCHW" and r["compile"] == "none"
    # a CPU run has no device kernels: the table is there, and empty
    assert r["profiled_steps"] == 1 and r["top_kernels"] == [] and r["kernel_launches_per_step"] == 0
    assert r["kernel_ms_per_step"] == 0 and r["vae_attention"] == "matmul"
    # the host's side is there: the profiled step ran convolutions on the CPU
    assert r["top_host_ops"] and any("conv" in o["op"] for o in r["top_host_ops"])
    assert all(o["host_ms"] > 0 for o in r["top_host_ops"])
    md = (out / "guidance_bench.md").read_text()
    assert "| device kernel launches per step | 0.0 |" in md and "| kernel (most device time first)" in md
    assert "| host op (most self time first)" in md


def test_without_profiling_the_report_has_no_kernel_table(tmp_path):
    bench = load_script("bench_guidance")
    out = tmp_path / "g"
    assert bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    r = json.loads((out / "guidance_bench.json").read_text())
    assert r["profiled_steps"] == 0 and r["kernel_launches_per_step"] is None
    assert "kernel (most device time first)" not in (out / "guidance_bench.md").read_text()


def test_a_negative_profile_count_is_refused(tmp_path, capsys):
    bench = load_script("bench_guidance")
    with pytest.raises(SystemExit) as e:
        bench.main(["--tiny", "--device", "cpu", "--profile_steps", "-1", "--out", str(tmp_path / "g")])
    assert e.value.code == 2 and "--profile_steps" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()  # refused before any work
