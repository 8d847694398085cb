"""Bad values and bad files are refused up front with a clear error (issue #21), never a traceback.

Every class of bad input gets one test: config values (NaN, infinity, negative, out of range, wrong list
elements, unknown names) whether from a preset or ``--set``; numeric command-line flags; unparsable
command lines; camera, depth and background files that are empty, truncated, foreign, of an odd dtype
or shape; a damaged flow cache entry (recomputed, not fatal); and a disk that cannot take the result.
Refusals through ``python -m backend`` end with a JSON ``failed`` event and exit code 2, and leave the
output folder as it was.
"""

import dataclasses
import errno
import json
import math
import resource
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import config as C
from backend.errors import InputError, storage_error
from backend.io.background import load_background_image
from backend.io.megasam import load_megasam
from backend.priors import depth as D
from backend.priors import flow as F
from conftest import ROOT
from genmojo_blender.core.protocol import decode_event
from test_flow_cache import CountingDis, moving_frames
from test_pipeline import clip_args

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fields():
    """(section, field name, default) of every config field; section "" for Config's own."""
    cfg = C.Config()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                yield f.name, g.name, getattr(value, g.name)
        else:
            yield "", f.name, value


def _key(section, name):
    return f"{section}.{name}" if section else name


FIELDS = list(_fields())
FLOAT_FIELDS = [_key(s, n) for s, n, d in FIELDS
                if C.field_check(s, n, d).kind is float and C.field_check(s, n, d).length is None]
TUPLE_FLOAT_FIELDS = [(_key(s, n), len(d)) for s, n, d in FIELDS
                      if C.field_check(s, n, d).kind is float and C.field_check(s, n, d).length]
NON_NEGATIVE = [_key(s, n) for s, n, d in FIELDS
                if C.field_check(s, n, d).kind in (int, float) and C.field_check(s, n, d).lo is not None
                and C.field_check(s, n, d).lo >= 0 and C.field_check(s, n, d).length is None
                and not C.field_check(s, n, d).extra]
CHOICE_FIELDS = [(_key(s, n), C.field_check(s, n, d).choices) for s, n, d in FIELDS if C.field_check(s, n, d).choices]


# ---------------------------------------------------------------------------------------------
# config values


def test_every_config_field_has_a_declared_check_and_every_preset_passes():
    missing = [_key(s, n) for s, n, _ in FIELDS if n not in C.FIELD_CHECKS.get(s, {})]
    assert missing == [], f"add these fields to config.FIELD_CHECKS: {missing}"
    for name, preset in C.PRESETS.items():
        assert C.validate(preset) is preset, name


def test_the_allowed_names_are_the_ones_the_code_understands():
    """Each enum-like field's allowed set is the set its module accepts."""
    from backend import pipeline
    from backend.kernels import KERNEL_BACKENDS
    from backend.model.object_camera import REFERENCE_CAMERAS
    from backend.optim.stage2 import SCALE_INITS
    from backend.priors import sds, zero123
    from backend.priors.camera_solve import CAMERA_MODELS

    choices = dict(CHOICE_FIELDS)
    assert set(choices["method"]) == set(pipeline.METHODS)
    assert set(choices["kernels"]) == set(KERNEL_BACKENDS)
    assert set(choices["stage1.reference_camera"]) == set(REFERENCE_CAMERAS)
    assert set(choices["stage2.scale_init"]) == set(SCALE_INITS)
    assert set(choices["stage2.flow_preset"]) == set(F.FLOW_PRESETS)
    assert set(choices["sds.variant"]) == {"auto", *sds.VARIANTS}
    assert set(choices["sds.dtype"]) == set(zero123.DTYPES)
    assert set(choices["sds.compile"]) == set(zero123.COMPILE_MODES)
    assert set(choices["sds.vae_attention"]) == set(zero123.VAE_ATTENTIONS)
    assert set(choices["camera_solve.camera_model"]) == set(CAMERA_MODELS)


@SETTINGS
@given(key=st.sampled_from(FLOAT_FIELDS), bad=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]))
def test_any_float_override_that_is_not_finite_is_refused(key, bad):
    cfg = C.parse_assignment(C.get_preset("lite"), f"{key}={bad}")
    with pytest.raises(InputError, match=f"^{key}( \\(--[a-z_]+\\))? (nan|inf|-inf): must be "):
        C.validate(cfg)


@SETTINGS
@given(key=st.sampled_from(NON_NEGATIVE), value=st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
def test_any_negative_value_where_it_means_nothing_is_refused(key, value):
    section, _, name = key.rpartition(".")
    kind = C.field_check(section, name, None).kind
    text = str(int(math.floor(value))) if kind is int else repr(value)
    with pytest.raises(InputError, match=f"^{key}"):
        C.validate(C.parse_assignment(C.get_preset("full"), f"{key}={text}"))


@SETTINGS
@given(item=st.sampled_from(TUPLE_FLOAT_FIELDS), pos=st.integers(0, 2),
       bad=st.sampled_from(["NaN", "Infinity", '"a"', "null", "[1]", "true"]))
def test_a_bad_element_in_a_list_value_is_refused(item, pos, bad):
    key, n = item
    values = ["0.1"] * n
    values[pos % n] = bad
    cfg = C.parse_assignment(C.get_preset("lite"), f"{key}=[{','.join(values)}]")
    with pytest.raises(InputError, match=f"^{key} .*: must be a list of {n} values"):
        C.validate(cfg)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4), max_leaves=6)


@SETTINGS
@given(field=st.sampled_from([_key(s, n) for s, n, _ in FIELDS]), value=json_values)
def test_any_override_is_either_accepted_as_valid_or_refused_with_the_field_named(field, value):
    """Whatever JSON value --set gives any field, the result is a config every check accepts, or a
    ValueError/InputError naming the field: never another exception."""
    text = f"{field}={json.dumps(value)}"
    try:
        cfg = C.validate(C.parse_assignment(C.get_preset("lite"), text))
    except (ValueError, InputError) as e:
        assert field in str(e)
        return
    section, _, name = field.rpartition(".")
    v = getattr(getattr(cfg, section) if section else cfg, name)
    assert C.field_check(section, name, v).accepts(v)


@pytest.mark.parametrize("text, message", [
    ("deformation.grid_resolutions=[8,0]", "each an integer >= 1"),
    ("deformation.grid_resolutions=[8,1.5]", "each an integer >= 1"),
    ("deformation.grid_resolutions=[]", "one or more values"),
    ("sds.stage1_t_range=[0.9,0.1]", "in increasing order"),
    ("sds.stage2_t_range=[0.1,1.5]", r"each a finite number in \[0, 1\]"),
    ("sds.polar_range_deg=[-30,30,5]", "a list of 2 values"),
    ("sds.stage2_render_sizes=[48,48,0]", "each an integer >= 8"),
    ("stage2.knn=0", "an integer >= 1"),
    ("stage2.instance_start=1.5", r"in \[0, 1\]"),
    ("init.opacity=1", r"in \(0, 1\)"),
    ("sds.image_size=100", "a multiple of 8"),
    ("camera.fovy_deg=180", r"in \(0, 180\)"),
    ("camera_solve.num_threads=0", r"\(or -1\)"),
    ("seed=-1", "seed \\(--seed\\) -1"),
    ("sds.model=", "a non-empty string"),
    ("camera.far=0.001", "camera.near 0.01 must be below camera.far 0.001"),
    ("input.max_frames=1", "input.max_frames 1: must be an integer >= 2"),
])
def test_out_of_range_values_are_refused_naming_the_field_and_the_range(text, message):
    with pytest.raises(InputError, match=message) as e:
        C.validate(C.parse_assignment(C.get_preset("cpu-tiny"), text))
    assert text.partition("=")[0] in str(e.value) and e.value.hint


@pytest.mark.parametrize("key, choices", CHOICE_FIELDS)
def test_enum_like_strings_are_checked_against_their_set(key, choices):
    base = C.get_preset("lite")
    for good in choices:
        C.validate(C.parse_assignment(base, f"{key}={good}"))
    with pytest.raises(InputError, match=f"{key} 'bogus' is unknown") as e:
        C.validate(C.parse_assignment(base, f"{key}=bogus"))
    assert all(c in e.value.hint for c in choices)


# ---------------------------------------------------------------------------------------------
# through the command line: a failed event, exit 2, the output folder as it was


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def run_refused(args, out):
    """Run ``python -m backend`` over an output folder holding an earlier result; return its failed event
    after checking the exit code, that stdout is only events ending in ``failed``, and the folder untouched."""
    (out / "run").mkdir(parents=True, exist_ok=True)
    (out / "run" / "manifest.json").write_text('{"earlier": "result"}')
    before = _snapshot(out)
    p = subprocess.run([sys.executable, "-m", "backend", *map(str, args), "--overwrite"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    events = [decode_event(line) for line in p.stdout.splitlines()]
    assert events and events[-1].type == "failed" and events[-1].get("kind") == "input", p.stdout
    assert events[-1].get("hint")
    assert not any(e.type == "stage" and e.get("stage") in ("objects", "fit") for e in events)
    assert _snapshot(out) == before
    return events[-1]


@pytest.mark.parametrize("extra, message", [
    (["--fps", "abc"], "argument --fps: invalid float value: 'abc'"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["--set", "nonsense.x=1"], "no config section 'nonsense'"),
    (["--set", "stage2.knn=1.5"], "--set stage2.knn: expected int"),
    (["--set", "stage2.w_rigid=NaN"], "stage2.w_rigid nan: must be a finite number >= 0"),
    (["--set", "stage2.w_flow=-1"], "stage2.w_flow -1.0: must be a finite number >= 0"),
    (["--set", "deformation.grid_resolutions=[8,\"x\"]"], "deformation.grid_resolutions [8, \"x\"]"),
    (["--fps", "nan"], "--fps nan: must be a frame rate"),
    (["--fps", "-24"], "--fps -24.0: must be a frame rate"),
    (["--fps", "inf"], "--fps inf: must be a frame rate"),
    (["--iters", "0"], "--iters 0: must be at least 1"),
    (["--checkpoint_every", "-5"], "--checkpoint_every -5: must be 0 or more"),
    (["--progress_every_s", "nan"], "--progress_every_s must be 0 or more, not nan"),
    (["--seed", "-1"], "seed (--seed) -1"),
    (["--focal_px", "nan"], "camera.focal_px (--focal_px) nan"),
    (["--holdout", "1"], "--holdout 1: must be 0 (none) or at least 2"),
    (["--lite", "--preset", "full"], "--lite conflicts with --preset full"),
])
def test_every_command_line_refusal_ends_with_a_failed_event(sample_clip, tmp_path, extra, message):
    failed = run_refused([*clip_args(sample_clip, tmp_path / "out"), "--preset", "cpu-tiny", *extra], tmp_path / "out")
    assert message in failed.get("error")


def test_a_missing_required_flag_is_a_failed_event_too(tmp_path):
    failed = run_refused(["--data_dir", "clip", "--out_dir", tmp_path / "out"], tmp_path / "out")
    assert "the following arguments are required: --mask_dir, --save_name" in failed.get("error")


def test_a_library_caller_gets_the_same_checks_in_prepare(sample_clip, tmp_path):
    from backend.pipeline import RunRequest, prepare

    req = RunRequest(data_dir=sample_clip / "JPEGImages", mask_dir=sample_clip / "Annotations",
                     out_dir=tmp_path / "out", save_name="run", device="cpu")
    with pytest.raises(InputError, match="stage2.w_rigid nan"):
        prepare(req, C.parse_assignment(C.get_preset("cpu-tiny"), "stage2.w_rigid=NaN"))
    with pytest.raises(InputError, match="--fps nan"):
        prepare(dataclasses.replace(req, fps=float("nan")), C.get_preset("cpu-tiny"))
    with pytest.raises(InputError, match="--iters 0: must be at least 1"):
        prepare(dataclasses.replace(req, iterations=0), C.get_preset("cpu-tiny"))
    assert not (tmp_path / "out" / "run").exists()


# ---------------------------------------------------------------------------------------------
# camera files (--cam_path)


def _cameras(T=8, h=32, w=32, **over):
    arrays = dict(depths=np.full((T, h, w), 5.0, np.float32), intrinsic=np.diag([40.0, 40.0, 1.0]),
                  cam_c2w=np.repeat(np.eye(4)[None], T, 0))
    arrays.update(over)
    return arrays


def _npz_bytes(tmp_path, **arrays):
    path = tmp_path / "tmp_arrays.npz"
    np.savez(path, **arrays)
    data = path.read_bytes()
    path.unlink()
    return data


CAMERA_FILES = {
    "empty": (lambda tp: b"", "the file is empty (0 bytes)"),
    "truncated": (lambda tp: _npz_bytes(tp, **_cameras())[:3000], "not a readable npz, or truncated"),
    "cut at the end": (lambda tp: _npz_bytes(tp, **_cameras())[:-40], "not a readable npz, or truncated"),
    "text": (lambda tp: b"frame,fx,fy\n0,1,2\n", "not a readable npz"),
    "single npy": (lambda tp: _npy(tp / "one.npy", np.ones(3)), "holds a single array, not an npz archive"),
    "object depths": (lambda tp: _npz_bytes(tp, **_cameras(depths=np.ones((8, 32, 32), object))),
                      "Object arrays cannot be loaded"),
    "string depths": (lambda tp: _npz_bytes(tp, **_cameras(depths=np.full((8, 32, 32), "5"))),
                      "depths holds <U1 values, expected floating-point numbers"),
    "complex depths": (lambda tp: _npz_bytes(tp, **_cameras(depths=np.full((8, 32, 32), 5 + 1j, np.complex64))),
                       "depths holds complex64 values, expected floating-point numbers"),
    "integer poses": (lambda tp: _npz_bytes(tp, **_cameras(cam_c2w=np.repeat(np.eye(4, dtype=int)[None], 8, 0))),
                      "cam_c2w holds int64 values, expected floating-point numbers"),
    "empty depth maps": (lambda tp: _npz_bytes(tp, **_cameras(w=0)), "depths has shape (8, 32, 0)"),
    "NaN depth": (lambda tp: _npz_bytes(tp, **_cameras(depths=np.full((8, 32, 32), np.nan, np.float32))),
                  "depths contains NaN or infinity"),
    "wrong pose shape": (lambda tp: _npz_bytes(tp, **_cameras(cam_c2w=np.zeros((8, 3, 4)))),
                         "cam_c2w has shape (8, 3, 4)"),
}


@pytest.mark.parametrize("case", sorted(CAMERA_FILES))
def test_bad_camera_files_are_refused_naming_the_file(tmp_path, case):
    make, message = CAMERA_FILES[case]
    path = tmp_path / "cams.npz"
    path.write_bytes(make(tmp_path))
    with pytest.raises(InputError) as e:
        load_megasam(path, 8, 64, 64)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and e.value.hint


def test_a_bad_camera_file_stops_the_command_before_any_work(sample_clip, tmp_path):
    cams = tmp_path / "cams.npz"
    cams.write_bytes(b"")
    failed = run_refused([*clip_args(sample_clip, tmp_path / "out"), "--preset", "cpu-tiny", "--cam_path", cams],
                         tmp_path / "out")
    assert f"{cams}: the file is empty" in failed.get("error")


# ---------------------------------------------------------------------------------------------
# depth maps (--depth_dir)


def _png16(path, h=24, w=32):
    cv2.imwrite(str(path), np.full((h, w), 3000, np.uint16))
    return path.read_bytes()


def _npy(path, a):
    np.save(path, a)
    return path.read_bytes()


DEPTH_FILES = {
    "empty npy": (".npy", lambda p: b"", "the depth map is empty (0 bytes)"),
    "empty png": (".png", lambda p: b"", "the depth map is empty (0 bytes)"),
    "truncated npy": (".npy", lambda p: _npy(p, np.ones((24, 32), np.float32))[:200], "not a readable npy file"),
    "truncated png": (".png", lambda p: _png16(p)[:60], "cannot be read as a depth map"),
    "complex npy": (".npy", lambda p: _npy(p, np.ones((24, 32), np.complex64)), "one real number per pixel"),
    "bool npy": (".npy", lambda p: _npy(p, np.ones((24, 32), bool)), "one real number per pixel"),
    "string npy": (".npy", lambda p: _npy(p, np.full((24, 32), "3")), "one real number per pixel"),
    "object npy": (".npy", lambda p: _npy(p, np.ones((24, 32), object)), "not a readable npy file"),
    "a volume": (".npy", lambda p: _npy(p, np.ones((2, 24, 32, 2), np.float32)), "got shape (2, 24, 32, 2)"),
    "another aspect ratio": (".png", lambda p: _png16(p, h=32, w=32), "the depth map is 32x32, the clip 16x12"),
    "no known value": (".npy", lambda p: _npy(p, np.full((24, 32), np.nan, np.float32)), "has no positive value"),
}


@pytest.mark.parametrize("case", sorted(DEPTH_FILES))
def test_bad_depth_maps_are_refused_naming_the_file(tmp_path, case):
    ext, make, message = DEPTH_FILES[case]
    folder = tmp_path / "depth"
    folder.mkdir()
    _png16(folder / "00000.png")
    bad = folder / f"00001{ext}"
    data = make(bad)
    bad.write_bytes(data)
    with pytest.raises(InputError) as e:
        D.load_depth_folder(folder, [0, 1], width=16, height=12)
    assert str(bad) in str(e.value) and message in str(e.value) and e.value.hint


# ---------------------------------------------------------------------------------------------
# the background image (--bg_path)


def _image_bytes(ext, h=32, w=32):
    rng = np.random.default_rng(1)
    ok, data = cv2.imencode(ext, (rng.random((h, w, 3)) * 255).astype(np.uint8))
    assert ok
    return data.tobytes()


BACKGROUND_FILES = {
    "empty": lambda: b"",
    "truncated png": lambda: _image_bytes(".png")[:200],
    "truncated jpg": lambda: _image_bytes(".jpg")[:400],
    "not an image": lambda: b"GIMP project, not exported",
}


@pytest.mark.parametrize("case", sorted(BACKGROUND_FILES))
def test_bad_background_images_are_refused_naming_the_file(tmp_path, case):
    path = tmp_path / ("bg.jpg" if "jpg" in case else "bg.png")
    path.write_bytes(BACKGROUND_FILES[case]())
    with pytest.raises(InputError) as e:
        load_background_image(path, (64, 64), (32, 32))
    assert str(e.value).startswith(f"{path}: ") and e.value.hint


def test_a_complete_background_image_still_loads(tmp_path):
    for ext in (".png", ".jpg"):
        (tmp_path / f"bg{ext}").write_bytes(_image_bytes(ext))
        assert load_background_image(tmp_path / f"bg{ext}", (64, 64), (16, 16)).shape == (16, 16, 3)


# ---------------------------------------------------------------------------------------------
# the flow cache: a damaged entry is recomputed and rewritten, never fatal


def _damage(kind, entry, frames):
    good = entry.read_bytes()
    P, H, W = 1, *frames.shape[1:3]
    if kind == "empty":
        entry.write_bytes(b"")
    elif kind == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif kind == "cut at the end":
        entry.write_bytes(good[:-20])
    elif kind == "bytes overwritten":
        entry.write_bytes(good[:100] + b"\0" * 200 + good[300:])
    elif kind == "float64 flow":
        np.savez(entry, pairs=np.array([[0, 1]]), flow=np.zeros((P, H, W, 2)), valid=np.ones((P, H, W), bool),
                 method="opencv-dis-ultrafast")
    elif kind == "wrong shape":
        np.savez(entry, pairs=np.array([[0, 1]]), flow=np.zeros((P, H, W - 1, 2), np.float32),
                 valid=np.ones((P, H, W - 1), bool), method="opencv-dis-ultrafast")
    elif kind == "non-finite flow":
        np.savez(entry, pairs=np.array([[0, 1]]), flow=np.full((P, H, W, 2), np.nan, np.float32),
                 valid=np.ones((P, H, W), bool), method="opencv-dis-ultrafast")
    elif kind == "missing array":
        np.savez(entry, pairs=np.array([[0, 1]]), flow=np.zeros((P, H, W, 2), np.float32))
    elif kind == "a single npy":
        entry.write_bytes(_npy(entry.with_suffix(".npy"), np.zeros(3)))


@pytest.mark.parametrize("kind", ["empty", "truncated", "cut at the end", "bytes overwritten", "float64 flow",
                                  "wrong shape", "non-finite flow", "missing array", "a single npy"])
def test_a_damaged_flow_cache_entry_is_logged_recomputed_and_rewritten(tmp_path, kind):
    frames = moving_frames()
    fresh, _ = F.cached_flow(frames, [(0, 1)], tmp_path, preset="ultrafast")
    (entry,) = tmp_path.glob("flow-*.npz")
    _damage(kind, entry, frames)
    notes, dis = [], CountingDis()
    again, hit = F.cached_flow(frames, [(0, 1)], tmp_path, estimator=dis, warn=notes.append)
    assert not hit and dis.calls == 2 and len(notes) == 1 and str(entry) in notes[0] and "recomputing" in notes[0]
    np.testing.assert_array_equal(again.flow, fresh.flow)
    np.testing.assert_array_equal(again.valid, fresh.valid)
    dis = CountingDis()
    third, hit = F.cached_flow(frames, [(0, 1)], tmp_path, estimator=dis)
    assert hit and dis.calls == 0 and third.flow.dtype == np.float32  # the entry was rewritten whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz") == [entry.name]


# ---------------------------------------------------------------------------------------------
# a disk that cannot take the result


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free space on the disk"), (errno.EDQUOT, "free space"),
                                       (errno.EFBIG, "free space"), (errno.EROFS, "make"),
                                       (errno.EACCES, "writable")])
def test_storage_failures_name_the_folder_and_what_to_do(tmp_path, code, fix):
    e = OSError(code, "no good", str(tmp_path / "out" / "run.staging" / "objects.npz"))
    refusal = storage_error(e, tmp_path / "out")
    assert isinstance(refusal, InputError)
    assert str(refusal).startswith(str(tmp_path / "out" / "run.staging" / "objects.npz"))
    assert fix in refusal.hint and "--out_dir" in refusal.hint
    assert storage_error(OSError(errno.ENOSPC, "full"), tmp_path / "out").args[0].startswith(str(tmp_path / "out"))


def test_other_errors_are_not_taken_for_storage_failures(tmp_path):
    assert storage_error(OSError(errno.ENOENT, "gone"), tmp_path) is None
    assert storage_error(ValueError("bug"), tmp_path) is None
    assert storage_error(OSError("no errno"), tmp_path) is None


def _limit_file_size():
    """In the child: no file may grow past 20 kB (writes past it fail with EFBIG, as on a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_disk_too_small_for_the_result_is_a_clear_error_and_the_old_result_stays(sample_clip, tmp_path):
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "manifest.json").write_text('{"earlier": "result"}')
    p = subprocess.run([sys.executable, "-m", "backend", *map(str, clip_args(sample_clip, out)), "--overwrite",
                        "--preset", "cpu-tiny", "--device", "cpu", "--method", "skeleton", "--iters", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size)
    events = [decode_event(line) for line in p.stdout.splitlines()]
    assert p.returncode == 2, p.stderr
    failed = events[-1]
    assert failed.type == "failed" and failed.get("kind") == "input", p.stderr
    assert str(out) in failed.get("error") and "File too large" in failed.get("error")
    assert "--out_dir" in failed.get("hint") and "free space" in failed.get("hint")
    assert (out / "run" / "manifest.json").read_text() == '{"earlier": "result"}'
    assert sorted(q.name for q in (out / "run").iterdir()) == ["manifest.json"]
    assert not [q for q in out.iterdir() if q.name.startswith("run") and q.name != "run"]  # no partial result
