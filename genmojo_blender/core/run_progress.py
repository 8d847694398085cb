"""A run's overall progress and time left, with each stage weighted by the work it is expected to take.

``RunState.fraction`` (``protocol.py``) gives every stage the same share, so a run sat at 50 % while
stage 2, most of its time, went by; and after the last fitted step its ETA of 0 s stayed on through
bake and write. ``RunProgress`` folds the same events with the backend's work plan: the ``stage``
event that ends ``validate`` carries ``work`` (stage name -> expected seconds, from the iteration
counts once the clip is known; ``backend/progress_plan.py``; any stage event may carry one, the
last counts). Then

* the fraction is (the planned work of finished stages + the current stage's work x its step
  fraction) / all planned work, so it moves at the pace of the run;
* the time left is the current stage's remaining time (the backend's own ``eta_s`` while it reports
  steps, else its planned work at the pace measured so far) plus the remaining stages' planned work at
  that pace: the seconds elapsed per unit of planned work done, which calibrates the plan to this
  machine. Before any work is done it is None ("unknown"), never 0.

Without a plan (an older backend), every stage weighs the same and only the backend's own per-stage
ETA is shown. Standard library only; event times are the events' ``time`` fields, so the result
depends on the events alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .protocol import Event

WORK_FIELD = "work"  # the stage event's optional plan: stage name -> expected seconds


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


@dataclass
class RunProgress:
    """Progress folded from a run's events (see the module docstring)."""

    stages: list[str] = field(default_factory=list)
    work: dict[str, float] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    current: str = ""
    step: int = 0
    total: int = 0
    stage_eta_s: float | None = None  # the backend's estimate for the current stage, while it reports steps
    t_start: float | None = None
    t_last: float | None = None
    succeeded: bool = False

    def apply(self, ev: Event) -> None:
        t = _number(ev.get("time"))
        if ev.type == "start":
            self.stages = [str(s) for s in ev.get("stages") or []]
            self.t_start = t
        elif ev.type == "stage":
            stage = str(ev.get("stage"))
            if ev.get("status") == "begin":
                self.current, self.step, self.total, self.stage_eta_s = stage, 0, 0, None
            elif ev.get("status") == "end":
                self.ended.add(stage)
                self.stage_eta_s = None
            self._read_plan(ev.get(WORK_FIELD))
        elif ev.type == "progress":
            step, total = _number(ev.get("step")), _number(ev.get("total"))
            if step is not None and total is not None and total > 0:
                self.current = str(ev.get("stage"))
                self.step, self.total = int(step), int(total)
                self.stage_eta_s = _number(ev.get("eta_s"))
        elif ev.type == "done":
            self.succeeded = True
        if t is not None:
            self.t_last = t if self.t_last is None else max(self.t_last, t)

    def _read_plan(self, plan) -> None:
        """Take the plan's non-negative finite entries for known stages; a plan without any is ignored."""
        if not isinstance(plan, dict):
            return
        work = {s: v for s, v in ((str(k), _number(v)) for k, v in plan.items())
                if s in self.stages and v is not None and v >= 0}
        if work and sum(work.values()) > 0:
            self.work = work

    @property
    def planned(self) -> bool:
        return bool(self.work)

    def weight(self, stage: str) -> float:
        return self.work.get(stage, 0.0) if self.work else 1.0

    def _within(self) -> float:
        if self.current in self.ended:
            return 1.0
        return min(1.0, self.step / self.total) if self.total else 0.0

    def _done_work(self) -> float:
        done = sum(self.weight(s) for s in self.stages if s in self.ended)
        if self.current and self.current not in self.ended:
            done += self.weight(self.current) * self._within()
        return done

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]."""
        if self.succeeded:
            return 1.0
        total = sum(self.weight(s) for s in self.stages)
        return min(1.0, self._done_work() / total) if total > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left in the whole run as of the last event, or None when it cannot be told yet."""
        if self.succeeded:
            return 0.0
        current_left = None
        if self.current and self.current not in self.ended and self.total and self.stage_eta_s is not None:
            current_left = self.stage_eta_s
        if not self.work:
            return current_left  # no plan: only the backend's own estimate for this stage
        done = self._done_work()
        if self.t_start is None or self.t_last is None or done <= 0 or self.t_last <= self.t_start:
            return None
        pace = (self.t_last - self.t_start) / done  # seconds per planned second on this machine
        if current_left is None:
            current_left = (pace * self.weight(self.current) * (1.0 - self._within())
                            if self.current and self.current not in self.ended else 0.0)
        future = sum(self.weight(s) for s in self.stages if s not in self.ended and s != self.current)
        return current_left + pace * future
