"""Property tests: randomly corrupted inputs and bundles only ever produce the documented errors.

Whatever hypothesis does to a clip, a masks folder, a camera file or a result bundle, the readers
either succeed or raise their own error type (InputError / BundleError) with a message — never an
unhandled exception, which in Blender would be a traceback instead of a report.
"""

import json
import shutil

import numpy as np
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
