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

``decode_event`` checks every line it accepts (field types, numbers finite and in range), so folding
its events into a ``RunState`` cannot fail; it raises only ``ProtocolError``. ``parse_line`` is the
total version the UI uses: any input gives an ``Event`` or a ``Malformed`` value, never an exception.
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
STAGE_STATUSES = ("begin", "end")
MAX_LINE_CHARS = 1024 * 1024  # a progress line is a few hundred characters; longer ones are not parsed
MAX_COUNT = 2 ** 53  # steps, totals and indices (integers a float holds exactly)
MAX_SHOWN_CHARS = 200  # how much of a malformed line is kept to show

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


def _refuse_constant(name: str) -> float:
    raise ProtocolError(f"{name} is not a JSON number")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT


def _is_number(v: Any) -> bool:
    """A finite float, or an integer a float holds exactly (a larger one would overflow ``float()``)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -MAX_COUNT <= v <= MAX_COUNT
    return isinstance(v, float) and math.isfinite(v)


def _brief(v: Any) -> str:
    """A short, safe rendering of a decoded value for a message (never recursive, never huge)."""
    if v is None or isinstance(v, (bool, float)) or (isinstance(v, int) and abs(v) <= MAX_COUNT):
        return repr(v)
    if isinstance(v, str):
        return repr(v[:40])
    return type(v).__name__


def _field_problem(t: str, d: dict) -> str:
    """What is wrong with the fields RunState reads from an event of type ``t``, or ""."""
    def opt_number(k: str) -> bool:
        return d.get(k) is None or _is_number(d[k])

    if not opt_number("time"):
        return "time is not a number"
    if t == "start":
        if not (isinstance(d["stages"], list) and all(isinstance(s, str) for s in d["stages"])):
            return "stages is not a list of names"
        if not (isinstance(d["run_id"], str) and isinstance(d["save_name"], str)):
            return "run_id and save_name must be text"
    elif t == "stage":
        if not isinstance(d["stage"], str) or d["status"] not in STAGE_STATUSES:
            return "stage must be a name and status begin or end"
        if not (_is_count(d["index"]) and _is_count(d["total_stages"])):
            return "index and total_stages must be counts"
    elif t == "progress":
        if not isinstance(d["stage"], str) or not (_is_count(d["step"]) and _is_count(d["total"])):
            return "stage must be a name, step and total counts"
        losses = d["losses"]
        if not (isinstance(losses, dict) and all(v is None or _is_number(v) for v in losses.values())):
            return "losses must map names to numbers"
        if not (opt_number("eta_s") and opt_number("elapsed_s")):
            return "eta_s and elapsed_s must be numbers"
    elif t == "done":
        if not isinstance(d["bundle"], str):
            return "bundle must be a path"
    elif t == "failed":
        if not (isinstance(d["error"], str) and isinstance(d["kind"], str)
                and (d.get("hint") is None or isinstance(d["hint"], str))):
            return "error, kind and hint must be text"
    return ""


def decode_event(line: str) -> Event:
    """Parse one stdout line. Raises ProtocolError (and nothing else) for anything that is not a
    valid event, so the values RunState reads are always of their documented types."""
    if not isinstance(line, str):
        raise ProtocolError(f"not a line of text: {type(line).__name__}")
    if len(line) > MAX_LINE_CHARS:
        raise ProtocolError(f"line of {len(line)} characters, longer than any event")
    line = line.strip()
    if not line.startswith("{"):
        raise ProtocolError(f"not a JSON object: {line[:80]!r}")
    try:
        data = json.loads(line, parse_constant=_refuse_constant)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError(f"nested too deeply: {line[:80]!r}") from None
    except ValueError as e:  # bad JSON, or numbers beyond the decoder's limits
        raise ProtocolError(f"bad JSON ({e}): {line[:80]!r}") from None
    if not isinstance(data, dict):
        raise ProtocolError("event is not a JSON object")
    v = data.get("v")
    if not (isinstance(v, int) and not isinstance(v, bool) and v == PROTOCOL_VERSION):
        raise ProtocolError(f"protocol version {_brief(v)}, expected {PROTOCOL_VERSION}")
    t = data.get("type")
    if not isinstance(t, str) or t not in EVENT_TYPES:
        raise ProtocolError(f"unknown event type {_brief(t)}")
    missing = [k for k in _REQUIRED[t] if k not in data]
    if missing:
        raise ProtocolError(f"{t} event lacks {missing}")
    problem = _field_problem(t, data)
    if problem:
        raise ProtocolError(f"{t} event: {problem}")
    return Event(type=t, data=data)


@dataclass(frozen=True)
class Malformed:
    """A stdout line that is not a valid event: what it started with and why it was not one."""

    line: str
    reason: str


def parse_line(line: Any) -> Event | Malformed:
    """``decode_event`` that never raises: a valid event, or ``Malformed`` for anything else (for the
    UI to show as a log line)."""
    try:
        return decode_event(line)
    except ProtocolError as e:
        text = line if isinstance(line, str) else repr(line)
        return Malformed(line=text[:MAX_SHOWN_CHARS], reason=str(e))


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
