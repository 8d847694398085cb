"""The optical-flow cache on disk and the pluggable estimator (CPU)."""

import numpy as np
import pytest

from backend.priors import flow as F


def moving_frames(T=3, h=48, w=64, step=2):
    rng = np.random.default_rng(0)
    tex = (rng.random((h, w + step * T)) * 255).astype(np.uint8)
    tex = np.repeat(tex[..., None], 3, -1)
    return np.stack([np.ascontiguousarray(tex[:, step * (T - t):step * (T - t) + w]) for t in range(T)])


class CountingDis(F.DisFlow):
    """DIS that counts its calls, so a test can tell a cache hit from a recomputation."""

    def __init__(self, preset="ultrafast"):
        super().__init__(preset)
        self.calls = 0

    def __call__(self, a, b):
        self.calls += 1
        return super().__call__(a, b)


def test_second_call_reads_the_cache(tmp_path):
    frames = moving_frames()
    pairs = [(0, 1), (1, 2)]
    est = CountingDis()
    first, hit1 = F.cached_flow(frames, pairs, tmp_path, estimator=est)
    calls = est.calls
    second, hit2 = F.cached_flow(frames, pairs, tmp_path, estimator=est)
    assert not hit1 and hit2 and calls == 4 and est.calls == calls  # forward and backward per pair, once
    np.testing.assert_array_equal(first.flow, second.flow)
    np.testing.assert_array_equal(first.valid, second.valid)
    assert second.method == "opencv-dis-ultrafast" and len(list(tmp_path.glob("flow-*.npz"))) == 1
    assert not list(tmp_path.glob(".flow-*"))  # no temporary file left behind
    direct = F.estimate_flow(frames, pairs, preset="ultrafast")
    np.testing.assert_array_equal(direct.flow, first.flow)


@pytest.mark.parametrize("change", ["content", "size", "pairs", "preset", "tolerance"])
def test_anything_the_flow_depends_on_changes_the_key(tmp_path, change):
    frames = moving_frames()
    pairs = [(0, 1), (1, 2)]
    F.cached_flow(frames, pairs, tmp_path, preset="ultrafast")
    kw = {"preset": "ultrafast"}
    if change == "content":
        frames = frames.copy()
        frames[0, 0, 0, 0] ^= 1
    elif change == "size":
        frames = np.ascontiguousarray(frames[:, :40])
    elif change == "pairs":
        pairs = [(0, 2)]
    elif change == "preset":
        kw["preset"] = "fast"
    else:
        kw["fb_abs"] = 0.7
    _, hit = F.cached_flow(frames, pairs, tmp_path, **kw)
    assert not hit and len(list(tmp_path.glob("flow-*.npz"))) == 2


def test_a_corrupt_entry_is_recomputed_and_an_unwritable_cache_only_warns(tmp_path):
    frames = moving_frames()
    pairs = [(0, 1)]
    F.cached_flow(frames, pairs, tmp_path, preset="ultrafast")
    (entry,) = tmp_path.glob("flow-*.npz")
    entry.write_bytes(b"garbage")
    notes = []
    again, hit = F.cached_flow(frames, pairs, tmp_path, preset="ultrafast", warn=notes.append)
    assert not hit and "unreadable flow cache" in notes[0] and again.flow.shape == (1, 48, 64, 2)
    _, hit = F.cached_flow(frames, pairs, tmp_path, preset="ultrafast")
    assert hit  # rewritten
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    notes = []
    res, hit = F.cached_flow(frames, pairs, blocker / "cache", preset="ultrafast", warn=notes.append)
    assert not hit and res.flow.shape == (1, 48, 64, 2) and "could not cache" in notes[0]


def test_a_custom_estimator_plugs_in():
    """Any FlowEstimator replaces DIS: a constant flow of +2 px in x is used and checked as is."""

    class Shift:
        name = "constant-shift"

        def __call__(self, a, b):
            f = np.zeros(a.shape[:2] + (2,), np.float32)
            f[..., 0] = 2.0 if np.array_equal(a, frames[0]) else -2.0
            return f

    frames = moving_frames(T=2)
    out = F.estimate_flow(frames, [(0, 1)], estimator=Shift())
    assert out.method == "constant-shift" and np.all(out.flow[0, ..., 0] == 2.0)
    assert out.valid[0, :, :-3].all() and not out.valid[0, :, -2:].any()  # lands outside frame b
    assert isinstance(F.make_flow_estimator("dis-fast"), F.DisFlow)
    with pytest.raises(ValueError, match="not supported yet"):
        F.make_flow_estimator(__file__)
    with pytest.raises(ValueError, match="unknown flow estimator"):
        F.make_flow_estimator("raft")


def test_the_pipeline_caches_flow_inside_the_output_folder(sample_clip_master, tmp_path):
    import io

    from backend import pipeline
    from backend.config import get_preset
    from backend.progress import Reporter

    cfg = get_preset("cpu-tiny")
    req = pipeline.RunRequest(data_dir=sample_clip_master / "JPEGImages", mask_dir=sample_clip_master / "Annotations",
                              out_dir=tmp_path, save_name="f", device="cpu")
    prep = pipeline.prepare(req, cfg)
    logs = []
    for _ in range(2):
        log = io.StringIO()
        cams, _, _ = pipeline.cameras_and_depths(prep, cfg, req)
        pipeline._targets(prep, cfg, cams, Reporter(pipeline.STAGES, out=io.StringIO(), log=log))
        logs.append(log.getvalue())
    assert "computed" in logs[0] and "from the cache" in logs[1]
    assert len(list((tmp_path / pipeline.FLOW_CACHE).glob("flow-*.npz"))) == 1
