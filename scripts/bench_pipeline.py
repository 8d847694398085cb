"""Time the whole pipeline on a clip with guidance on: the figures issue #9 asks for, from one run.

The run is the real one (``backend.pipeline.run``, the preset's schedules, stage 1 and stage 2 with
Zero123 guidance), shortened to ``--stage1_iters`` iterations per object and ``--iters`` stage-2
iterations; the whole run is extrapolated from those at the preset's counts. Without real Zero123 weights the
guidance model is built at the published Zero123-XL shapes with random weights, saved in the
diffusers layout and loaded through the real loader (``backend.priors.zero123``): the timings are
those of the real model, the results meaningless.

Reported (JSON and a markdown table in ``--out``):
- wall time per pipeline stage (validate, init, objects, fit, bake, write) for this shortened run;
- stage-2 seconds per iteration (median over the timed steps, after ``--warmup_steps``) and
  iterations per second, and the whole ``--lite`` fit extrapolated from them;
- the split of a stage-2 step by the fit's named spans (``backend/profiling.py``): per span its host
  time, the kernel time it launches and its extent on the device timeline, from torch's profiler over
  ``--profile_steps`` steps. Backward passes run on autograd's own thread, so their kernels show in
  the step total rather than in a span;
- the FLOPs torch counts in one step (aten operations: the guidance networks and the deformation
  MLPs; gsplat's kernels are not counted; a ``--disable_guidance`` run shows how little the MLPs add),
  and the guidance path's achieved TFLOP/s, those FLOPs over the guidance spans' extent on the device,
  against the device's dense bf16 peak. The span ``guidance_sds`` holds the whole guidance call, the
  VAE encoder's backward included (it runs inside the call); the extent counts the gaps between its
  kernels too. Before that change the spans held the forward passes only and the figure was an upper
  bound; with ``--baseline_s_per_iter`` (the same
  clip's stage-2 s per iteration with ``--disable_guidance``) the FLOPs are also divided by the wall
  time that guidance adds to a step, a lower bound;
- the device kernels with the most time per step (backward included) and their share of all kernel
  time: what a custom kernel in ``backend/kernels`` would have to replace to pay; and the host
  operations with the most self time (where a host-bound step spends it);
- the peak GPU memory.

``--compile MODE`` runs the guidance UNet and VAE encoder path compiled (``GuidanceConfig.compile``);
they compile on their first calls (stage 1's first object, stage 2's first step), which stay out of
the steady rates above. The FLOP-counted step runs them eagerly (the same operations).

    python scripts/bench_pipeline.py --data_dir CLIP/JPEGImages --mask_dir CLIP/Annotations --out bench_out   # GPU
    python scripts/bench_pipeline.py --data_dir ... --mask_dir ... --compile default --out bench_compiled      # GPU
    python scripts/bench_pipeline.py --data_dir ... --mask_dir ... --tiny --device cpu --preset cpu-tiny --iters 6 \\
        --warmup_steps 1 --profile_steps 2 --out /tmp/bench   # a CPU smoke run of the script itself
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend import profiling  # noqa: E402
from backend.config import get_preset, parse_assignment, with_overrides  # noqa: E402
from backend.pipeline import STAGES, RunRequest, run  # noqa: E402
from backend.priors import zero123 as Z  # noqa: E402
from backend.progress import Reporter  # noqa: E402
from bench_guidance import bf16_peak, full_parts, tiny_parts  # noqa: E402
from genmojo_blender.core.bundle import open_bundle  # noqa: E402
from genmojo_blender.core.protocol import decode_event  # noqa: E402

class StepProbe:
    """After each stage-2 step: a clock reading; the profiler over steps (warmup, warmup + profile];
    torch's FLOP counter over the step after that, with compiled guidance networks run eagerly (the
    counter sees aten operations, and a whole-graph compile refuses to trace under its dispatch mode)."""

    def __init__(self, device: torch.device, warmup: int, profile: int):
        self.warmup, self.profile = warmup, profile
        self.times: dict[int, float] = {}
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=acts)
        from torch.utils.flop_counter import FlopCounterMode

        self.flops = FlopCounterMode(display=False)
        self.flop_step = warmup + profile + 1

    def __call__(self, step: int) -> None:
        self.times[step] = time.perf_counter()
        if step == self.warmup:
            self.profiler.start()
        elif step == self.warmup + self.profile:
            self.profiler.stop()
        if step == self.flop_step - 1:
            self.eager = torch.compiler.set_stance("force_eager")  # sets it now; __exit__ restores the last
            self.flops.__enter__()
        elif step == self.flop_step:
            self.flops.__exit__(None, None, None)
            self.eager.__exit__(None, None, None)


def guidance_model(args, device: torch.device, folder: Path) -> tuple[str, str]:
    """The model spec to run with and how it was made: a real one (``--guidance_model``) or random
    weights at the published (or, with ``--tiny``, tiny) shapes saved into ``folder``."""
    if args.guidance_model:
        return args.guidance_model, f"{args.guidance_model} (given)"
    torch.manual_seed(0)
    parts = tiny_parts() if args.tiny else full_parts()
    if not args.tiny:  # half the bytes to write and read; the loader casts to the run's dtype anyway
        parts = tuple(p.to(torch.bfloat16) if isinstance(p, torch.nn.Module) else p for p in parts)
    Z.save_zero123(folder, *parts)
    return str(folder), ("tiny random model" if args.tiny else "Zero123-XL shapes, random weights")


def span_split(profiler: torch.profiler.profile, steps: int, kernel_ms: float) -> dict[str, dict[str, float]]:
    """Per named span and step: host milliseconds (the span's range on the host), device milliseconds
    (the kernels launched inside it) and, on a GPU, its extent on the device timeline (first to last of
    its work, gaps included). ``step total`` is all kernel time, ``kernel_ms`` (``profiling.top_kernels``).

    A span shows up twice on a GPU, as a host range and as a device-side annotation of the same name;
    each contributes its own figures.
    """
    from torch.autograd import DeviceType

    out: dict[str, dict[str, float]] = {}
    for e in profiler.key_averages():
        if not e.key.startswith(profiling.PREFIX):
            continue
        row = out.setdefault(e.key[len(profiling.PREFIX):], {"host_ms": 0.0, "device_ms": 0.0,
                                                              "device_extent_ms": None, "calls_per_step": 0.0})
        device_total = float(getattr(e, "device_time_total", 0.0) or 0.0) / 1000 / steps
        if e.device_type == DeviceType.CPU:
            row["host_ms"] = round(e.cpu_time_total / 1000 / steps, 3)
            row["device_ms"] = round(device_total, 3)
            row["calls_per_step"] = round(e.count / steps, 2)
        else:
            row["device_extent_ms"] = round(device_total, 3)
    out["step total"] = {"host_ms": float("nan"), "device_ms": kernel_ms, "device_extent_ms": None,
                         "calls_per_step": 1.0}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_dir", type=Path, required=True)
    ap.add_argument("--mask_dir", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--iters", type=int, default=40, help="stage-2 iterations of the shortened run")
    ap.add_argument("--stage1_iters", type=int, default=60,
                    help="stage-1 iterations per object of the shortened run (0: the preset's)")
    ap.add_argument("--warmup_steps", type=int, default=5)
    ap.add_argument("--profile_steps", type=int, default=10)
    ap.add_argument("--guidance_model", default=None, help="a real Zero123 model (folder or hub id)")
    ap.add_argument("--disable_guidance", action="store_true", help="time the run without guidance")
    ap.add_argument("--tiny", action="store_true", help="a tiny random guidance model (CPU smoke run)")
    ap.add_argument("--compile", default=None, choices=Z.COMPILE_MODES,
                    help="torch.compile mode of the guidance UNet and VAE encoder path (sets sds.compile; "
                         "default: the preset's, which is default for lite and full)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--peak_tflops", type=float, default=None)
    ap.add_argument("--baseline_s_per_iter", type=float, default=None,
                    help="stage-2 s per iteration of the same clip with --disable_guidance: the guidance "
                         "TFLOP/s is then also reported over the wall time guidance adds to a step")
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    args = ap.parse_args(argv)
    if args.baseline_s_per_iter is not None and args.baseline_s_per_iter <= 0:
        ap.error(f"--baseline_s_per_iter {args.baseline_s_per_iter}: a positive stage-2 s per iteration "
                 "(from the same clip with --disable_guidance)")
    if args.warmup_steps < 1 or args.profile_steps < 1:
        ap.error("--warmup_steps and --profile_steps must be at least 1")
    if args.iters < args.warmup_steps + args.profile_steps + 2:
        ap.error(f"--iters {args.iters} leaves no room: it needs warmup + profile + 2 = "
                 f"{args.warmup_steps + args.profile_steps + 2} steps")
    for d in (args.data_dir, args.mask_dir):
        if not d.is_dir():
            ap.error(f"{d} is not a folder")
    device = torch.device(args.device)
    cfg = get_preset(args.preset)
    for text in args.set:
        cfg = parse_assignment(cfg, text)
    if cfg.method != "genmojo":
        ap.error("the benchmark times the GenMOJO method (stage 2); drop method=skeleton")
    if args.stage1_iters < 0:
        ap.error("--stage1_iters must be 0 (the preset's) or more")
    stage1_full = cfg.stage1.iterations
    if args.stage1_iters:
        cfg = with_overrides(cfg, stage1={"iterations": args.stage1_iters})

    with tempfile.TemporaryDirectory(prefix="genmojo_bench_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.disable_guidance:
            cfg = replace(cfg, guidance=False)
            spec, model_desc = None, "none (--disable_guidance)"
        else:
            spec, model_desc = guidance_model(args, device, tmp / "zero123")
            sds = {"model": spec}
            if args.compile is not None:
                sds["compile"] = args.compile
            if args.tiny:
                sds["image_size"] = 32
            cfg = replace(with_overrides(cfg, sds=sds), guidance=True)
        build_s = time.perf_counter() - t0
        probe = StepProbe(device, args.warmup_steps, args.profile_steps)
        events = io.StringIO()
        reporter = Reporter(STAGES, out=events, log=sys.stderr)
        req = RunRequest(data_dir=args.data_dir, mask_dir=args.mask_dir, out_dir=tmp / "out", save_name="bench",
                         device=args.device, iterations=args.iters, disable_guidance=args.disable_guidance,
                         command=["bench_pipeline", *(argv if argv is not None else sys.argv[1:])])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        profiling.STEP_HOOKS.append(probe)
        try:
            t_run = time.perf_counter()
            bundle = run(req, cfg, reporter)
            run_s = time.perf_counter() - t_run
            num_frames = open_bundle(bundle).manifest.clip.frame_count
        finally:
            profiling.STEP_HOOKS.remove(probe)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        reserved = torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None

    stages = {}
    object_ends = []  # (global stage-1 step, elapsed s) at the end of each object's fit
    for line in events.getvalue().splitlines():
        e = decode_event(line)
        if e.type == "stage" and e.get("status") == "end":
            stages[e.get("stage")] = round(float(e.get("duration_s")), 3)
        elif e.type == "progress" and e.get("stage") == "objects" and int(e.get("step")) % cfg.stage1.iterations == 0:
            object_ends.append((int(e.get("step")), float(e.get("elapsed_s"))))
    # the steps after the profiled ones and the FLOP-counted one (--iters leaves at least one)
    timed = [probe.times[s] - probe.times[s - 1] for s in sorted(probe.times) if s > probe.flop_step]
    s_per_iter = statistics.median(timed)
    kernels, launches, busy_ms = profiling.top_kernels(probe.profiler, args.profile_steps)
    split = span_split(probe.profiler, args.profile_steps, busy_ms)
    host_ops = profiling.top_host_ops(probe.profiler, args.profile_steps)
    flops = int(probe.flops.get_total_flops())
    # the guidance spans' extent on the device timeline (first to last of their work, gaps included)
    guidance_dev_ms = sum(v["device_extent_ms"] or 0.0 for k, v in split.items() if k.startswith("guidance"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak_tf = args.peak_tflops or (bf16_peak(name) if device.type == "cuda" else None)
    achieved = flops / (guidance_dev_ms / 1000) / 1e12 if guidance_dev_ms > 0 and not args.disable_guidance else None
    added_s = s_per_iter - args.baseline_s_per_iter if args.baseline_s_per_iter is not None else None
    baseline_note = None
    if added_s is not None and added_s <= 0:  # the run's figures are kept; only this one cannot be formed
        baseline_note = (f"--baseline_s_per_iter {args.baseline_s_per_iter} is not below this run's "
                         f"{s_per_iter:.4f} s per iteration: pass the --disable_guidance run's figure")
        print(f"bench_pipeline: {baseline_note}", file=sys.stderr)
    ok = added_s is not None and added_s > 0 and not args.disable_guidance
    wall_tflops = flops / added_s / 1e12 if ok else None
    full_iters = cfg.stage2.iterations(num_frames)
    # stage 1's steady rate: from the end of the first object's fit to the end of the last one's, so the
    # first calls' set-up (kernel builds, autotuning) is not multiplied; the missing iterations are added
    # at that rate
    n_objects = len(object_ends)
    if n_objects >= 2:
        (s0, t0_), (s1, t1_) = object_ends[0], object_ends[-1]
        stage1_rate = (t1_ - t0_) / (s1 - s0)
    else:
        stage1_rate = stages.get("objects", 0.0) / max(1, cfg.stage1.iterations * max(1, n_objects))
    objects_full = stages.get("objects", 0.0) + (stage1_full - cfg.stage1.iterations) * n_objects * stage1_rate
    result = {
        "device": name, "torch": torch.__version__, "preset": cfg.preset, "guidance_model": model_desc,
        "compile": cfg.sds.compile if cfg.guidance else None,
        "clip": str(args.data_dir), "iterations": args.iters, "stage1_iterations": cfg.stage1.iterations,
        "model_build_s": round(build_s, 2),
        "run_s": round(run_s, 2), "stages_s": stages,
        "stage2_s_per_iter": round(s_per_iter, 4), "stage2_iter_per_s": round(1 / s_per_iter, 3),
        "frames": num_frames, "full_fit_iterations": full_iters,
        "full_fit_extrapolated_s": round(full_iters * s_per_iter, 1),
        "stage1_full_iterations": stage1_full, "stage1_s_per_iter": round(stage1_rate, 4),
        "objects_extrapolated_s": round(objects_full, 1),
        "whole_run_extrapolated_s": round(sum(v for k, v in stages.items() if k not in ("fit", "objects"))
                                          + objects_full + full_iters * s_per_iter, 1),
        "timed_steps": len(timed), "step_split_ms": split, "top_kernels": kernels,
        "kernel_launches_per_step": launches, "kernel_ms_per_step": busy_ms, "top_host_ops": host_ops,
        "flops_per_step": flops,
        "guidance_device_ms_per_step": round(guidance_dev_ms, 3),
        "guidance_achieved_tflops": round(achieved, 3) if achieved else None, "bf16_peak_tflops": peak_tf,
        "guidance_fraction_of_peak": round(achieved / peak_tf, 4) if achieved and peak_tf else None,
        "baseline_s_per_iter": args.baseline_s_per_iter, "baseline_note": baseline_note,
        "guidance_wall_tflops": round(wall_tflops, 3) if wall_tflops else None,
        "guidance_wall_fraction_of_peak": round(wall_tflops / peak_tf, 4) if wall_tflops and peak_tf else None,
        "peak_memory_gib": round(peak, 3) if peak is not None else None,
        "peak_reserved_gib": round(reserved, 3) if reserved is not None else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline_bench.json").write_text(json.dumps(result, indent=2))
    rows = [("device", name), ("preset", cfg.preset), ("guidance", model_desc),
            ("guidance compile", result["compile"]),
            ("stage-1 iterations per object", cfg.stage1.iterations), ("stage-2 iterations", args.iters),
            *((f"stage {k} (s)", v) for k, v in stages.items()),
            ("stage 2: s per iteration (median)", result["stage2_s_per_iter"]),
            ("stage 2: iterations per s", result["stage2_iter_per_s"]),
            ("stage 1: s per iteration (after the first object)", result["stage1_s_per_iter"]),
            (f"stage 1 at {stage1_full} iterations per object, extrapolated (s)", result["objects_extrapolated_s"]),
            (f"whole {cfg.preset} fit ({full_iters} iterations), extrapolated (s)", result["full_fit_extrapolated_s"]),
            ("whole run at the preset's counts, extrapolated (s)", result["whole_run_extrapolated_s"]),
            ("FLOP per step (torch-counted)", f"{flops / 1e12:.4g} T"),
            ("guidance spans, extent on the device, ms per step", result["guidance_device_ms_per_step"]),
            ("guidance TFLOP/s over its spans' extent on the device", result["guidance_achieved_tflops"]),
            ("fraction of bf16 peak", result["guidance_fraction_of_peak"]),
            ("guidance TFLOP/s over the wall time it adds (lower bound)", result["guidance_wall_tflops"]),
            ("fraction of bf16 peak", result["guidance_wall_fraction_of_peak"]),
            ("device kernel launches per step", launches),
            ("device kernel time per step (ms)", busy_ms),
            ("peak memory (GiB)", result["peak_memory_gib"]),
            ("peak reserved by the allocator (GiB)", result["peak_reserved_gib"])]
    md = ["| what | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
          "| span | host ms / step | kernel ms / step | extent on the device, ms / step | calls / step |",
          "|---|---|---|---|---|",
          *(f"| {k} | {v['host_ms']} | {v['device_ms']} | {'-' if v['device_extent_ms'] is None else v['device_extent_ms']} "
            f"| {v['calls_per_step']} |" for k, v in split.items()),
          "", *profiling.kernel_table_md(kernels), "", *profiling.host_table_md(host_ops)]
    (args.out / "pipeline_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
