"""A surface mesh for an object's Gaussians that moves with them, computed with numpy only.

Artists often need a real mesh (shadow catcher, collision, hold-out, retopology reference) rather
than a cloud of Gaussians. This module builds one with constant topology per object:

1. ``density_grid``: the object's opacity field, ``f(x) = sum_i o_i exp(-1/2 (x-mu_i)^T S_i^-1 (x-mu_i))``
   with each Gaussian's full covariance ``S_i = R_i diag(sigma_i^2) R_i^T``, sampled on a regular
   grid. Each Gaussian is only evaluated in a window of voxels around its centre (3 sigma), so the
   cost is proportional to the number of Gaussians, not to grid size x Gaussians.
2. ``marching_tetrahedra``: the iso-surface ``f = iso`` as a closed, 2-manifold mesh of triangles
   and quads (each voxel split into six tetrahedra, which has no ambiguous cases, unlike marching
   cubes or surface nets). Faces are wound so normals point out of the dense region. The grid is
   padded with empty voxels, so the surface is always closed.
3. ``bind_to_gaussians``: each vertex is attached to its K nearest Gaussians with weights from
   those Gaussians' own density at the vertex.
4. ``deform``: per frame, a vertex moves by the weighted blend of its Gaussians' displacements from
   the reference frame, so the mesh follows the baked motion with the same vertex count and faces.

The reference state is the Gaussians at one frame of the bundle (the importer uses the first,
which is also the shape-key basis): that is the canonical Gaussians carried to that frame by the
backend's motion, in world space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import quaternion_to_rotation

# Gaussians are evaluated out to this many standard deviations (the density there is 1 % of the peak).
WINDOW_SIGMAS = 3.0
# Total (Gaussian, voxel) evaluations allowed for one grid. Windows are only truncated (their
# radius capped) when the Gaussians are so large relative to the grid that this would be exceeded.
MAX_EVALUATIONS = 40_000_000
# Work arrays are chunked to about this many (Gaussian, voxel) pairs.
_CHUNK_PAIRS = 1 << 21


@dataclass
class DensityGrid:
    """Samples of the density on the grid points ``origin + voxel * (i, j, k)``."""

    values: np.ndarray  # (X, Y, Z) float32
    origin: np.ndarray  # (3,) float64
    voxel: float


@dataclass
class Surface:
    """A quad mesh bound to an object's Gaussians."""

    vertices: np.ndarray  # (V, 3) float32 at the reference frame
    face_sizes: np.ndarray  # (F,) int32, 3 or 4 corners per face
    face_vertices: np.ndarray  # (sum of face_sizes,) int32, counter-clockwise seen from outside
    neighbours: np.ndarray  # (V, K) int64 indices of the Gaussians each vertex follows
    weights: np.ndarray  # (V, K) float32, rows sum to 1
    colors: np.ndarray  # (V, 3) float32, sRGB in [0, 1], weighted from the same Gaussians

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.face_sizes.shape[0])


def covariance_inverses(quats: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Inverse covariances ``R diag(1/sigma^2) R^T`` of Gaussians with w,x,y,z quaternions."""
    R = quaternion_to_rotation(np.asarray(quats, np.float64))
    inv = 1.0 / np.square(np.asarray(sigmas, np.float64))
    return np.einsum("nij,nj,nkj->nik", R, inv, R)


def density_grid(means: np.ndarray, quats: np.ndarray, sigmas: np.ndarray, opacities: np.ndarray, *,
                 resolution: int = 64, min_opacity: float = 0.02) -> DensityGrid:
    """Sample the opacity field of a set of Gaussians on a grid with ``resolution`` voxels along
    its longest side (plus one empty voxel of padding on each side).

    Gaussians thinner than half a voxel are widened to it (a blur by the grid's own sampling
    kernel), so thin ones are not lost between grid points; their peak opacity is kept.
    """
    means = np.asarray(means, np.float64).reshape(-1, 3)
    sigmas = np.asarray(sigmas, np.float64).reshape(-1, 3)
    opac = np.asarray(opacities, np.float64).reshape(-1)
    quats = np.asarray(quats, np.float64).reshape(-1, 4)
    if not (len(means) == len(sigmas) == len(opac) == len(quats)):
        raise ValueError("means, quats, sigmas and opacities must describe the same Gaussians")
    if resolution < 4:
        raise ValueError("resolution must be at least 4")
    keep = opac >= min_opacity
    if not keep.any():
        raise ValueError("no Gaussian is opaque enough to form a surface")
    means, sigmas, opac, quats = means[keep], sigmas[keep], opac[keep], quats[keep]

    reach = WINDOW_SIGMAS * sigmas.max(axis=1, keepdims=True)
    lo, hi = (means - reach).min(axis=0), (means + reach).max(axis=0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("the Gaussians have no spatial extent")
    voxel = extent / resolution
    sigmas = np.sqrt(np.square(sigmas) + (0.5 * voxel) ** 2)
    origin = lo - voxel  # one empty voxel of padding
    shape = tuple(int(np.ceil((hi[a] - lo[a]) / voxel)) + 3 for a in range(3))
    inv_cov = covariance_inverses(quats, sigmas)

    centre = np.rint((means - origin) / voxel).astype(np.int64)
    radius = np.clip(np.ceil(WINDOW_SIGMAS * sigmas.max(axis=1) / voxel).astype(np.int64), 1, max(shape))
    cap = int(radius.max())
    while cap > 2 and (np.power(2 * np.minimum(radius, cap) + 1, 3)).sum() > MAX_EVALUATIONS:
        cap -= 1
    radius = np.minimum(radius, cap)
    # Accumulate into a grid padded by the largest window, so no window index needs a bounds check;
    # the padding is cut off at the end (it can only hold the far tails of windows).
    pad = int(radius.max())
    big = tuple(n + 2 * pad for n in shape)
    field = np.zeros(int(np.prod(big)), np.float64)
    strides = np.array([big[1] * big[2], big[2], 1], np.int64)
    flat_centre = (centre + pad) @ strides
    base = (origin + centre * voxel - means).astype(np.float32)  # window centre relative to the mean
    A = inv_cov.astype(np.float32)
    quad = (A[:, 0, 0], A[:, 1, 1], A[:, 2, 2], 2 * A[:, 0, 1], 2 * A[:, 0, 2], 2 * A[:, 1, 2])
    opac32 = opac.astype(np.float32)
    for r in np.unique(radius):
        sel = np.nonzero(radius == r)[0]
        ax = np.arange(-r, r + 1)
        offsets = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
        off_flat = offsets @ strides
        off = (offsets * voxel).astype(np.float32)
        chunk = max(1, _CHUNK_PAIRS // len(offsets))
        for s in range(0, len(sel), chunk):
            g = sel[s:s + chunk]
            dx = base[g, 0:1] + off[None, :, 0]  # (n, W) offsets of the window's voxels from the mean
            dy = base[g, 1:2] + off[None, :, 1]
            dz = base[g, 2:3] + off[None, :, 2]
            a, b, c, ab, ac, bc = (q[g][:, None] for q in quad)
            m = a * dx * dx + b * dy * dy + c * dz * dz + ab * dx * dy + ac * dx * dz + bc * dy * dz
            val = opac32[g][:, None] * np.exp(-0.5 * m)
            field += np.bincount((flat_centre[g][:, None] + off_flat[None]).ravel(), weights=val.ravel(),
                                 minlength=field.size)
    field = field.reshape(big)[pad:pad + shape[0], pad:pad + shape[1], pad:pad + shape[2]]
    return DensityGrid(values=np.ascontiguousarray(field, np.float32), origin=origin, voxel=voxel)


# Kuhn split of a voxel into six tetrahedra along its main diagonal: corner 0 -> e_a -> e_a+e_b ->
# corner 7 for each order (a, b, c) of the axes. Every voxel is split the same way, so shared
# faces get the same diagonal and the tetrahedra tile the grid.
def _kuhn_tetrahedra() -> np.ndarray:
    tets = []
    for a, b, _c in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        p1 = np.zeros(3, int)
        p1[a] = 1
        p2 = p1.copy()
        p2[b] = 1
        tets.append([(0, 0, 0), tuple(p1), tuple(p2), (1, 1, 1)])
    return np.array(tets, np.int64)  # (6, 4, 3) corner offsets


_TETS = _kuhn_tetrahedra()


def marching_tetrahedra(grid: DensityGrid, iso: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The iso-surface ``values == iso`` of a grid as a polygon mesh.

    Each voxel is split into six tetrahedra; in a tetrahedron the surface is one triangle (one
    corner apart from the other three) or one quad (two and two). The piecewise-linear surface of
    a consistent tetrahedral split is unambiguous, so the result is a closed 2-manifold (the grid
    is padded with empty voxels). Vertices sit on grid edges and are shared by every polygon that
    uses the edge. Polygons are wound counter-clockwise seen from outside: their normals point
    away from the region ``values > iso``.

    Returns (vertices (V,3) float32, face sizes (F,) int32 of 3 or 4, face corners (sum sizes,)
    int32 vertex indices); empty arrays when the grid never crosses ``iso``.
    """
    f = np.asarray(grid.values, np.float64)
    X, Y, Z = f.shape
    flat_f = f.ravel()
    inside = flat_f > iso
    strides = np.array([Y * Z, Z, 1], np.int64)
    empty = (np.zeros((0, 3), np.float32), np.zeros(0, np.int32), np.zeros(0, np.int32))

    # voxels whose eight corners are not all on one side
    ins = inside.reshape(f.shape)
    corner_any = np.zeros((X - 1, Y - 1, Z - 1), bool)
    corner_all = np.ones((X - 1, Y - 1, Z - 1), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                sub = ins[dx:X - 1 + dx, dy:Y - 1 + dy, dz:Z - 1 + dz]
                corner_any |= sub
                corner_all &= sub
    vox = np.argwhere(corner_any & ~corner_all)
    if len(vox) == 0:
        return empty
    corners = ((vox[:, None, None, :] + _TETS[None]) * strides).sum(-1).reshape(-1, 4)  # (n*6, 4)
    bits = inside[corners]
    count = bits.sum(axis=1)
    keep = (count > 0) & (count < 4)
    corners, bits, count = corners[keep], bits[keep], count[keep]
    order = np.argsort(bits, axis=1, kind="stable")  # outside corners first
    c = np.take_along_axis(corners, order, axis=1)

    # polygons as lists of grid edges (a, b); the first corner of an edge is always the outside one
    one = count == 1  # c[:, 3] inside, c[:, 0..2] outside
    three = count == 3  # c[:, 0] outside, c[:, 1..3] inside
    two = count == 2  # c[:, 0..1] outside, c[:, 2..3] inside
    tri_a = np.concatenate([c[one][:, :3], np.repeat(c[three][:, :1], 3, axis=1)])
    tri_b = np.concatenate([np.repeat(c[one][:, 3:], 3, axis=1), c[three][:, 1:]])
    q = c[two]
    quad_a = q[:, [0, 0, 1, 1]]
    quad_b = q[:, [2, 3, 3, 2]]  # cycle 0-2, 0-3, 1-3, 1-2
    edge_a = np.concatenate([tri_a.ravel(), quad_a.ravel()])
    edge_b = np.concatenate([tri_b.ravel(), quad_b.ravel()])
    sizes = np.concatenate([np.full(len(tri_a), 3, np.int32), np.full(len(q), 4, np.int32)])

    # one vertex per distinct grid edge, interpolated where the field crosses iso
    key = edge_a * flat_f.size + edge_b
    uniq, loops = np.unique(key, return_inverse=True)
    ua, ub = uniq // flat_f.size, uniq % flat_f.size
    fa, fb = flat_f[ua], flat_f[ub]
    t = np.clip((iso - fa) / (fb - fa), 0.0, 1.0)
    pa = np.stack(np.unravel_index(ua, f.shape), -1).astype(np.float64)
    pb = np.stack(np.unravel_index(ub, f.shape), -1).astype(np.float64)
    verts = grid.origin + grid.voxel * (pa + t[:, None] * (pb - pa))

    # orientation: the normal must point from the inside corners towards the outside ones
    def grid_points(idx: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(idx, f.shape), -1).astype(np.float64)

    n_tri = len(tri_a)
    outward = np.concatenate([grid_points(tri_a).mean(1) - grid_points(tri_b).mean(1),
                              grid_points(q[:, :2]).mean(1) - grid_points(q[:, 2:]).mean(1)])
    v = verts[loops]
    tv = v[:3 * n_tri].reshape(-1, 3, 3)
    qv = v[3 * n_tri:].reshape(-1, 4, 3)
    normal = np.concatenate([np.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0]),
                             np.cross(qv[:, 2] - qv[:, 0], qv[:, 3] - qv[:, 1])])
    flip = np.einsum("ij,ij->i", normal, outward) < 0
    loops = loops.astype(np.int64)
    tri_loops = loops[:3 * n_tri].reshape(-1, 3)
    quad_loops = loops[3 * n_tri:].reshape(-1, 4)
    tri_loops[flip[:n_tri]] = tri_loops[flip[:n_tri]][:, ::-1]
    quad_loops[flip[n_tri:]] = quad_loops[flip[n_tri:]][:, ::-1]
    faces = np.concatenate([tri_loops.ravel(), quad_loops.ravel()]).astype(np.int32)
    return verts.astype(np.float32), sizes, faces


def _brute_nearest(points: np.ndarray, means: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest centres by brute force, in chunks of one matrix product each."""
    mm = np.einsum("ij,ij->i", means, means)
    idx = np.empty((len(points), k), np.int64)
    d2 = np.empty((len(points), k), np.float64)
    step = max(1, (1 << 22) // max(1, len(means)))
    for s in range(0, len(points), step):
        p = points[s:s + step]
        dist = np.einsum("ij,ij->i", p, p)[:, None] + mm[None] - 2.0 * p @ means.T
        part = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < len(means) else \
            np.broadcast_to(np.arange(len(means)), dist.shape)
        dd = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(dd, axis=1)
        idx[s:s + step] = np.take_along_axis(part, order, axis=1)
        d2[s:s + step] = np.maximum(np.take_along_axis(dd, order, axis=1), 0.0)
    return idx, d2


def _cell_size(means: np.ndarray, lo: np.ndarray, span: np.ndarray, target: float) -> float:
    """A cell size at which a typical centre shares its cell with about ``target`` others.

    Starts from an even fill of the bounding box and rescales a few times from the measured
    occupancy (Gaussians usually crowd onto surfaces, so occupancy grows with area, cell^2).
    """
    cell = float((np.prod(span) * target / len(means)) ** (1 / 3))
    for _ in range(4):
        dims = np.floor(span / cell).astype(np.int64) + 1
        if np.prod(dims.astype(np.float64)) > 2 ** 62:
            break
        key = np.ravel_multi_index(np.floor((means - lo) / cell).astype(np.int64).T, dims)
        counts = np.unique(key, return_counts=True)[1].astype(np.float64)
        occupancy = (counts * counts).sum() / len(means)  # what the average centre sees
        if 0.5 * target <= occupancy <= 2 * target:
            break
        cell *= float(np.clip(np.sqrt(target / occupancy), 0.25, 4.0))
    return cell


def nearest_gaussians(points: np.ndarray, means: np.ndarray, k: int, *,
                      cell: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (P,k) and squared distances (P,k) of the ``k`` nearest centres to each point, exact.

    Centres and points are hashed into the same cubic cells; the points of one cell are compared
    with the centres of the 3x3x3 cells around it. Anything outside that block is at least one
    cell away, so where the k-th candidate is closer than that the answer is exact; the remaining
    points (in sparse regions) are answered by brute force.
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    means = np.asarray(means, np.float64).reshape(-1, 3)
    k = min(k, len(means))
    if len(points) * len(means) <= 4_000_000:
        return _brute_nearest(points, means, k)
    lo = np.minimum(means.min(0), points.min(0))
    span = np.maximum(np.maximum(means.max(0), points.max(0)) - lo, 1e-12)
    if cell is None:
        cell = _cell_size(means, lo, span, target=3 * k)
        # the 3x3x3 block must reach the k-th neighbour of most points: measure it on a sample
        sample = points[np.random.default_rng(0).choice(len(points), min(256, len(points)), replace=False)]
        reach = np.sqrt(_brute_nearest(sample, means, k)[1][:, -1])
        cell = max(cell, float(np.quantile(reach, 0.95)) * 1.05)
    cell = max(cell, float(span.max()) / 1024)
    dims = np.floor(span / cell).astype(np.int64) + 1
    gkey = np.ravel_multi_index(np.floor((means - lo) / cell).astype(np.int64).T, dims)
    order = np.argsort(gkey, kind="stable")
    uniq, first, counts = np.unique(gkey[order], return_index=True, return_counts=True)
    pcell = np.floor((points - lo) / cell).astype(np.int64)
    pkey = np.ravel_multi_index(pcell.T, dims)
    porder = np.argsort(pkey, kind="stable")
    puniq, pfirst, pcounts = np.unique(pkey[porder], return_index=True, return_counts=True)
    offsets = np.stack(np.meshgrid(*([np.arange(-1, 2)] * 3), indexing="ij"), -1).reshape(-1, 3)

    # the 27 neighbour cells of every occupied point cell, looked up all at once
    pc = np.stack(np.unravel_index(puniq, dims), -1)[:, None, :] + offsets[None]
    valid = ((pc >= 0) & (pc < dims)).all(-1)
    nkey = np.ravel_multi_index(np.clip(pc, 0, dims - 1).reshape(-1, 3).T, dims).reshape(valid.shape)
    pos = np.clip(np.searchsorted(uniq, nkey), 0, len(uniq) - 1)
    hit = valid & (uniq[pos] == nkey)

    idx = np.empty((len(points), k), np.int64)
    d2 = np.full((len(points), k), np.inf)
    limit = cell * cell
    for c in range(len(puniq)):
        h = pos[c][hit[c]]
        if len(h) == 0:
            continue
        cand = np.concatenate([order[first[j]:first[j] + counts[j]] for j in h])
        if len(cand) < k:
            continue
        rows = porder[pfirst[c]:pfirst[c] + pcounts[c]]
        sub_i, sub_d = _brute_nearest(points[rows], means[cand], k)
        idx[rows], d2[rows] = cand[sub_i], sub_d
    rest = np.nonzero(~(d2[:, -1] <= limit))[0]
    if len(rest):
        idx[rest], d2[rest] = _brute_nearest(points[rest], means, k)
    return idx, d2


def bind_to_gaussians(vertices: np.ndarray, means: np.ndarray, sigmas: np.ndarray,
                      opacities: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Attach each vertex to its ``k`` nearest Gaussians: weights ``o_j exp(-d^2 / (2 s_j^2))``
    (``s_j`` the Gaussian's mean standard deviation), normalised per vertex. A vertex far from
    all of them (every weight underflows) falls back to inverse squared distance."""
    idx, d2 = nearest_gaussians(vertices, means, k)
    s = np.asarray(sigmas, np.float64).reshape(len(means), -1).mean(axis=1)[idx]
    o = np.asarray(opacities, np.float64).reshape(-1)[idx]
    w = o * np.exp(-0.5 * np.minimum(d2 / np.maximum(s * s, 1e-20), 700.0))
    total = w.sum(axis=1, keepdims=True)
    weak = total[:, 0] < 1e-12
    if weak.any():
        inv = 1.0 / (d2[weak] + 1e-12)
        w[weak] = inv
        total[weak] = inv.sum(axis=1, keepdims=True)
    return idx, (w / total).astype(np.float32)


def deform(vertices: np.ndarray, neighbours: np.ndarray, weights: np.ndarray,
           means: np.ndarray, reference: int = 0) -> np.ndarray:
    """Vertex positions per frame (T,V,3): each vertex moves by the weighted blend of its
    Gaussians' displacements from frame ``reference``."""
    means = np.asarray(means, np.float32)
    v0 = np.asarray(vertices, np.float32)
    w = np.asarray(weights, np.float32)[..., None]
    ref = means[reference][neighbours]  # (V, K, 3)
    out = np.empty((means.shape[0], *v0.shape), np.float32)
    for t in range(means.shape[0]):
        out[t] = v0 + (w * (means[t][neighbours] - ref)).sum(axis=1)
    return out


def extract_surface(means: np.ndarray, quats: np.ndarray, log_scales: np.ndarray,
                    opacities: np.ndarray, colors: np.ndarray, *, resolution: int = 64,
                    threshold: float = 0.5, neighbours: int = 8) -> Surface:
    """The surface of one frame's Gaussians (arrays with leading dimension N), bound to them.

    ``threshold`` is the iso level of the opacity field: 0.5 wraps a single fully opaque
    Gaussian at about 1.2 standard deviations. Raises ValueError when nothing crosses it.
    """
    sigmas = np.exp(np.asarray(log_scales, np.float64))
    grid = density_grid(means, quats, sigmas, opacities, resolution=resolution)
    verts, sizes, corners = marching_tetrahedra(grid, threshold)
    if len(sizes) == 0:
        raise ValueError(f"the Gaussians' opacity never reaches {threshold}; lower the surface threshold")
    idx, w = bind_to_gaussians(verts, means, sigmas, opacities, neighbours)
    cols = (w[..., None] * np.asarray(colors, np.float32)[idx]).sum(axis=1)
    return Surface(vertices=verts, face_sizes=sizes, face_vertices=corners, neighbours=idx, weights=w,
                   colors=np.clip(cols, 0.0, 1.0).astype(np.float32))


__all__ = ["DensityGrid", "Surface", "density_grid", "marching_tetrahedra", "nearest_gaussians",
           "bind_to_gaussians", "deform", "extract_surface", "covariance_inverses"]
