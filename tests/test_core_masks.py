"""Rasterising Movie Clip masks without bpy: Bézier flattening, polygon fill, PNG output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from genmojo_blender.core import masks as cm


def test_square_fills_exactly_the_pixels_whose_centres_are_inside():
    sq = np.array([[2.0, 3.0], [10.0, 3.0], [10.0, 7.0], [2.0, 7.0]])
    img = cm.fill_polygons([sq], 12, 9)
    expect = np.zeros((9, 12), bool)
    expect[3:7, 2:10] = True
    assert np.array_equal(img, expect)
    assert np.array_equal(cm.fill_polygons([sq[::-1]], 12, 9), expect)  # either winding


def test_self_overlap_stays_solid_and_polygons_combine():
    star = np.array([[10, 0], [16, 19], [0, 7], [20, 7], [4, 19]], float)  # a pentagram
    img = cm.fill_polygons([star], 20, 20)
    assert img[11, 10]  # the centre, wound twice, is filled (non-zero rule)
    two = cm.fill_polygons([np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float),
                            np.array([[6, 6], [9, 6], [9, 9], [6, 9]], float)], 10, 10)
    assert two.sum() == 16 + 9


def test_bezier_circle_area():
    # the classic four-segment circle approximation, radius 1
    k = 0.5523
    P = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], float)
    T = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]], float) * k  # tangent directions
    poly = cm.bezier_polygon(P, P - T, P + T, samples=32)
    x, y = poly.T
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert area == pytest.approx(np.pi, rel=2e-3)
    assert np.allclose(np.linalg.norm(poly, axis=1), 1, atol=1e-3)


@pytest.mark.parametrize("W,H", [(64, 48), (48, 64), (50, 50)])
def test_mask_space_maps_to_pixels(W, H):
    px = cm.mask_to_pixels(np.array([[0.5, 0.5], [0.0, 0.5], [0.5, 1.0]]), W, H)
    side = max(W, H)
    assert np.allclose(px[0], [W / 2, H / 2])  # centre stays the centre
    assert np.allclose(px[1], [W / 2 - side / 2, H / 2])  # the longer side spans 0..1
    assert np.allclose(px[2], [W / 2, H / 2 - side / 2])  # y up in mask space, down in pixels


def test_png_reads_back_with_opencv(tmp_path):
    img = np.zeros((7, 11), bool)
    img[2:5, 3:9] = True
    cm.write_png(tmp_path / "00003.png", img)
    back = cv2.imread(str(tmp_path / "00003.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.shape == (7, 11)
    assert np.array_equal(back, img.astype(np.uint8) * 255)
    assert cm.object_folder(0) == "001" and cm.object_folder(11) == "012"
