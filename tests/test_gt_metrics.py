"""The ground-truth evaluation's metrics on hand-made arrays (backend/gt_eval.py), its plots, and the
generator's pure geometry (scripts/make_gt_clip.py; no Blender needed)."""

import math

import numpy as np
import pytest

from backend.evaluate import json_safe
from backend.gt_eval import (camera_difference, delta_accuracy, depth_order_counts, end_point_errors, error_summary,
                             nearest_indices, project)
from backend.gt_report import line_plot, side_by_side, track_picture
from conftest import load_script

gen = load_script("make_gt_clip")


def test_nearest_indices_finds_the_closest_points_in_order():
    pts = np.array([[0, 0, 0], [10, 0, 0], [0, 5, 0], [0, 0, 1]], float)
    q = np.array([[9, 0, 0], [0, 0, 0.4], [0, 4, 0]], float)
    np.testing.assert_array_equal(nearest_indices(q, pts, 1)[:, 0], [1, 0, 2])
    np.testing.assert_array_equal(nearest_indices(q[1:2], pts, 2), [[0, 3]])
    with pytest.raises(ValueError, match="5 neighbours asked of 4 points"):
        nearest_indices(q, pts, 5)


def test_end_point_errors_and_behind_camera_points():
    pred = np.array([[[0, 0], [3, 4]], [[np.nan, 1], [1, 1]]], float)
    true = np.zeros((2, 2, 2))
    e = end_point_errors(pred, true)
    np.testing.assert_allclose(e, [[0, 5], [np.inf, math.sqrt(2)]])


def test_delta_accuracy_thresholds_are_strict_and_averaged():
    err = np.array([0.5, 1.0, 1.5, 3.0, 7.9, 8.0, 20.0, np.inf])
    sel = np.ones_like(err, bool)
    d = delta_accuracy(err, sel)
    assert d["1"] == pytest.approx(1 / 8)  # 1.0 is not < 1
    assert d["2"] == pytest.approx(3 / 8)
    assert d["4"] == pytest.approx(4 / 8)
    assert d["8"] == pytest.approx(5 / 8)  # 8.0 is not < 8
    assert d["16"] == pytest.approx(6 / 8)  # 20 and inf miss
    assert d["delta_avg"] == pytest.approx(np.mean([1, 3, 4, 5, 6]) / 8)
    assert d["count"] == 8
    only = delta_accuracy(err, err < 2)
    assert only["1"] == pytest.approx(1 / 3) and only["16"] == 1.0 and only["count"] == 3
    empty = delta_accuracy(err, np.zeros_like(sel))
    assert math.isnan(empty["delta_avg"]) and empty["count"] == 0


def test_error_summary_selects_and_normalises():
    err = np.array([[1.0, 2.0], [3.0, 10.0]])
    sel = np.array([[True, True], [True, False]])
    s = error_summary(err, sel, scale=np.array([[1.0, 2.0], [3.0, 5.0]]))
    assert s["count"] == 3 and s["epe_mean"] == pytest.approx(2.0) and s["epe_median"] == 2.0
    assert s["relative_mean"] == pytest.approx(1.0)
    assert math.isnan(error_summary(err, np.zeros_like(sel))["epe_mean"])


def test_depth_order_counts_pairs_pixels_where_true_silhouettes_overlap():
    # 1x3 image, two objects: both present in pixels 0 and 1, only object 0 in pixel 2
    true = np.array([[[2.0, 2.0, 2.0]], [[3.0, 1.0, 0.0]]])  # pixel 0: 0 in front; pixel 1: 1 in front
    good = np.array([[[5.0, 5.0, 5.0]], [[6.0, 4.0, np.nan]]])  # same order, other scale
    assert depth_order_counts(good, true) == (2, 2, 2)
    flipped = np.array([[[5.0, 5.0, 5.0]], [[4.0, 6.0, np.nan]]])
    assert depth_order_counts(flipped, true) == (0, 2, 2)
    missing = np.array([[[5.0, np.nan, 5.0]], [[6.0, 4.0, 1.0]]])  # object 0 not rendered at pixel 1
    assert depth_order_counts(missing, true) == (1, 1, 2)
    three = np.stack([true[0], true[1], np.array([[2.5, 2.5, 0.0]])])
    pred = np.stack([good[0], good[1], np.array([[5.5, 4.5, np.nan]])])
    c, n, ov = depth_order_counts(pred, three)
    # pixel 0: all three pairs right; pixel 1: (0,1) and (1,2) right, (0,2) wrong (truth: 0 nearer, render: 2)
    assert (c, n, ov) == (5, 6, 6)
    with pytest.raises(ValueError, match="differ in shape"):
        depth_order_counts(good[:1], true)


def test_project_matches_the_pinhole_and_hides_points_behind():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, 3] = [1, 0, 0]
    uv = project(np.array([[1.0, 0, 2], [2.0, 0.5, 5], [1.0, 0, -1]]), c2w, K)
    np.testing.assert_allclose(uv[:2], [[32, 24], [52, 34]])
    assert np.isnan(uv[2]).all()


def test_camera_difference_measures_rotation_and_centres():
    a = np.repeat(np.eye(4)[None], 3, 0)
    b = a.copy()
    ang = math.radians(10)
    b[1, :3, :3] = [[math.cos(ang), -math.sin(ang), 0], [math.sin(ang), math.cos(ang), 0], [0, 0, 1]]
    b[2, :3, 3] = [0, 3, 4]
    d = camera_difference(a, b)
    assert d["rotation_deg"] == pytest.approx(10) and d["centre_distance"] == pytest.approx(5)
    assert camera_difference(a, a) == {"rotation_deg": 0.0, "centre_distance": 0.0}


def test_json_safe_turns_undefined_metrics_into_null():
    assert json_safe({"a": float("nan"), "b": [np.float32(1.5), np.int64(2), float("inf")]}) == \
        {"a": None, "b": [1.5, 2, None]}


def test_pictures_have_the_promised_shapes():
    truth = np.zeros((32, 48, 3), np.uint8)
    render = np.full((32, 48, 3), 255, np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:16] = True
    pic = side_by_side(truth, render, mask)
    assert pic.dtype == np.uint8 and pic.shape[1] >= 3 * 256 and pic.shape[0] > 256 * 32 / 48
    t = track_picture(truth, np.array([[10.0, 10.0], [np.nan, 1.0]]), np.array([[12.0, 10.0], [1.0, 1.0]]),
                      np.array([True, False]))
    assert t.shape[1] >= 512
    plot = line_plot({"a": [0.0, 1.0, float("nan"), 2.0], "b": [1.0, 1.0, 1.0, 1.0]}, "t", "units", [1])
    assert plot.shape == (300, 640, 3)
    assert (plot != 255).any(axis=2).sum() > 1000  # something was drawn


# --------------------------------------------------------------------------------------------------
# The generator's geometry without Blender


def test_look_at_is_an_opencv_camera_looking_at_the_target():
    eye, target = np.array([1.0, -7.0, 3.0]), np.array([0.0, 0.0, 2.0])
    c2w = gen.look_at(eye, target)
    R = c2w[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    fwd = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(R[:, 2], fwd)  # z forward
    assert R[2, 1] < 0  # image y (down) points down in the Z-up world
    s = gen.Settings(width=64, height=48, frames=2, objects=1, seed=0, occlusion=0.5, samples=1, points=4,
                     novel_cameras=0, novel_every=1, mask_ss=1, threads=0, fovy_deg=45.0)
    uv, z = gen.project(target[None], c2w, gen.intrinsics(s))
    np.testing.assert_allclose(uv[0], [32, 24])  # the target is at the image centre
    assert z[0] == pytest.approx(np.linalg.norm(target - eye))


def test_surface_samples_are_uniform_by_area():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [0, 3, 0]], float)
    tris = np.array([[0, 1, 2], [0, 3, 4]])  # areas 0.5 and 4.5
    tri, bary = gen.sample_surface(verts, tris, 20000, np.random.default_rng(0))
    assert np.mean(tri == 1) == pytest.approx(0.9, abs=0.01)
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1)
    p = np.einsum("nij,ni->nj", verts[tris[tri]], bary)
    big = p[tri == 1]
    assert np.mean(big[:, 0] + big[:, 1] < 1.5) == pytest.approx(0.25, abs=0.02)  # area (1.5/3)^2 of the triangle


@pytest.mark.parametrize("objects", [1, 2, 3, 4])
def test_crossing_rows_follow_the_occlusion_setting(objects):
    rows0, off0 = gen._rows(objects, 0.0)
    rows1, off1 = gen._rows(objects, 1.0)
    assert len(rows0) == len(off0) == objects
    v0 = np.add(rows0, off0)
    v1 = np.add(rows1, off1)
    if objects >= 2:  # full occlusion pulls the paths of the first crossing pair together
        assert abs(v1[0] - v1[1]) < abs(v0[0] - v0[1])


def test_bad_settings_are_refused_before_blender_starts(tmp_path):
    with pytest.raises(ValueError, match="objects must be in 1..4"):
        gen.make_gt_clip(tmp_path / "a", objects=5)
    with pytest.raises(ValueError, match="occlusion must be in"):
        gen.make_gt_clip(tmp_path / "a", occlusion=1.5)
    with pytest.raises(ValueError, match="unknown preset"):
        gen.make_gt_clip(tmp_path / "a", preset="huge")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(gen.GenerationError, match="did not write"):
        gen.make_gt_clip(tmp_path / "b")
