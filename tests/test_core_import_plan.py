"""The bpy-free import plan: keys, names, loaded arrays, camera, scene timing, plate detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundle_factory import make_bundle
from genmojo_blender.core import camera as cam
from genmojo_blender.core import import_plan as ip
from genmojo_blender.core.bundle import BundleError


def _constant_value_at(keys, frame):
    """Value of a CONSTANT-interpolated, constant-extrapolated curve at ``frame``."""
    before = [v for f, v in keys if f <= frame]
    return before[-1] if before else keys[0][1]


@given(T=st.integers(1, 40))
def test_shape_key_weights_are_one_hot_per_frame(T):
    for frame in range(ip.FRAME_START, ip.FRAME_START + T):
        weights = [_constant_value_at(ip.shape_key_weight_keys(i, T), frame) for i in range(T)]
        assert weights == [1.0 if ip.blender_frame(i) == frame else 0.0 for i in range(T)]


def test_shape_key_names_follow_blender_frames():
    assert ip.shape_key_name(0) == "frame_0001"
    assert ip.blender_frame(0) == 1 and ip.blender_frame(9) == 10


def test_visibility_keys_only_on_changes():
    assert ip.visibility_keys([True, True, False, False, True]) == [(1, True), (3, False), (5, True)]
    assert ip.visibility_keys([True] * 3) == [(1, True)]


def test_srgb_to_linear():
    out = ip.srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0]))
    assert out[0] == 0 and out[-1] == pytest.approx(1)
    assert out[1] == pytest.approx(0.04045 / 12.92)
    assert out[2] == pytest.approx(0.21404, abs=1e-5)


def test_plan_from_factory_bundle(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=5, objects=2, gaussians=20, fps=12, preview=False)
    plan = ip.plan_import(b)
    assert plan.result_name == "shot" and plan.collection_name == "GenMOJO shot"
    assert plan.bundle_root == str(b.resolve())
    assert [o.name for o in plan.objects] == ["shot_object_001", "shot_object_002"]
    o = plan.objects[1]
    assert o.positions.shape == (5, 27, 3) and o.positions.dtype == np.float32
    assert np.allclose(o.positions[3] - o.positions[0], [0.3, 0, 0], atol=1e-6)
    assert np.allclose(o.scale, 0.03, atol=1e-6)
    assert o.colors_srgb.shape == (27, 3) and o.opacity.shape == (27,)
    s = plan.scene
    assert (s.width, s.height, s.fps, s.fps_base, s.frame_start, s.frame_end) == (64, 48, 12, 1.0, 1, 5)
    c = plan.camera
    assert c.static_pose and c.static_intrinsics
    assert np.allclose(c.local_matrices[0], cam.OPENCV_TO_BLENDER_CAMERA)
    assert np.allclose(c.quaternions[0], [0, 1, 0, 0])  # 180 degrees about x
    assert c.lens[0] == pytest.approx(0.5 * 48 / np.tan(np.deg2rad(49.1) / 2) * 36 / 64)
    assert (c.clip_start, c.clip_end) == (0.01, 100.0)
    assert plan.plate is not None and plan.plate.kind == "SEQUENCE" and not plan.plate.exists
    assert np.allclose(plan.root_matrix, cam.OPENCV_WORLD_TO_BLENDER)


def test_plate_detection(tmp_path):
    b = make_bundle(tmp_path, save_name="r", frames=3, preview=False)
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "JPEGImages" / "00000.png").write_bytes(b"png")
    plate = ip.plan_import(b).plate
    assert plate.exists and plate.path == str(tmp_path / "JPEGImages" / "00000.png")

    movie = tmp_path / "clip.mp4"
    movie.write_bytes(b"mp4")
    m = json.loads((b / "manifest.json").read_text())
    m["clip"]["source"] = str(movie)
    m["clip"]["frame_numbers"] = [10, 11, 12]
    (b / "manifest.json").write_text(json.dumps(m))
    plate = ip.plan_import(b).plate
    assert plate.kind == "MOVIE" and plate.exists and plate.frame_offset == 10 and plate.contiguous

    m["clip"]["frame_numbers"] = [0, 2, 4]
    m["clip"]["source"] = ""
    (b / "manifest.json").write_text(json.dumps(m))
    assert ip.plan_import(b).plate is None


def test_moving_camera_and_varying_intrinsics(tmp_path):
    b = make_bundle(tmp_path, save_name="r", frames=4, preview=False)
    with np.load(b / "camera.npz") as z:
        K, c2w = z["K"].copy(), z["c2w"].copy()
    c2w[:, 0, 3] = np.arange(4) * 0.5
    K[2, 0, 0] *= 1.5
    np.savez(b / "camera.npz", K=K, c2w=c2w)
    c = ip.plan_import(b).camera
    assert not c.static_pose and not c.static_intrinsics
    assert np.allclose(c.locations[:, 0], np.arange(4) * 0.5)
    assert c.lens[2] == pytest.approx(1.5 * c.lens[0])


def test_non_square_pixels_warn(tmp_path):
    b = make_bundle(tmp_path, save_name="r", frames=2, preview=False)
    with np.load(b / "camera.npz") as z:
        K, c2w = z["K"].copy(), z["c2w"].copy()
    K[:, 1, 1] *= 1.05
    np.savez(b / "camera.npz", K=K, c2w=c2w)
    assert any("fx and fy" in w for w in ip.plan_import(b).warnings)


def test_corrupt_bundle_raises(tmp_path):
    b = make_bundle(tmp_path, save_name="r", frames=3, preview=False)
    frames = b / "objects" / "002" / "frames.npz"
    frames.write_bytes(frames.read_bytes()[:100])
    with pytest.raises(BundleError, match="unreadable npz"):
        ip.plan_import(b)
    with pytest.raises(BundleError, match="not a GenMOJO result folder"):
        ip.plan_import(tmp_path / "nothing-here")
