"""Progress reporting: protocol events on stdout, human-readable logs on stderr.

The event schema lives in ``genmojo_blender.core.protocol`` (shared with Blender, which parses it).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from genmojo_blender.core.protocol import encode_event


class Reporter:
    """Emits the run's events. ``quiet`` keeps stdout clean for callers that only want the result;
    ``every_s`` is the least time between two progress events of one stage (0 reports every step, which a
    caller that stops on a given step needs)."""

    def __init__(self, stages: list[str], out: TextIO | None = None, log: TextIO | None = None,
                 quiet: bool = False, every_s: float = 0.25):
        self.stages = list(stages)
        self.every_s = every_s
        self.out = out if out is not None else sys.stdout
        self.log_stream = log if log is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()
        self._stage_t0 = self.t0
        self._stage = ""
        self._last_emit = 0.0

    def _emit(self, type_: str, **fields) -> None:
        if self.quiet:
            return
        self.out.write(encode_event(type_, **fields) + "\n")
        self.out.flush()

    def log(self, msg: str) -> None:
        self.log_stream.write(f"[genmojo {time.monotonic() - self.t0:7.1f}s] {msg}\n")
        self.log_stream.flush()

    def start(self, **fields) -> None:
        self._emit("start", stages=self.stages, **fields)

    def begin(self, stage: str) -> None:
        self._stage, self._stage_t0 = stage, time.monotonic()
        self._emit("stage", stage=stage, index=self.stages.index(stage), total_stages=len(self.stages),
                   status="begin")
        self.log(f"stage {stage}")

    def end(self, stage: str, **extra) -> None:
        """End ``stage``; ``extra`` fields ride on its event (``work``: the run's work plan)."""
        self._emit("stage", stage=stage, index=self.stages.index(stage), total_stages=len(self.stages),
                   status="end", duration_s=round(time.monotonic() - self._stage_t0, 3), **extra)

    def progress(self, step: int, total: int, losses: dict[str, float], every_s: float | None = None,
                 force: bool = False) -> None:
        """Report step ``step`` of ``total`` in the current stage; rate-limited except the last step and
        steps the caller ``force``s (the end of one object's fit within the stage)."""
        now = time.monotonic()
        every_s = self.every_s if every_s is None else every_s
        if step < total and not force and now - self._last_emit < every_s:
            return
        self._last_emit = now
        elapsed = now - self._stage_t0
        eta = elapsed / max(step, 1) * (total - step)
        self._emit("progress", stage=self._stage, step=step, total=total,
                   losses={k: round(float(v), 6) for k, v in losses.items()},
                   elapsed_s=round(now - self.t0, 2), eta_s=round(eta, 1))

    def done(self, bundle: str) -> None:
        self._emit("done", bundle=bundle, elapsed_s=round(time.monotonic() - self.t0, 2))
        self.log(f"done: {bundle}")

    def failed(self, error: str, kind: str, hint: str = "") -> None:
        self._emit("failed", error=error, kind=kind, hint=hint)
        self.log(f"FAILED ({kind}): {error}" + (f"\n  hint: {hint}" if hint else ""))


def claim_stdout() -> TextIO:
    """Reserve the process's stdout for protocol events and send everything else written there to stderr.

    Libraries print to stdout on their own (gsplat announces its CUDA build there; C extensions may
    write to file descriptor 1), and one such line would break the JSON-lines stream Blender reads.
    The original stdout is duplicated for the events; file descriptor 1 and ``sys.stdout`` then point
    at stderr. Call once, at the start of the command-line entry point, never inside a host process.
    """
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events
