"""Named spans of a fit step and a per-step hook, for benchmarks (``scripts/bench_pipeline.py``).

The fit code marks what each part of a step is (deformation, rendering, losses, backward, guidance
UNet and VAE, optimizer) with ``span``; a profiler, when one is running, attributes host and device
time to those names, and costs nothing measurable otherwise. ``STEP_HOOKS`` lets a benchmark act
after every stage-2 step (advance the profiler's schedule, read a clock) without the fit knowing.
"""

from __future__ import annotations

from typing import Callable

import torch

PREFIX = "genmojo/"
SPANS = ("deformation", "render", "losses", "backward", "guidance_render", "guidance_vae", "guidance_unet",
         "guidance_backward", "optimizer")

STEP_HOOKS: list[Callable[[int], None]] = []  # called with the finished step's number


def span(name: str) -> torch.profiler.record_function:
    """A profiler range named ``genmojo/<name>``; ``name`` must be one of ``SPANS``."""
    if name not in SPANS:
        raise ValueError(f"unknown span {name!r}; one of {', '.join(SPANS)}")
    return torch.profiler.record_function(PREFIX + name)


def step_finished(step: int) -> None:
    for hook in list(STEP_HOOKS):
        hook(step)
