"""Named spans of a fit step, a per-step hook, and a profile's kernel and host-operation tables, for
the benchmarks.

The fit code marks what each part of a step is (deformation, rendering, losses, backward, the guidance
renders, call and backward, optimizer) with ``span``; a profiler, when one is running, attributes host and device
time to those names, and costs nothing measurable otherwise. ``STEP_HOOKS`` lets a benchmark act
after every stage-2 step (advance the profiler's schedule, read a clock) without the fit knowing.
"""

from __future__ import annotations

from typing import Callable

import torch

PREFIX = "genmojo/"
SPANS = ("deformation", "render", "losses", "backward", "guidance_render", "guidance_sds", "guidance_backward",
         "optimizer")

STEP_HOOKS: list[Callable[[int], None]] = []  # called with the finished step's number


def span(name: str) -> torch.profiler.record_function:
    """A profiler range named ``genmojo/<name>``; ``name`` must be one of ``SPANS``."""
    if name not in SPANS:
        raise ValueError(f"unknown span {name!r}; one of {', '.join(SPANS)}")
    return torch.profiler.record_function(PREFIX + name)


def step_finished(step: int) -> None:
    for hook in list(STEP_HOOKS):
        hook(step)


def top_kernels(profiler, steps: int, n: int = 25) -> tuple[list[dict], float, float]:
    """The ``n`` device kernels with the most device time per step (all spans, backward included), with
    their share of all kernel time: what a custom kernel would have to replace to pay; the kernel
    launches per step (a launch-bound step pays for each); and the kernel milliseconds per step (the
    device's busy time as the profile names it: a step's wall time beyond it is the device waiting on
    the host, or busy with work the profile does not attribute to a kernel).

    ``profiler``: a finished ``torch.profiler.profile`` (anything with ``key_averages()``) that recorded
    ``steps`` steps. Annotated ranges (the spans, an optimizer's step) carry device time too; they are
    not kernels and are left out.
    """
    from torch.autograd import DeviceType

    kernels = [e for e in profiler.key_averages() if e.device_type != DeviceType.CPU
               and float(getattr(e, "self_device_time_total", 0.0) or 0.0) > 0
               and not getattr(e, "is_user_annotation", False)
               and not e.key.startswith(PREFIX) and "#" not in e.key]
    total = sum(float(e.self_device_time_total) for e in kernels)
    kernels.sort(key=lambda e: -float(e.self_device_time_total))
    top = [{"kernel": e.key[:120], "device_ms": round(float(e.self_device_time_total) / 1000 / steps, 3),
            "calls_per_step": round(e.count / steps, 2), "share": round(float(e.self_device_time_total) / total, 4)}
           for e in kernels[:n]]
    return top, round(sum(e.count for e in kernels) / steps, 1), round(total / 1000 / steps, 3)


def kernel_table_md(kernels: list[dict]) -> list[str]:
    """``top_kernels``' rows as markdown table lines."""
    return ["| kernel (most device time first) | device ms / step | calls / step | share of kernel time |",
            "|---|---|---|---|",
            *(f"| `{k['kernel']}` | {k['device_ms']} | {k['calls_per_step']} | {100 * k['share']:.1f} % |"
              for k in kernels)]


def host_table_md(ops: list[dict]) -> list[str]:
    """``top_host_ops``' rows as markdown table lines."""
    return ["| host op (most self time first) | host ms / step | calls / step |", "|---|---|---|",
            *(f"| `{o['op']}` | {o['host_ms']} | {o['calls_per_step']} |" for o in ops)]


def top_host_ops(profiler, steps: int, n: int = 15) -> list[dict]:
    """The ``n`` host operations with the most self time per step: where a step whose wall time exceeds
    its kernel time spends its host time (Python-side overhead shows as the gaps between them)."""
    from torch.autograd import DeviceType

    ops = [e for e in profiler.key_averages() if e.device_type == DeviceType.CPU
           and float(getattr(e, "self_cpu_time_total", 0.0) or 0.0) > 0]
    ops.sort(key=lambda e: -float(e.self_cpu_time_total))
    return [{"op": e.key[:120], "host_ms": round(float(e.self_cpu_time_total) / 1000 / steps, 3),
             "calls_per_step": round(e.count / steps, 2)} for e in ops[:n]]
