"""Camera and axis maths of core/camera.py (no Blender; the Blender-side check is in
test_blender_import.py, which projects points with Blender's own camera model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genmojo_blender.core import camera as cam


def _blender_pinhole_project(lens, shift_x, shift_y, sensor_width, W, H, M_cam, points):
    """Blender's HORIZONTAL-fit camera model written from its definition (not from core/camera.py):
    the sensor width spans the image width; shift moves the frame by a fraction of that width;
    the camera looks down -Z with +Y up. Returns pixel coordinates, v downwards."""
    w2c = np.linalg.inv(M_cam)
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    x_mm = -p[:, 0] / p[:, 2] * lens  # image plane at distance ``lens`` in front (z < 0)
    y_mm = -p[:, 1] / p[:, 2] * lens
    sensor_h = sensor_width * H / W
    u = (x_mm / sensor_width + 0.5 - shift_x) * W
    v = (0.5 - (y_mm / sensor_h) + shift_y * W / H) * H
    return np.stack([u, v], 1)


def _random_pose(rng):
    q = rng.normal(size=4)
    R = cam.quaternion_to_rotation(q)[0]
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, rng.normal(size=3)
    return M


@pytest.mark.parametrize("W,H", [(1280, 720), (720, 1280), (64, 48)])
def test_blender_camera_reproduces_opencv_projection(W, H):
    rng = np.random.default_rng(W)
    for _ in range(5):
        f = rng.uniform(0.5, 2.0) * W
        K = np.array([[f, 0, rng.uniform(0.3, 0.7) * W], [0, f, rng.uniform(0.3, 0.7) * H], [0, 0, 1]])
        c2w = _random_pose(rng)
        cam_pts = np.column_stack([rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200), rng.uniform(1, 9, 200)])
        world = cam_pts @ c2w[:3, :3].T + c2w[:3, 3]
        uv_cv, depth = cam.project_opencv(K, c2w, world)
        assert (depth > 0).all()
        lens = cam.intrinsics_to_blender(K, W, H)
        M = cam.opencv_c2w_to_blender_camera(c2w)[0]
        uv_bl = _blender_pinhole_project(lens.lens[0], lens.shift_x[0], lens.shift_y[0],
                                         lens.sensor_width, W, H, M, world)
        assert np.abs(uv_bl - uv_cv).max() < 1e-6


@given(f=st.floats(10, 1e4), cx=st.floats(-500, 2500), cy=st.floats(-500, 2500),
       W=st.integers(8, 4096), H=st.integers(8, 4096), sensor=st.floats(1, 100))
def test_intrinsics_round_trip(f, cx, cy, W, H, sensor):
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    b = cam.intrinsics_to_blender(K, W, H, sensor)
    back = cam.blender_to_intrinsics(b.lens[0], b.shift_x[0], b.shift_y[0], W, H, sensor)
    assert np.allclose(back, K, rtol=1e-9, atol=1e-6)


def test_intrinsics_known_values():
    K = np.array([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])
    b = cam.intrinsics_to_blender(K, 1280, 720)
    assert b.lens[0] == pytest.approx(1000 * 36 / 1280)
    assert b.shift_x[0] == 0 and b.shift_y[0] == 0
    K2 = K.copy()
    K2[0, 2], K2[1, 2] = 600, 400  # principal point left of and below centre
    b2 = cam.intrinsics_to_blender(K2, 1280, 720)
    assert b2.shift_x[0] == pytest.approx(40 / 1280)
    assert b2.shift_y[0] == pytest.approx(40 / 1280)  # normalised by the width (HORIZONTAL fit)


def test_focal_aspect_mismatch():
    K = np.array([[[100.0, 0, 1], [0, 100, 1], [0, 0, 1]], [[100.0, 0, 1], [0, 110, 1], [0, 0, 1]]])
    assert cam.focal_aspect_mismatch(K[:1]) == 0
    assert cam.focal_aspect_mismatch(K) == pytest.approx(0.1)


def test_world_rotation_maps_opencv_axes_to_blender_z_up():
    R = cam.OPENCV_WORLD_TO_BLENDER[:3, :3]
    assert np.allclose(R @ [1, 0, 0], [1, 0, 0])  # right stays right
    assert np.allclose(R @ [0, 1, 0], [0, 0, -1])  # OpenCV down -> Blender down (-Z)
    assert np.allclose(R @ [0, 0, 1], [0, 1, 0])  # OpenCV forward -> Blender forward (+Y)
    assert np.isclose(np.linalg.det(R), 1.0)
    ax = cam.OPENCV_WORLD_TO_BLENDER_EULER[0]
    Rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    assert np.allclose(Rx, R)


def test_identity_opencv_camera_looks_forward_in_blender():
    M = cam.OPENCV_WORLD_TO_BLENDER @ cam.opencv_c2w_to_blender_camera(np.eye(4))[0]
    view_dir = M[:3, :3] @ [0, 0, -1]  # Blender cameras look down local -Z
    up = M[:3, :3] @ [0, 1, 0]
    assert np.allclose(view_dir, [0, 1, 0]) and np.allclose(up, [0, 0, 1])


@settings(max_examples=200)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 1e-3))
def test_quaternion_matrix_round_trip(q):
    q = np.asarray(q) / np.linalg.norm(q)
    R = cam.quaternion_to_rotation(q)
    q2 = cam.rotation_to_quaternion(R)[0]
    assert np.allclose(cam.quaternion_to_rotation(q2), R, atol=1e-9)
    assert np.isclose(abs(np.dot(q, q2)), 1.0, atol=1e-9)


def test_rotation_to_quaternion_handles_half_turns_and_scale():
    for axis in np.eye(3):
        R = 2 * np.outer(axis, axis) - np.eye(3)  # 180 degrees about ``axis``
        q = cam.rotation_to_quaternion(R)[0]
        assert np.allclose(np.abs(q[1:]), axis) and abs(q[0]) < 1e-9
    q = cam.rotation_to_quaternion(2.0 * cam.quaternion_to_rotation([0.9, 0.1, 0.3, 0.2])[0])[0]
    assert np.allclose(cam.quaternion_to_rotation(q)[0],
                       cam.quaternion_to_rotation([0.9, 0.1, 0.3, 0.2])[0], atol=1e-9)


def test_decompose_rigid_is_continuous_and_invertible():
    angles = np.linspace(0, 4 * np.pi, 60)  # two full turns: raw quaternions would flip sign
    M = np.tile(np.eye(4), (60, 1, 1))
    M[:, 0, 0], M[:, 0, 1], M[:, 1, 0], M[:, 1, 1] = np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)
    M[:, :3, 3] = np.column_stack([angles, -angles, angles ** 2])
    loc, q = cam.decompose_rigid(M)
    assert (np.sum(q[1:] * q[:-1], axis=1) > 0).all()
    assert np.allclose(cam.compose_rigid(loc, q), M, atol=1e-9)


@pytest.mark.parametrize("fps,expected", [(12, (12, 1.0)), (24, (24, 1.0)), (25.0, (25, 1.0)),
                                          (29.97, (30, 30 / 29.97)), (23.976, (24, 24 / 23.976)),
                                          (0.5, (1, 2.0))])
def test_blender_fps(fps, expected):
    n, base = cam.blender_fps(fps)
    assert n == expected[0] and base == pytest.approx(expected[1])
    assert n / base == pytest.approx(fps)


def test_blender_fps_rejects_nonsense():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            cam.blender_fps(bad)
