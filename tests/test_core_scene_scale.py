"""Floor fitting and real-world scale maths (genmojo_blender/core/scene_scale.py), without Blender."""

from __future__ import annotations

import numpy as np
import pytest

from genmojo_blender.core import scene_scale as ss


def _frame_of(normal):
    """Two unit vectors spanning the plane perpendicular to ``normal``."""
    n = normal / np.linalg.norm(normal)
    a = np.cross(n, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    return a, np.cross(n, a)


def _standing_objects(normal, offset, *, objects=3, frames=12, height=1.7, seed=0):
    """Boxes of random points standing on the plane {x: x.n = offset}, walking about on it."""
    rng = np.random.default_rng(seed)
    n = normal / np.linalg.norm(normal)
    a, b = _frame_of(n)
    out = []
    for k in range(objects):
        start = rng.uniform(-3, 3, 2)
        step = rng.uniform(-0.3, 0.3, 2)
        local = rng.uniform([-0.2, -0.2, 0], [0.2, 0.2, height], size=(400, 3))
        pos = []
        for t in range(frames):
            u, v = start + t * step
            base = offset * n + u * a + v * b
            pos.append(base + local[:, :1] * a + local[:, 1:2] * b + local[:, 2:] * n)
        out.append(np.array(pos))
    return out


def test_a_tilted_floor_is_found_through_outliers_and_put_at_z0():
    normal = np.array([np.sin(np.radians(8)), 0.1, np.cos(np.radians(8))])
    normal /= np.linalg.norm(normal)
    objs = _standing_objects(normal, -1.3)
    objs[1][5] += normal * 0.9  # a jump: that frame's contact is well above the floor
    vis = [None, None, np.array([True] * 11 + [False])]
    objs[2][11] -= normal * 5.0  # hidden frame with nonsense positions: must be ignored
    contacts = ss.contact_points(list(zip(objs, vis)))
    assert contacts.shape == (3 * 12 - 1, 3)
    fit = ss.find_floor(list(zip(objs, vis)))
    contacts = ss.contact_points(list(zip(objs, vis)), fit.normal)
    assert fit.method == "plane"
    assert fit.inliers == contacts.shape[0] - 1
    assert np.degrees(np.arccos(fit.normal @ normal)) < 0.5
    # a contact is the mean of the lowest 2 % of points (8 of 400 here): it sits a little above the
    # true floor, on average 1 % of the height (0.017) for these boxes of evenly spread points
    assert 0.0 < fit.point @ normal + 1.3 < 0.04

    M = ss.floor_alignment(fit)
    R = M[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.linalg.det(R) == pytest.approx(1.0)
    moved = contacts @ R.T + M[:3, 3]
    keep = np.ones(len(moved), bool)
    keep[12 + 5] = False  # the jump
    assert np.abs(moved[keep, 2]).max() < 0.02
    assert np.allclose(R @ fit.normal, [0, 0, 1], atol=1e-9)
    # the floor's point is lowered straight down: it keeps its x and y
    p = M[:3, :3] @ fit.point + M[:3, 3]
    assert np.allclose(p, [fit.point[0], fit.point[1], 0.0], atol=1e-9)

    # fitted again after the alignment, the floor is already at Z = 0: nothing moves
    again = ss.find_floor([(o @ R.T + M[:3, 3], v) for o, v in zip(objs, vis)])
    assert np.allclose(ss.floor_alignment(again), np.eye(4), atol=1e-6)


def test_planes_steeper_than_the_limit_are_not_taken_for_the_floor():
    # contacts on a 60-degree slope: no candidate within 30 degrees of up, so a level plane is
    # returned and labelled as such
    normal = np.array([np.sin(np.radians(60)), 0, np.cos(np.radians(60))])
    contacts = ss.contact_points([(o, None) for o in _standing_objects(normal, 0.0)])
    fit = ss.fit_floor(contacts, scale=1.7)
    assert fit.method == "level" and np.allclose(fit.normal, [0, 0, 1])
    assert fit.point[2] == pytest.approx(np.median(contacts[:, 2]))


def test_contacts_on_a_line_give_the_most_level_plane_through_it():
    # one object walking straight up a gentle ramp along x: the plane holds the line and is
    # level across it
    t = np.arange(10)
    line = np.stack([0.5 * t, np.full(10, 2.0), 0.1 * 0.5 * t - 1.0], 1)
    fit = ss.fit_floor(line, scale=1.0)
    assert fit.method == "line"
    d = np.array([1.0, 0, 0.1]) / np.linalg.norm([1.0, 0, 0.1])
    assert abs(fit.normal @ d) < 1e-9 and fit.normal[1] == pytest.approx(0.0, abs=1e-9)
    assert np.abs(fit.height_of(line)).max() < 1e-9


def test_one_contact_gives_a_level_floor_through_it():
    fit = ss.fit_floor(np.array([[1.0, 2.0, -0.4]]), scale=1.0)
    assert fit.method == "level" and np.allclose(fit.normal, [0, 0, 1])
    assert np.allclose(ss.floor_alignment(fit)[:3, 3], [0, 0, 0.4])


def test_no_visible_points_is_an_error():
    with pytest.raises(ss.FloorError, match="no visible"):
        ss.fit_floor(ss.contact_points([(np.zeros((3, 5, 3)), [False] * 3)]), scale=1.0)
    with pytest.raises(ss.FloorError, match="visibility flags"):
        ss.contact_points([(np.zeros((3, 5, 3)), [True])])


def test_object_height_ignores_stray_points_and_hidden_frames():
    rng = np.random.default_rng(1)
    frames = []
    for t in range(6):
        p = rng.uniform([-0.3, -0.3, 0.0], [0.3, 0.3, 1.6], size=(1000, 3))
        p[:5, 2] = 9.0  # a few stray Gaussians far above
        frames.append(p)
    pos = np.array(frames)
    pos[2, :, 2] *= 10  # hidden frame
    vis = [True, True, False, True, True, True]
    h = ss.object_height(pos, vis)
    assert h == pytest.approx(1.6 * 0.98, rel=0.03)
    s = ss.scale_factor(h, 1.75)
    assert ss.object_height(pos * s, vis) == pytest.approx(1.75, rel=1e-9)
    with pytest.raises(ss.FloorError, match="positive number of metres"):
        ss.scale_factor(h, 0.0)
    with pytest.raises(ss.FloorError, match="no visible frame"):
        ss.object_height(pos, [False] * 6)


def test_scaling_about_a_pivot_keeps_every_projection():
    # a pinhole camera and points, scaled together about any pivot, project to the same pixels
    rng = np.random.default_rng(2)
    cam = np.eye(4)
    cam[:3, 3] = [0.3, -4.0, 1.2]
    pts = rng.uniform(-1, 1, (50, 3)) + [0, 2.0, 0]
    S = ss.uniform_scale_about([0.5, 1.0, -2.0], 2.7)

    def project(cam_pos, p):
        d = p - cam_pos
        return d[:, [0, 2]] / d[:, 1:2]

    before = project(cam[:3, 3], pts)
    after = project(S[:3, :3] @ cam[:3, 3] + S[:3, 3], pts @ S[:3, :3].T + S[:3, 3])
    assert np.allclose(before, after, atol=1e-12)
    with pytest.raises(ss.FloorError):
        ss.uniform_scale_about([0, 0, 0], -1.0)


def test_rotation_between_opposite_directions_is_a_half_turn():
    R = ss.rotation_between([0, 0, -1.0], [0, 0, 1.0])
    assert np.allclose(R @ [0, 0, -1.0], [0, 0, 1.0]) and np.linalg.det(R) == pytest.approx(1.0)
