"""The splats a camera ray crosses, counted from the data, and the Cycles bounces they need."""

from __future__ import annotations

import numpy as np

from genmojo_blender.core import splat_overlap as so


def _camera(width=64, height=48, focal=50.0):
    return so.Camera(local=np.eye(4), focal_px=focal, cx=width / 2, cy=height / 2, width=width, height=height)


def test_a_stack_along_the_view_axis_is_counted_once_per_splat():
    n = 30
    pos = np.zeros((n, 3))
    pos[:, 2] = -np.linspace(2.0, 5.0, n)  # in front of a Blender camera (looks along -Z)
    counts = so.footprint_counts(pos, np.full((n, 3), 0.05), _camera())
    assert counts.max() == n
    assert so.typical_overlap(counts, percentile=100) == n
    assert so.transparent_bounces(n) == so.SURFACES_PER_SPLAT * n


def test_side_by_side_splats_do_not_add_up_and_points_behind_are_ignored():
    xs = np.linspace(-1.5, 1.5, 10)
    pos = np.stack([xs, np.zeros(10), np.full(10, -4.0)], 1)
    behind = pos * [1, 1, -1]  # mirrored behind the camera
    counts = so.footprint_counts(np.concatenate([pos, behind]), np.full((20, 3), 0.02), _camera())
    assert counts.max() == 1 and counts.sum() > 0
    assert so.transparent_bounces(so.typical_overlap(counts)) == so.MIN_BOUNCES
    assert so.transparent_bounces(10 ** 6) == so.CYCLES_MAX_BOUNCES
    assert so.typical_overlap(np.zeros((4, 4), int)) == 0
