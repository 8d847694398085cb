"""Checkpoints are checked before any heavy work: input contents, damage, foreign files, other versions.

Most cases call ``pipeline.prepare`` (which does no optimisation, loads no model and computes no flow)
on a checkpoint written by ``save_checkpoint`` with this run's own fingerprint, then damaged in one way;
one case goes through the command line for the exit code and the JSON ``failed`` event.
"""

import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from backend import checkpoint as ck
from backend import pipeline
from backend.config import get_preset
from backend.errors import InputError
from test_pipeline import backend, clip_args

ITERS = 40
CFG = get_preset("cpu-tiny")


def _request(clip, out, resume=True, overwrite=False):
    return pipeline.RunRequest(data_dir=clip / "JPEGImages", mask_dir=clip / "Annotations", out_dir=out,
                               save_name="x", device="cpu", iterations=ITERS, resume=resume, overwrite=overwrite)


def _payload(n=5):
    """A stage-1 checkpoint with one finished object of ``n`` Gaussians."""
    obj = {"means": torch.zeros(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
           "log_scales": torch.full((n, 3), -3.0), "color_logits": torch.zeros(n, 3), "opacity_logits": torch.zeros(n)}
    return {"stage1": [obj], "ref_sides": [40.0], "generator1": torch.Generator().manual_seed(0).get_state()}


@pytest.fixture
def saved(sample_clip, tmp_path):
    """(clip, out, checkpoint folder) with a valid checkpoint of this run."""
    out = tmp_path / "out"
    req = _request(sample_clip, out)
    folder = ck.checkpoint_dir(out, "x")
    ck.save_checkpoint(folder, _payload(), pipeline.run_fingerprint(req, CFG, ITERS), 0)
    return sample_clip, out, folder


def _refused(clip, out, *words, resume=True):
    with pytest.raises(InputError) as e:
        pipeline.prepare(_request(clip, out, resume=resume), CFG)
    text = f"{e.value} | {e.value.hint}"
    for w in words:
        assert w in text, text
    return e.value


def test_a_valid_checkpoint_is_read_in_prepare(saved):
    clip, out, _ = saved
    prep = pipeline.prepare(_request(clip, out), CFG)
    assert len(prep.resume_state["stage1"]) == 1 and prep.iterations == ITERS


def test_changed_input_contents_at_the_same_path_are_refused(sample_clip, tmp_path):
    """One mask pixel flipped; the file keeps its name, size and modification time: only its bytes differ."""
    mask = sorted((sample_clip / "Annotations" / "001").glob("*.png"))[3]
    pixels = np.array(Image.open(mask))
    Image.fromarray(pixels).save(mask, compress_level=0)  # stored uncompressed: the size only depends on the shape
    out = tmp_path / "out"
    folder = ck.checkpoint_dir(out, "x")
    ck.save_checkpoint(folder, _payload(), pipeline.run_fingerprint(_request(sample_clip, out), CFG, ITERS), 0)
    st = mask.stat()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(mask, compress_level=0)
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert mask.stat().st_size == st.st_size and mask.stat().st_mtime_ns == st.st_mtime_ns
    e = _refused(sample_clip, out, str(folder), "contents of --mask_dir", "different run", "--overwrite")
    assert "--data_dir" not in str(e)


def test_a_moved_clip_with_the_same_bytes_still_resumes(saved, tmp_path):
    clip, out, _ = saved
    moved = tmp_path / "elsewhere"
    shutil.copytree(clip, moved)
    assert len(pipeline.prepare(_request(moved, out), CFG).resume_state["stage1"]) == 1


def test_another_budget_or_option_is_refused(saved):
    clip, out, folder = saved
    req = pipeline.RunRequest(data_dir=clip / "JPEGImages", mask_dir=clip / "Annotations", out_dir=out,
                              save_name="x", device="cpu", iterations=ITERS + 1, resume=True)
    with pytest.raises(InputError, match="iterations differs"):
        pipeline.prepare(req, CFG)
    req = pipeline.RunRequest(data_dir=clip / "JPEGImages", mask_dir=clip / "Annotations", out_dir=out,
                              save_name="x", device="cpu", iterations=ITERS, resume=True, holdout=3)
    with pytest.raises(InputError, match="holdout differs"):
        pipeline.prepare(req, CFG)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_an_unreadable_state_is_refused(saved, damage):
    clip, out, folder = saved
    state = folder / ck.STATE_FILE
    data = state.read_bytes()
    state.write_bytes({"truncated": data[:len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    _refused(clip, out, str(state), "cannot be read", "without --resume")


def test_a_foreign_info_file_is_refused_and_kept(saved):
    clip, out, folder = saved
    (folder / ck.INFO_FILE).write_text(json.dumps({"hello": "world"}))
    _refused(clip, out, str(folder), "not a GenMOJO checkpoint", "without --resume")
    _refused(clip, out, "left a checkpoint", "--overwrite", resume=False)  # never discarded unasked
    assert (folder / ck.INFO_FILE).is_file() and (folder / ck.STATE_FILE).is_file()
    (folder / ck.INFO_FILE).write_text("{not json")
    _refused(clip, out, str(folder), "cannot be read")


def test_a_checkpoint_of_an_earlier_format_is_refused(saved):
    clip, out, folder = saved
    info = json.loads((folder / ck.INFO_FILE).read_text())
    (folder / ck.INFO_FILE).write_text(json.dumps(dict(info, version=1)))
    _refused(clip, out, str(folder), "format version 1", f"reads version {ck.VERSION}")
    # what the backend before format 2 wrote: no format key, paths instead of contents
    old = {"data_dir": str(clip), "mask_dir": str(clip), "cam_path": None, "config_sha256": "0" * 64,
           "preset": "cpu-tiny", "iterations": ITERS, "holdout": 0, "step": 0}
    (folder / ck.INFO_FILE).write_text(json.dumps(old))
    _refused(clip, out, str(folder), "earlier version of the backend")


def test_a_state_of_another_shape_is_refused(sample_clip, tmp_path):
    out = tmp_path / "out"
    req = _request(sample_clip, out)
    finger = pipeline.run_fingerprint(req, CFG, ITERS)
    folder = ck.checkpoint_dir(out, "x")
    bad = _payload()
    bad["stage1"][0]["quats"] = torch.zeros(5, 3)
    ck.save_checkpoint(folder, bad, finger, 0)
    _refused(sample_clip, out, str(folder), "quats has shape (5, 3)")
    too_many = _payload()
    too_many["stage1"] *= 4
    too_many["ref_sides"] *= 4
    ck.save_checkpoint(folder, too_many, finger, 0)
    _refused(sample_clip, out, "4 finished objects for a clip of 3")
    late = dict(_payload(), model={}, fit={"step": ITERS})
    ck.save_checkpoint(folder, late, finger, ITERS)
    _refused(sample_clip, out, "stage 2 started before every object")


def test_a_state_that_does_not_fit_the_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not fit the model") as e:
        with ck.restoring(tmp_path):
            torch.nn.Linear(2, 2).load_state_dict({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)})
    assert "--overwrite" in e.value.hint


def test_the_command_line_refuses_a_damaged_checkpoint_before_any_work(saved):
    clip, out, folder = saved
    (folder / ck.STATE_FILE).write_bytes(b"\x00" * 100)
    code, events, _ = backend(*clip_args(clip, out, "x"), "--preset", "cpu-tiny", "--device", "cpu",
                              "--iters", ITERS, "--resume")
    assert code == 2
    last = events[-1]
    assert last.type == "failed" and last.get("kind") == "input"
    assert str(folder) in last.get("error") and "--resume" in last.get("hint")
    assert not [e for e in events if e.type == "stage" and e.get("stage") == "init"]  # refused in validate
    assert (folder / ck.STATE_FILE).read_bytes() == b"\x00" * 100  # left as it was


def test_content_digest_reads_bytes_not_times(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.png").write_bytes(b"abc")
    (d / "sub" / "b.png").write_bytes(b"def")
    (d / ".DS_Store").write_bytes(b"finder")
    first = ck.content_digest(d)
    os.utime(d / "a.png", (1, 1))
    (d / ".DS_Store").write_bytes(b"other")  # hidden files are not inputs
    assert ck.content_digest(d) == first
    (d / "a.png").write_bytes(b"abd")
    assert ck.content_digest(d) != first
    (d / "a.png").write_bytes(b"abc")
    (d / "a.png").rename(d / "c.png")
    assert ck.content_digest(d) != first
    assert ck.content_digest(d / "c.png") == hashlib.sha256(b"abc").hexdigest()  # a file: its bytes


def test_stale_checkpoints_of_other_runs_are_listed_and_old_ones_removed(tmp_path):
    finger = {"inputs": {}, "settings": {}, "config_sha256": "0", "preset": "p", "iterations": 1}
    for name in ("old", "new", "own"):
        ck.save_checkpoint(ck.checkpoint_dir(tmp_path, name), {"x": torch.zeros(1)}, finger, 0)
    damaged = ck.checkpoint_dir(tmp_path, "junk")
    damaged.mkdir()
    (damaged / ck.INFO_FILE).write_text("{}")
    now = time.time()
    month = now - 40 * 86400
    for folder in (ck.checkpoint_dir(tmp_path, "old"), ck.checkpoint_dir(tmp_path, "own"), damaged):
        for f in folder.iterdir():
            os.utime(f, (month, month))
    lines = ck.tidy_checkpoints(tmp_path, ck.checkpoint_dir(tmp_path, "own"), 30, now=now)
    assert not ck.checkpoint_dir(tmp_path, "old").exists()
    assert ck.checkpoint_dir(tmp_path, "new").exists() and ck.checkpoint_dir(tmp_path, "own").exists()
    assert damaged.exists()
    text = "\n".join(lines)
    assert "removed" in text and "'old'" in text and "'new' (0.0 days old)" in text and "--resume" in text
    assert f"{damaged} cannot be resumed" in text
    assert "'own'" not in text
