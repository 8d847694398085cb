"""Property tests: randomly corrupted inputs and bundles only ever produce the documented errors.

Whatever hypothesis does to a clip, a masks folder, a camera file or a result bundle, the readers
either succeed or raise their own error type (InputError / BundleError) with a message — never an
unhandled exception, which in Blender would be a traceback instead of a report.
"""

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.errors import InputError
from backend.io.clip import load_clip
from backend.io.megasam import load_megasam
from bundle_factory import make_bundle
from genmojo_blender.core.bundle import BundleError, open_bundle

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


def _paths(d, prefix=()):
    """Every key path of a nested JSON value."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _read_everything(path):
    b = open_bundle(path)
    b.load_camera()
    for o in b.manifest.objects:
        b.load_frames(o)


@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_manifest_mutations_only_raise_bundle_errors(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("bundle")
    path = make_bundle(root, frames=3, objects=2, gaussians=10, preview=False)
    manifest = json.loads((path / "manifest.json").read_text())
    keys = list(_paths(manifest))
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.sampled_from(keys))
        parent = manifest
        try:
            for k in key[:-1]:
                parent = parent[k]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(key[-1], None)
            else:
                parent[key[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    (path / "manifest.json").write_text(json.dumps(manifest))
    try:
        _read_everything(path)
    except BundleError as e:
        assert str(e)


@SETTINGS
@given(target=st.sampled_from(["manifest.json", "camera.npz", "objects/001/frames.npz", "objects/002/frames.npz"]),
       cut=st.floats(0, 1), noise=st.binary(max_size=64), mode=st.sampled_from(["truncate", "garble", "replace"]))
def test_damaged_bundle_files_only_raise_bundle_errors(tmp_path_factory, target, cut, noise, mode):
    path = make_bundle(tmp_path_factory.mktemp("bundle"), frames=3, objects=2, gaussians=10, preview=False)
    f = path / target
    raw = f.read_bytes()
    at = int(cut * len(raw))
    if mode == "truncate":
        f.write_bytes(raw[:at])
    elif mode == "garble":
        f.write_bytes(raw[:at] + noise + raw[at + len(noise):])
    else:
        f.write_bytes(noise)
    try:
        _read_everything(path)
    except BundleError as e:
        assert str(e)


@SETTINGS
@given(data=st.data())
def test_damaged_clips_only_raise_input_errors(sample_clip_master, tmp_path_factory, data):
    clip = tmp_path_factory.mktemp("clip") / "clip"
    shutil.copytree(sample_clip_master, clip)
    files = sorted(p for p in clip.rglob("*.png"))
    for _ in range(data.draw(st.integers(1, 3))):
        f = data.draw(st.sampled_from(files))
        if not f.exists():
            continue
        action = data.draw(st.sampled_from(["bytes", "truncate", "delete", "rename", "blank", "resize"]))
        if action == "bytes":
            f.write_bytes(data.draw(st.binary(max_size=200)))
        elif action == "truncate":
            raw = f.read_bytes()
            f.write_bytes(raw[:data.draw(st.integers(0, len(raw)))])
        elif action == "delete":
            f.unlink()
        elif action == "rename":
            f.rename(f.with_name(data.draw(st.sampled_from(["x.png", "00099.png", "frame.PNG", "a00001.jpg"]))))
        else:
            import cv2

            h, w = (64, 64) if action == "blank" else (data.draw(st.integers(1, 80)), data.draw(st.integers(1, 80)))
            cv2.imwrite(str(f), np.zeros((h, w), np.uint8))
    try:
        c = load_clip(clip / "JPEGImages", clip / "Annotations")
        assert c.masks.any(axis=(1, 2, 3)).all()  # a loaded clip always has every object somewhere
    except InputError as e:
        assert str(e) and e.hint


@SETTINGS
@given(arrays=st.fixed_dictionaries({}, optional={
    "depths": st.sampled_from([np.ones((8, 4, 4)), np.ones((7, 4, 4)), np.zeros((8, 4, 4)), np.ones((8, 4)),
                               np.full((8, 4, 4), np.nan)]),
    "intrinsic": st.sampled_from([np.eye(3) * 10, np.eye(4), np.zeros((3, 3)), np.full((3, 3), np.inf)]),
    "cam_c2w": st.sampled_from([np.repeat(np.eye(4)[None], 8, 0), np.repeat(np.eye(4)[None], 3, 0),
                                np.ones((8, 4, 4)), np.zeros((8, 3, 4))]),
    "images": st.just(np.zeros((8, 4, 4, 3), np.uint8)),
}))
def test_damaged_camera_files_only_raise_input_errors(tmp_path_factory, arrays):
    f = tmp_path_factory.mktemp("cams") / "cams.npz"
    np.savez(f, **arrays)
    try:
        cams = load_megasam(f, 8, 16, 16)
        assert np.isfinite(cams.K).all() and (cams.depths > 0).all()
    except InputError as e:
        assert str(e) and e.hint


# --------------------------------------------------------------------------------------------
# hostile bundles: numbers, nesting, dtypes and sizes the reader refuses before doing the work

RAW_TOKENS = ["NaN", "-Infinity", "1e999", "9" * 5000, "-" + "7" * 40, "[" * 30000 + "]" * 30000,
              '{"a":' * 2000 + "0" + "}" * 2000, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"]


@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_hostile_manifest_text_only_raises_bundle_errors(tmp_path_factory, data):
    path = make_bundle(tmp_path_factory.mktemp("bundle"), frames=3, objects=2, gaussians=10, preview=False)
    manifest = json.loads((path / "manifest.json").read_text())
    keys = [k for k in _paths(manifest)]
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(keys))
        parent = manifest
        try:
            for k in key[:-1]:
                parent = parent[k]
            parent[key[-1]] = "@@HOLE@@"
            break
        except (KeyError, IndexError, TypeError):
            continue
    text = json.dumps(manifest).replace('"@@HOLE@@"', data.draw(st.sampled_from(RAW_TOKENS)), 1)
    (path / "manifest.json").write_text(text)
    try:
        _read_everything(path)
    except BundleError as e:
        assert str(path / "manifest.json") in str(e) or "manifest" in str(e)


HOSTILE_DTYPES = ["U5", "S3", "O", [("a", "f4"), ("b", "i2")], ("f4", (2,)), "c8", "?", "f2", "V4", "M8[s]",
                  "f16" if hasattr(np, "float128") else "c16", ">f4", "i8", "f8"]


@settings(SETTINGS, max_examples=120)
@given(target=st.sampled_from(["camera.npz:K", "camera.npz:c2w", "objects/001/frames.npz:means",
                               "objects/002/frames.npz:opacities"]),
       dtype=st.sampled_from(HOSTILE_DTYPES), reshape=st.sampled_from(["same", "flat", "extra", "empty"]),
       compress=st.booleans())
def test_hostile_array_dtypes_and_shapes_only_raise_bundle_errors(tmp_path_factory, target, dtype, reshape,
                                                                  compress):
    path = make_bundle(tmp_path_factory.mktemp("bundle"), frames=3, objects=2, gaussians=10, preview=False)
    file, name = target.split(":")
    with np.load(path / file) as z:
        arrays = {k: z[k] for k in z.files}
    good = arrays[name].shape
    shape = {"same": good, "flat": (int(np.prod(good)),), "extra": (*good, 1), "empty": (0, *good[1:])}[reshape]
    arrays[name] = a = np.zeros(shape, dtype=np.dtype(dtype))  # a sub-array dtype adds to the shape
    (np.savez_compressed if compress else np.savez)(path / file, **arrays)
    ok_dtype = a.dtype.kind in "fiu" and a.dtype.itemsize <= 8 and a.dtype.fields is None
    try:
        _read_everything(path)
        assert ok_dtype and a.shape == good
    except BundleError as e:
        assert str(path / file) in str(e)
        if not ok_dtype and a.shape == good:
            assert "dtype" in str(e)


def _npz_declaring(path, name, shape, payload_bytes, others, dtype="<f4"):
    """An npz whose member ``name`` declares ``shape`` and holds ``payload_bytes`` zero bytes (deflated:
    about 1 MiB on disk for hundreds of MiB inflated), beside the arrays ``others``."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
            chunk = bytes(1 << 20)
            for _ in range(payload_bytes >> 20):
                fh.write(chunk)
        for k, a in others.items():
            with zf.open(f"{k}.npy", "w") as fh:
                np.lib.format.write_array(fh, a)


@pytest.mark.parametrize("payload_mib, refusal", [
    (360, r"means inflates to 377487488 bytes, more than an array of shape \(3, 10, 3\) needs"),  # zip directory
    (0, r"means has shape \(3, 10000000, 3\), expected \(3, 10, 3\)"),  # the .npy header
])
def test_a_small_npz_declaring_a_big_wrong_array_is_refused_without_inflating_it(tmp_path, payload_mib, refusal):
    import tracemalloc

    path = make_bundle(tmp_path, frames=3, objects=1, gaussians=10, preview=False)
    frames = path / "objects/001/frames.npz"
    with np.load(frames) as z:
        others = {k: z[k] for k in z.files if k != "means"}
    _npz_declaring(frames, "means", (3, 10_000_000, 3), payload_mib << 20, others)
    assert frames.stat().st_size < 2 << 20  # about 1 MiB on disk
    b = open_bundle(path)
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=refusal):
            b.load_frames(b.manifest.objects[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated to refuse it"


def test_a_manifest_declaring_more_than_the_caps_is_refused_before_reading_arrays(tmp_path):
    from genmojo_blender.core import bounded_io
    from genmojo_blender.core.bundle import MAX_FRAMES

    path = make_bundle(tmp_path, frames=3, objects=1, gaussians=10, preview=False)
    manifest = json.loads((path / "manifest.json").read_text())
    T = MAX_FRAMES + 1
    big = dict(manifest, clip=dict(manifest["clip"], frame_names=[f"{i}.png" for i in range(T)],
                                   frame_numbers=list(range(T))))
    big["objects"] = [dict(o, visible=[True] * T) for o in manifest["objects"]]
    (path / "manifest.json").write_text(json.dumps(big))
    with pytest.raises(BundleError, match=f"expected 1 to {MAX_FRAMES} frames"):
        open_bundle(path)
    # within the frame cap, but frames x Gaussians beyond what one array may hold: refused at load, from the manifest
    T = 300
    huge = dict(manifest, clip=dict(manifest["clip"], frame_names=[f"{i}.png" for i in range(T)],
                                    frame_numbers=list(range(T))),
                objects=[dict(manifest["objects"][0], num_gaussians=10_000_000, visible=[True] * T)])
    (path / "manifest.json").write_text(json.dumps(huge))
    b = open_bundle(path)
    bounded = bounded_io.MAX_ARRAY_BYTES
    assert T * 10_000_000 * 3 * 4 > bounded
    with pytest.raises(BundleError, match="GiB a bundle array may have"):
        b.load_frames(b.manifest.objects[0])
    (path / "manifest.json").write_text(" " * (bounded_io.MAX_JSON_BYTES + 1))
    with pytest.raises(BundleError, match="larger than 16 MiB"):
        open_bundle(path)
