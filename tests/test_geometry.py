"""Quaternion helpers: the bilinear-map forms against the written-out component formulas."""

import torch

from backend.model import geometry as G


def _hamilton(a, b):
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def _rotmat(q):
    w, x, y, z = G.quat_normalize(q).unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(*q.shape[:-1], 3, 3)


def test_the_product_is_hamiltons_with_its_gradients_and_broadcasting():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 1, 4, generator=g, requires_grad=True)
    b = torch.randn(1, 7, 4, generator=g, requires_grad=True)
    got, want = G.quat_multiply(a, b), _hamilton(a, b)
    assert got.shape == (5, 7, 4)
    torch.testing.assert_close(got, want)
    up = torch.randn(5, 7, 4, generator=g)
    for x, y in zip(torch.autograd.grad(got, (a, b), up), torch.autograd.grad(want, (a, b), up)):
        torch.testing.assert_close(x, y)
    unit_k, unit_i = torch.tensor([0.0, 0, 0, 1]), torch.tensor([0.0, 1, 0, 0])  # k ⊗ i = j
    torch.testing.assert_close(G.quat_multiply(unit_k, unit_i), torch.tensor([0.0, 0, 1, 0]))


def test_the_matrix_is_the_normalised_quaternions_rotation_with_its_gradients():
    g = torch.Generator().manual_seed(1)
    q = (3 * torch.randn(4, 6, 4, generator=g)).requires_grad_()  # not unit length
    R = G.quat_to_rotmat(q)
    torch.testing.assert_close(R, _rotmat(q))
    up = torch.randn(4, 6, 3, 3, generator=g)
    torch.testing.assert_close(torch.autograd.grad(R, q, up)[0], torch.autograd.grad(_rotmat(q), q, up)[0])
    eye = torch.eye(3).expand(4, 6, 3, 3)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R.detach()), torch.ones(4, 6), atol=1e-5, rtol=0)
    v = torch.randn(3, generator=g)  # R v equals q v q* for the unit quaternion
    n = G.quat_normalize(q.detach()[0, 0])
    qv = G.quat_multiply(G.quat_multiply(n, torch.cat([torch.zeros(1), v])), G.quat_conjugate(n))
    torch.testing.assert_close(R.detach()[0, 0] @ v, qv[1:])
    assert G.quat_to_rotmat(torch.tensor([1.0, 0, 0, 0])).equal(torch.eye(3))


def test_the_maps_constants_are_made_once_per_device_and_dtype():
    a = G._bilinear("rotmat", torch.device("cpu"), torch.float32)
    assert G._bilinear("rotmat", torch.device("cpu"), torch.float32) is a
    assert G._bilinear("rotmat", torch.device("cpu"), torch.float64).dtype == torch.float64
