"""Weighted Kabsch fits that bake an object's motion into rigid per-frame transforms."""

from __future__ import annotations

import numpy as np
import pytest

from genmojo_blender.core import rigid
from genmojo_blender.core.camera import quaternion_to_rotation


def _random_rotations(n, seed):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return quaternion_to_rotation(q / np.linalg.norm(q, axis=1, keepdims=True))


def test_exact_rigid_motion_is_recovered():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 3))
    R = _random_rotations(6, 1)
    R[0] = np.eye(3)
    t = rng.normal(size=(6, 3))
    t[0] = 0
    traj = np.einsum("tij,nj->tni", R, pts) + t[:, None]
    track = rigid.fit_rigid_track(traj)
    assert np.allclose(track.rotations, R, atol=1e-9) and np.allclose(track.translations, t, atol=1e-9)
    assert track.rms.max() < 1e-9 and track.relative_error < 1e-9
    M = track.matrices
    assert np.allclose(np.einsum("tij,nj->tni", M[:, :3, :3], pts) + M[:, None, :3, 3], traj, atol=1e-9)
    q = track.quaternions()
    assert (np.einsum("ti,ti->t", q[1:], q[:-1]) >= 0).all()  # sign-continuous
    assert np.allclose(quaternion_to_rotation(q), R, atol=1e-9)


def test_result_is_a_proper_rotation_even_for_mirrored_targets():
    pts = np.random.default_rng(2).normal(size=(50, 3))
    R, c, rms = rigid.kabsch(pts, pts * [1, 1, -1])  # a reflection is not reachable
    assert np.linalg.det(R) == pytest.approx(1.0) and np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert rms > 0.1


def test_weights_ignore_outliers_and_noise_stays_small():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(300, 3))
    R = _random_rotations(1, 5)[0]
    moved = pts @ R.T + [1, 2, 3]
    moved[:20] += rng.normal(size=(20, 3)) * 5  # 20 wild points
    w = np.ones(300)
    w[:20] = 0
    R_fit, c_fit, rms = rigid.kabsch(pts, moved, w)
    assert np.allclose(R_fit, R, atol=1e-9) and np.allclose(c_fit, [1, 2, 3], atol=1e-9) and rms < 1e-9
    R_unw, _, rms_unw = rigid.kabsch(pts, moved)
    assert not np.allclose(R_unw, R, atol=1e-3) and rms_unw > 0.5
    noisy = pts @ R.T + rng.normal(size=pts.shape) * 0.01
    R_n, _, rms_n = rigid.kabsch(pts, noisy)
    assert np.abs(R_n - R).max() < 0.01 and rms_n == pytest.approx(0.01 * np.sqrt(3), rel=0.2)


def test_non_rigid_motion_reports_its_error():
    pts = np.random.default_rng(6).normal(size=(100, 3))
    stretched = np.stack([pts, pts * [1.5, 1, 1]])
    track = rigid.fit_rigid_track(stretched)
    assert track.rms[0] < 1e-12 and track.relative_error > 0.1


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros((2, 0, 3))])
def test_bad_shapes(bad):
    with pytest.raises(ValueError):
        rigid.fit_rigid_track(bad)
