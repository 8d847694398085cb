"""The bpy-free surface extraction (density grid, marching tetrahedra, binding, deformation)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from genmojo_blender.core import surface as sf
from genmojo_blender.core.camera import rotation_to_quaternion


def _ball(n=400, radius=1.0, sigma=0.12, seed=0):
    """Opaque Gaussians filling a ball: its surface should be a closed, roughly spherical shell."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n * 3, 3))
    p = p[np.linalg.norm(p, axis=1) < 2.0][:n]
    p = p / 2.0 * radius
    quats = np.tile([1.0, 0, 0, 0], (len(p), 1))
    return p, quats, np.full((len(p), 3), np.log(sigma)), np.full(len(p), 0.95)


def _faces(sizes, corners):
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return [corners[s:s + n] for s, n in zip(starts, sizes)]


def _edge_counts(faces):
    edges = Counter()
    for q in faces:
        for a, b in zip(q, np.roll(q, -1)):
            edges[(min(a, b), max(a, b))] += 1
    return edges


def test_density_of_one_gaussian_matches_the_formula():
    q = rotation_to_quaternion(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]))  # 90 deg about z
    sig = np.array([[0.3, 0.1, 0.2]])
    g = sf.density_grid(np.zeros((1, 3)), q, sig, [0.8], resolution=40)
    X, Y, Z = np.meshgrid(*[g.origin[a] + g.voxel * np.arange(g.values.shape[a]) for a in range(3)],
                          indexing="ij")
    s = np.sqrt(sig[0] ** 2 + (0.5 * g.voxel) ** 2)
    # rotated 90 deg about z: the long axis (x, 0.3) now lies along world y
    expect = 0.8 * np.exp(-0.5 * ((X / s[1]) ** 2 + (Y / s[0]) ** 2 + (Z / s[2]) ** 2))
    inside = np.sqrt((X / s[1]) ** 2 + (Y / s[0]) ** 2 + (Z / s[2]) ** 2) < 2.5  # within the window
    assert np.abs(g.values - expect)[inside].max() < 1e-5
    assert g.values.max() == pytest.approx(0.8, rel=0.05)


def test_surface_of_a_ball_is_closed_outward_and_round():
    means, quats, logs, ops = _ball()
    s = sf.extract_surface(means, quats, logs, ops, np.full((len(means), 3), 0.5), resolution=40)
    v = s.vertices.astype(np.float64)
    faces = _faces(s.face_sizes, s.face_vertices)
    assert s.num_faces > 200 and set(s.face_sizes.tolist()) <= {3, 4}
    assert s.face_vertices.min() >= 0 and s.face_vertices.max() < len(v)
    assert all(len(set(f.tolist())) == len(f) for f in faces)
    edges = _edge_counts(faces)
    assert set(edges.values()) == {2}  # closed and manifold: every edge shared by exactly two faces
    # oriented consistently: each directed edge appears once, its reverse in the neighbour
    directed = Counter((int(a), int(b)) for f in faces for a, b in zip(f, np.roll(f, -1)))
    assert set(directed.values()) == {1} and all((b, a) in directed for a, b in directed)
    # one sphere-like shell plus possibly small separate blobs (each contributes 2)
    euler = len(v) - len(edges) + len(faces)
    assert euler >= 2 and euler % 2 == 0
    # outward: face normals point away from the centre
    centre = means.mean(0)
    normals = np.array([np.cross(v[f[1]] - v[f[0]], v[f[2]] - v[f[0]]) for f in faces])
    mids = np.array([v[f].mean(0) for f in faces])
    assert (np.einsum("ij,ij->i", normals, mids - centre) > 0).mean() > 0.98
    r = np.linalg.norm(v - centre, axis=1)
    assert 0.8 < np.median(r) < 1.4 and r.std() / r.mean() < 0.15


def test_iso_level_controls_the_size():
    means, quats, logs, ops = _ball()
    g = sf.density_grid(means, quats, np.exp(logs), ops, resolution=32)
    small, _, _ = sf.marching_tetrahedra(g, 2.0)
    large, _, _ = sf.marching_tetrahedra(g, 0.2)
    c = means.mean(0)
    assert np.linalg.norm(small - c, axis=1).mean() < np.linalg.norm(large - c, axis=1).mean()
    empty_v, empty_sizes, _ = sf.marching_tetrahedra(g, 1e9)
    assert empty_v.shape == (0, 3) and empty_sizes.shape == (0,)
    with pytest.raises(ValueError, match="threshold"):
        sf.extract_surface(means, quats, logs, ops, np.zeros((len(means), 3)), threshold=1e6)


def test_nearest_gaussians_is_exact():
    rng = np.random.default_rng(3)
    pts, means = rng.normal(size=(300, 3)), rng.normal(size=(500, 3))
    idx, d2 = sf.nearest_gaussians(pts, means, 5)
    full = ((pts[:, None] - means[None]) ** 2).sum(-1)
    assert np.array_equal(idx, np.argsort(full, axis=1)[:, :5])
    assert np.allclose(d2, np.sort(full, axis=1)[:, :5])


def test_bound_surface_follows_translation_and_rotation_of_its_gaussians():
    means, quats, logs, ops = _ball(n=300)
    s = sf.extract_surface(means, quats, logs, ops, np.zeros((len(means), 3)), resolution=32)
    assert np.allclose(s.weights.sum(1), 1, atol=1e-5)
    T = 4
    th = np.linspace(0, 0.6, T)
    R = np.stack([[[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]] for t in th])
    shift = np.stack([[0.5 * t, 0, -0.2 * t] for t in range(T)])
    moved = np.einsum("tij,nj->tni", R, means) + shift[:, None]
    out = sf.deform(s.vertices, s.neighbours, s.weights, moved)
    assert out.shape == (T, s.num_vertices, 3)
    assert np.allclose(out[0], s.vertices, atol=1e-6)
    expect = np.einsum("tij,nj->tni", R, s.vertices) + shift[:, None]
    size = np.linalg.norm(s.vertices - s.vertices.mean(0), axis=1).mean()
    # pure translation is reproduced exactly; a rotation by up to 34 deg to within a few % of the size
    pure = sf.deform(s.vertices, s.neighbours, s.weights, means[None] + shift[:, None])
    assert np.abs(pure - (s.vertices[None] + shift[:, None])).max() < 1e-5
    assert np.linalg.norm(out - expect, axis=2).mean() < 0.05 * size


def test_vertex_colours_come_from_the_nearby_gaussians():
    means, quats, logs, ops = _ball(n=300)
    cols = np.where(means[:, :1] > 0, [[1.0, 0, 0]], [[0, 0, 1.0]])
    s = sf.extract_surface(means, quats, logs, ops, cols, resolution=32)
    right = s.vertices[:, 0] > 0.3
    left = s.vertices[:, 0] < -0.3
    assert (s.colors[right, 0] > 0.8).mean() > 0.95 and (s.colors[left, 2] > 0.8).mean() > 0.95


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        sf.density_grid(np.zeros((2, 3)), np.tile([1.0, 0, 0, 0], (2, 1)), np.ones((3, 3)), [1, 1])
    with pytest.raises(ValueError, match="opaque"):
        sf.density_grid(np.zeros((1, 3)), [[1.0, 0, 0, 0]], [[1, 1, 1]], [0.0])


@pytest.mark.parametrize("spread", [1.0, 0.05])
def test_hashed_nearest_gaussians_is_exact_on_large_inputs(spread):
    """Large inputs go through the cell hash; dense clusters and sparse points must still be exact."""
    rng = np.random.default_rng(7)
    means = np.concatenate([rng.normal(size=(4000, 3)) * spread, rng.normal(size=(200, 3)) * 3])
    pts = np.concatenate([rng.normal(size=(1500, 3)) * spread, rng.normal(size=(100, 3)) * 4])
    idx, d2 = sf.nearest_gaussians(pts, means, 6)
    ref_idx, ref_d2 = sf._brute_nearest(pts, means, 6)
    assert np.allclose(d2, ref_d2, atol=1e-9)
    assert (idx == ref_idx).mean() > 0.999  # ties aside, the same Gaussians
