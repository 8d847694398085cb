"""scripts/bench_pipeline.py on the CPU with a tiny random guidance model: every stage and every named
span of a stage-2 step is measured and reported (the figures themselves are the GPU's business)."""

import json

import pytest
import torch

from conftest import load_script

from backend import profiling


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _args(clip, out, *extra):
    return ["--data_dir", str(clip / "JPEGImages"), "--mask_dir", str(clip / "Annotations"), "--device", "cpu",
            "--preset", "cpu-tiny", "--tiny", "--iters", "6", "--warmup_steps", "1", "--profile_steps", "2",
            "--stage1_iters", "8", "--set", "stage2.frames_per_batch=2", "--out", str(out), *extra]


def test_the_benchmark_reports_every_stage_and_span(sample_clip_master, tmp_path, one_thread):
    bench = load_script("bench_pipeline")
    assert bench.main(_args(sample_clip_master, tmp_path / "b", "--baseline_s_per_iter", "0.001")) == 0
    r = json.loads((tmp_path / "b" / "pipeline_bench.json").read_text())
    assert set(r["stages_s"]) == {"validate", "init", "objects", "fit", "bake", "write"}
    assert r["guidance_model"] == "tiny random model" and r["iterations"] == 6 and r["frames"] == 8
    assert r["stage2_s_per_iter"] > 0 and r["timed_steps"] >= 1
    assert r["full_fit_iterations"] == max(40, 6 * 8)  # cpu-tiny's stage-2 schedule for 8 frames
    # stage 1 ran 8 iterations per object; the whole run counts it at cpu-tiny's 60
    assert r["stage1_iterations"] == 8 and r["stage1_full_iterations"] == 60
    assert r["stage1_s_per_iter"] > 0
    assert r["objects_extrapolated_s"] == pytest.approx(
        r["stages_s"]["objects"] + (60 - 8) * 3 * r["stage1_s_per_iter"], abs=0.1)
    for name in profiling.SPANS:  # each part of the step was reached and timed on the host
        assert r["step_split_ms"][name]["host_ms"] > 0, name
    assert r["step_split_ms"]["guidance_sds"]["calls_per_step"] == 3  # once per object
    assert r["flops_per_step"] > 0
    # over the wall time guidance adds to a step: the step's time less the no-guidance baseline
    assert r["guidance_wall_tflops"] == pytest.approx(
        r["flops_per_step"] / (r["stage2_s_per_iter"] - 0.001) / 1e12, abs=2e-3)
    assert r["peak_memory_gib"] is None and r["guidance_achieved_tflops"] is None  # no device time on a CPU
    assert r["top_kernels"] == [] and r["kernel_launches_per_step"] == 0  # and no device kernels
    assert r["kernel_ms_per_step"] == 0
    assert r["top_host_ops"] and all(o["host_ms"] > 0 for o in r["top_host_ops"])
    md = (tmp_path / "b" / "pipeline_bench.md").read_text()
    assert "| guidance_sds |" in md and "s per iteration" in md and "| host op (most self time first)" in md
    assert profiling.STEP_HOOKS == []  # the probe is removed again


def test_the_kernel_table_counts_kernels_only_and_orders_them_by_device_time():
    """Annotated ranges (the spans, the optimizer's step) carry device time too; they are not kernels."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def ev(key, us, count, device=DeviceType.CUDA, annotation=False):
        return SimpleNamespace(key=key, self_device_time_total=us, count=count, device_type=device,
                               is_user_annotation=annotation)

    events = [ev("small_kernel", 1000.0, 40), ev(profiling.PREFIX + "render", 9000.0, 2, annotation=True),
              ev("Optimizer.step#AdamW.step", 5000.0, 1), ev("big_kernel", 3000.0, 4),
              ev("aten::mul", 0.0, 99, device=DeviceType.CPU)]
    top, launches, busy_ms = profiling.top_kernels(SimpleNamespace(key_averages=lambda: events), steps=2)
    assert [k["kernel"] for k in top] == ["big_kernel", "small_kernel"]
    assert top[0] == {"kernel": "big_kernel", "device_ms": 1.5, "calls_per_step": 2.0, "share": 0.75}
    assert launches == 22.0  # (40 + 4) launches over 2 steps
    assert busy_ms == 2.0  # (1000 + 3000) µs of kernels over 2 steps


def test_the_benchmark_refuses_too_few_iterations(sample_clip_master, tmp_path, capsys):
    bench = load_script("bench_pipeline")
    with pytest.raises(SystemExit) as e:
        bench.main(_args(sample_clip_master, tmp_path / "b", "--iters", "3"))
    assert e.value.code == 2
    assert "warmup + profile + 2" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_baseline_that_is_not_positive_is_refused_before_the_run(sample_clip_master, tmp_path, capsys):
    bench = load_script("bench_pipeline")
    with pytest.raises(SystemExit) as e:
        bench.main(_args(sample_clip_master, tmp_path / "b", "--baseline_s_per_iter", "0"))
    assert e.value.code == 2 and "--disable_guidance" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_spans_are_named():
    with pytest.raises(ValueError, match="unknown span"):
        profiling.span("rendering")


def test_the_span_split_takes_host_time_from_the_host_range_and_kernel_time_from_its_kernels():
    """On a GPU each span is a host range (its host time, and the kernels it launched) and a device-side
    annotation of the same name (its extent on the device timeline): neither may overwrite the other."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    bench = load_script("bench_pipeline")

    def ev(key, device, cpu_us, dev_us, count):
        return SimpleNamespace(key=key, device_type=device, cpu_time_total=cpu_us, device_time_total=dev_us,
                               count=count)

    events = [ev(profiling.PREFIX + "render", DeviceType.CPU, 4000.0, 3000.0, 2),
              ev(profiling.PREFIX + "render", DeviceType.CUDA, 0.0, 5000.0, 2),
              ev(profiling.PREFIX + "losses", DeviceType.CUDA, 0.0, 800.0, 2),  # the device side listed first
              ev(profiling.PREFIX + "losses", DeviceType.CPU, 1000.0, 600.0, 2),
              ev("aten::mul", DeviceType.CPU, 9000.0, 9000.0, 50)]
    split = bench.span_split(SimpleNamespace(key_averages=lambda: events), steps=2, kernel_ms=7.5)
    assert split["render"] == {"host_ms": 2.0, "device_ms": 1.5, "device_extent_ms": 2.5, "calls_per_step": 1.0}
    assert split["losses"] == {"host_ms": 0.5, "device_ms": 0.3, "device_extent_ms": 0.4, "calls_per_step": 1.0}
    assert split["step total"]["device_ms"] == 7.5 and set(split) == {"render", "losses", "step total"}
