"""The backend's progress protocol: one JSON object per line on stdout.

The backend emits these events and Blender (or any script) reads them; human-readable logs go to
stderr and are never mixed in. Standard library only, shared by both sides. Documented in
``docs/progress-protocol.md``.

Every event carries ``"v"`` (protocol version), ``"type"`` and ``"time"`` (Unix seconds). Types:

- ``start``     run_id, save_name, out_dir, stages (ordered list of stage names), device, preset
- ``stage``     stage, index (0-based position in ``stages``), total_stages, status ("begin"|"end")
- ``progress``  stage, step (1-based), total, losses (name -> float), elapsed_s, eta_s
- ``done``      bundle (absolute path of the finished result folder), elapsed_s
- ``failed``    error (one-line message), kind ("input"|"cancelled"|"internal"), hint (what to do)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
EVENT_TYPES = ("start", "stage", "progress", "done", "failed")
FAILURE_KINDS = ("input", "cancelled", "internal")

_REQUIRED: dict[str, tuple[str, ...]] = {
    "start": ("run_id", "save_name", "stages"),
    "stage": ("stage", "index", "total_stages", "status"),
    "progress": ("stage", "step", "total", "losses", "eta_s"),
    "done": ("bundle",),
    "failed": ("error", "kind"),
}


class ProtocolError(ValueError):
    """A line on the backend's stdout is not a valid progress event."""


def _clean(value: Any) -> Any:
    """JSON cannot carry NaN/inf; send them as null so every line stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode_event(type_: str, **fields: Any) -> str:
    """One event as a single JSON line (no trailing newline)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    missing = [k for k in _REQUIRED[type_] if k not in fields]
    if missing:
        raise ValueError(f"{type_} event needs {missing}")
    if type_ == "failed" and fields["kind"] not in FAILURE_KINDS:
        raise ValueError(f"failure kind must be one of {FAILURE_KINDS}")
    event = {"v": PROTOCOL_VERSION, "type": type_, "time": round(time.time(), 3)}
    event.update(_clean(fields))
    return json.dumps(event, allow_nan=False, separators=(",", ":"))


@dataclass
class Event:
    """A decoded event; ``data`` holds every field of the line."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def decode_event(line: str) -> Event:
    """Parse one stdout line. Raises ProtocolError for anything that is not a valid event."""
    line = line.strip()
    if not line.startswith("{"):
        raise ProtocolError(f"not a JSON object: {line[:80]!r}")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"bad JSON ({e}): {line[:80]!r}") from e
    if not isinstance(data, dict):
        raise ProtocolError("event is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    t = data.get("type")
    if t not in EVENT_TYPES:
        raise ProtocolError(f"unknown event type {t!r}")
    missing = [k for k in _REQUIRED[t] if k not in data]
    if missing:
        raise ProtocolError(f"{t} event lacks {missing}")
    return Event(type=t, data=data)


@dataclass
class RunState:
    """Everything a UI needs to show about a run, folded from its events."""

    stages: list[str] = field(default_factory=list)
    stage: str = ""
    stage_index: int = 0
    step: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None
    bundle: str = ""
    error: str = ""
    error_kind: str = ""
    hint: str = ""
    finished: bool = False

    def apply(self, ev: Event) -> None:
        if ev.type == "start":
            self.stages = [str(s) for s in ev.get("stages", [])]
        elif ev.type == "stage":
            self.stage = str(ev.get("stage"))
            self.stage_index = int(ev.get("index", 0))
            if ev.get("status") == "begin":
                self.step, self.total = 0, 0
        elif ev.type == "progress":
            self.stage = str(ev.get("stage"))
            self.step, self.total = int(ev.get("step", 0)), int(ev.get("total", 0))
            self.losses = {k: v for k, v in (ev.get("losses") or {}).items() if isinstance(v, (int, float))}
            eta = ev.get("eta_s")
            self.eta_s = float(eta) if isinstance(eta, (int, float)) else None
        elif ev.type == "done":
            self.bundle = str(ev.get("bundle"))
            self.finished = True
        elif ev.type == "failed":
            self.error = str(ev.get("error"))
            self.error_kind = str(ev.get("kind"))
            self.hint = str(ev.get("hint") or "")
            self.finished = True

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]: finished stages plus the fraction of the current one."""
        n = max(len(self.stages), 1)
        within = (self.step / self.total) if self.total else 0.0
        if self.finished and not self.error:
            return 1.0
        return min(1.0, (self.stage_index + within) / n)
