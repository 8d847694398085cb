"""Progress protocol: what the backend writes is what Blender decodes."""

import io
import json
import math

import pytest

from backend.progress import Reporter
from genmojo_blender.core.protocol import ProtocolError, RunState, decode_event, encode_event


def test_reporter_lines_decode_and_fold_into_run_state():
    out, log = io.StringIO(), io.StringIO()
    r = Reporter(["a", "b"], out=out, log=log)
    r.start(run_id="x", save_name="s")
    r.begin("a")
    r.end("a")
    r.begin("b")
    r.progress(5, 10, {"rgb": 0.5, "bad": math.nan}, every_s=0)
    state = RunState()
    for line in out.getvalue().splitlines():
        state.apply(decode_event(line))
    assert state.stages == ["a", "b"] and state.stage == "b"
    assert (state.step, state.total) == (5, 10)
    assert state.losses == {"rgb": 0.5}  # NaN travels as null and is dropped
    assert state.fraction == pytest.approx(0.75)
    assert "stage a" in log.getvalue() and out.getvalue().count("\n") == 5
    r.done("/tmp/result")
    state.apply(decode_event(out.getvalue().splitlines()[-1]))
    assert state.finished and state.bundle == "/tmp/result" and state.fraction == 1.0


def test_failure_event_carries_error_and_hint():
    ev = decode_event(encode_event("failed", error="bad mask", kind="input", hint="fix it"))
    state = RunState()
    state.apply(ev)
    assert (state.error, state.error_kind, state.hint, state.finished) == ("bad mask", "input", "fix it", True)


@pytest.mark.parametrize("line", [
    "hello", "{not json", json.dumps({"v": 2, "type": "done", "bundle": "x"}),
    json.dumps({"v": 1, "type": "nope"}), json.dumps({"v": 1, "type": "progress", "stage": "fit"}),
])
def test_decoder_rejects_foreign_lines(line):
    with pytest.raises(ProtocolError):
        decode_event(line)


def test_encoder_refuses_incomplete_events():
    with pytest.raises(ValueError):
        encode_event("done")
    with pytest.raises(ValueError):
        encode_event("failed", error="x", kind="weird")


def test_progress_is_rate_limited_but_last_step_always_sent():
    out = io.StringIO()
    r = Reporter(["fit"], out=out, log=io.StringIO())
    r.begin("fit")
    for s in range(1, 101):
        r.progress(s, 100, {}, every_s=60)
    lines = [decode_event(x) for x in out.getvalue().splitlines() if '"progress"' in x]
    assert [e.get("step") for e in lines] == [1, 100]


def test_a_reporter_with_no_interval_sends_every_step():
    """A caller that stops on a given step (tests, scripts) asks for every step, however fast they come."""
    out = io.StringIO()
    r = Reporter(["fit"], out=out, log=io.StringIO(), every_s=0)
    r.begin("fit")
    for s in range(1, 51):
        r.progress(s, 50, {})
    lines = [decode_event(x) for x in out.getvalue().splitlines() if '"progress"' in x]
    assert [e.get("step") for e in lines] == list(range(1, 51))


def test_forced_progress_steps_are_sent_despite_the_rate_limit():
    """Stage 1 forces each object's last step, so every object's final loss reaches the UI."""
    out = io.StringIO()
    r = Reporter(["objects"], out=out, log=io.StringIO())
    r.begin("objects")
    for s in range(1, 91):
        r.progress(s, 90, {}, every_s=60, force=s % 30 == 0)
    lines = [decode_event(x) for x in out.getvalue().splitlines() if '"progress"' in x]
    assert [e.get("step") for e in lines] == [1, 30, 60, 90]


def test_library_output_on_stdout_cannot_break_the_event_stream():
    """What libraries print (Python-level or straight to file descriptor 1) lands on stderr."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os; from backend.progress import claim_stdout; ev = claim_stdout(); "
            "print('gsplat: CUDA extension has been set up'); os.write(1, b'from C\\n'); "
            "ev.write('{\"type\": \"done\"}\\n')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"type": "done"}\n'
    assert "gsplat: CUDA extension has been set up" in r.stderr and "from C" in r.stderr


# --------------------------------------------------------------------------------------------
# the parser the UI uses never raises, on any input

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from genmojo_blender.core.protocol import EVENT_TYPES, MAX_COUNT, Event, Malformed, parse_line  # noqa: E402
from genmojo_blender.core.run_progress import RunProgress  # noqa: E402

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10**400, 10**400)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
_FIELDS = ["run_id", "save_name", "stages", "stage", "index", "total_stages", "status", "step", "total",
           "losses", "eta_s", "elapsed_s", "bundle", "error", "kind", "hint", "time", "work"]


@st.composite
def event_like_lines(draw):
    """JSON objects shaped like events (right version and type, any subset of fields with any values),
    plus the raw tokens JSON decoders trip over: NaN, Infinity, huge numbers, deep nesting."""
    d = {"v": draw(st.sampled_from([1, 1, 1, True, 1.0, "1", None])),
         "type": draw(st.sampled_from([*EVENT_TYPES, "other", 3]))}
    for k in draw(st.lists(st.sampled_from(_FIELDS), max_size=10, unique=True)):
        d[k] = draw(_values)
    text = json.dumps(d)
    raw = draw(st.sampled_from(["", "NaN", "-Infinity", "1e999", "9" * 5000, "[" * 50000 + "]" * 50000,
                                '{"a":' * 3000 + "1" + "}" * 3000, "1" * 30]))
    if raw and draw(st.booleans()):
        key = draw(st.sampled_from(_FIELDS))
        text = text[:-1] + f', "{key}": {raw}}}'
    return text


def _fold(line):
    parsed = parse_line(line)
    assert isinstance(parsed, (Event, Malformed))
    if isinstance(parsed, Malformed):
        assert parsed.reason and len(parsed.line) <= 200
        return
    state, progress = RunState(), RunProgress()
    state.apply(parsed)
    progress.apply(parsed)
    assert 0.0 <= state.fraction <= 1.0
    assert 0 <= state.step <= MAX_COUNT and 0 <= state.total <= MAX_COUNT



@settings(max_examples=600, deadline=None)
@given(line=event_like_lines())
def test_event_shaped_lines_decode_or_are_malformed_and_always_fold(line):
    _fold(line)


@settings(max_examples=300, deadline=None)
@given(line=st.text(max_size=200) | st.binary(max_size=50).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_never_raises(line):
    _fold(line)


def test_malformed_lines_say_why():
    for line, why in [('{"v":1,"type":"progress","stage":"fit","step":"3","total":9,"losses":{},"eta_s":1}',
                       "counts"),
                      ('{"v":1,"type":"done","bundle":["x"]}', "bundle"),
                      ('{"v":1,"type":"stage","stage":"a","index":0,"total_stages":2,"status":"begin",'
                       '"time":NaN}', "NaN"),
                      ('{"a":' * 100000, "nested too deeply"), ("x" * 2_000_000, "longer than any event"),
                      ('{"v":1,"type":"progress","stage":"fit","step":1,"total":1,"losses":{"a":1e999},"eta_s":1}',
                       "losses")]:
        parsed = parse_line(line)
        assert isinstance(parsed, Malformed) and why in parsed.reason, (line[:60], parsed)
    assert isinstance(parse_line(b"bytes"), Malformed)
