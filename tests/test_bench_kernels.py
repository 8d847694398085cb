"""scripts/bench_kernels.py on the CPU: every kernel family is timed with each kernel this machine runs
and written to JSON and markdown (the figures themselves are the GPU's business)."""

import json

from conftest import load_script


def test_the_kernel_benchmark_times_every_family(tmp_path):
    bench = load_script("bench_kernels")
    assert bench.main(["--device", "cpu", "--gaussians", "300", "--frames", "2", "--knn", "4", "--steps", "1",
                       "--warmup", "0", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "kernel_bench.json").read_text())
    rows = {(r["what"], r["kernel"], r["layout"]): r for r in result["rows"]}
    assert set(rows) == {("plane features", "torch", "contiguous"), ("plane features", "torch", "channels-last"),
                         ("deformation field", "torch", "contiguous"), ("kNN rigidity", "torch", "-"),
                         ("kNN scale smoothness", "torch", "-")}  # no CUDA here: the twins only
    assert all(r["forward_backward_ms"] > 0 for r in rows.values())
    assert "| kNN rigidity | torch |" in (tmp_path / "kernel_bench.md").read_text()
