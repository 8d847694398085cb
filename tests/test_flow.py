"""Optical-flow priors: DIS flow on synthetic shifted textures, the forward–backward occlusion check, warping."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from backend.priors.flow import FLOW_PRESETS, FlowPairs, consistency_mask, estimate_flow, warp

SIZE = 96
PAD = 12  # margin of the big texture, so that shifted crops never wrap around
SHIFT = (3.0, -2.0)  # (x, y) px: content moves right 3 and up 2 from one frame to the next
INNER = np.s_[8:-8, 8:-8]  # away from the borders, where content enters or leaves the frame


def texture(n: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    """A smooth random RGB texture, (n, n, 3) uint8, with detail at every place (no flat patches)."""
    rng = np.random.default_rng(seed)
    chans = []
    for _ in range(3):
        x = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), sigma)
        chans.append((x - x.min()) / (x.max() - x.min()) * 255.0)
    return np.stack(chans, axis=-1).round().astype(np.uint8)


def shifted_frames(count: int, seed: int = 0) -> np.ndarray:
    """(count, SIZE, SIZE, 3) crops of one texture, frame t showing the content moved by t·SHIFT."""
    dx, dy = int(SHIFT[0]), int(SHIFT[1])
    big = texture(SIZE + 2 * PAD + count * 5, seed)
    out = []
    for t in range(count):
        # frame_t(y, x) = frame_0(y - t·dy, x - t·dx)
        r, c = PAD - t * dy, PAD - t * dx + count * 5
        out.append(big[r : r + SIZE, c : c + SIZE])
    return np.stack(out)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return shifted_frames(3)


@pytest.fixture(scope="module")
def shift_flow(frames) -> FlowPairs:
    return estimate_flow(frames, [(0, 1)])


def test_crops_move_by_the_intended_shift(frames):
    # Guards the fixture itself: frame 1 is frame 0 moved 3 right and 2 up.
    assert np.array_equal(frames[1][:-2, 3:], frames[0][2:, :-3])
    assert not np.array_equal(frames[1], frames[0])


def test_constant_shift_is_recovered(shift_flow):
    assert isinstance(shift_flow, FlowPairs)
    assert shift_flow.method == "opencv-dis-medium"
    assert shift_flow.pairs.shape == (1, 2) and shift_flow.pairs.tolist() == [[0, 1]]
    assert shift_flow.flow.shape == (1, SIZE, SIZE, 2) and shift_flow.flow.dtype == np.float32
    assert shift_flow.valid.shape == (1, SIZE, SIZE) and shift_flow.valid.dtype == bool

    err = np.linalg.norm(shift_flow.flow[0][INNER] - np.array(SHIFT), axis=-1)
    assert np.median(err) < 0.3
    assert np.percentile(err, 95) < 0.5
    assert shift_flow.valid[0][INNER].all()


def test_pixels_leaving_the_frame_are_invalid(shift_flow):
    valid = shift_flow.valid[0]
    # x + 3 passes the right edge for the last 3 columns; y − 2 passes the top for the first 2 rows.
    assert not valid[:, -3:].any()
    assert not valid[:2, :].any()
    assert valid[2:, :-3].mean() > 0.98


@pytest.mark.parametrize("preset", FLOW_PRESETS)
def test_every_preset_tracks_the_shift(frames, preset):
    fp = estimate_flow(frames, [(0, 1)], preset=preset)
    assert fp.method == f"opencv-dis-{preset}"
    err = np.linalg.norm(fp.flow[0][INNER] - np.array(SHIFT), axis=-1)
    assert np.median(err) < 0.3
    assert fp.valid[0][INNER].mean() > 0.9


def test_region_hidden_in_b_is_invalid_in_a():
    """A static textured square in front of a moving background hides a strip of background in b.

    The background moves (6, −4) px here rather than (3, −2): a strip only 2–3 px wide is below what
    DIS resolves (its flow is smoothed across edges over a few pixels), so it could not be tested.
    """
    dx, dy = 6, -4
    top, left, side = 36, 36, 28
    big = texture(SIZE + 2 * PAD, seed=0)
    a = big[PAD : PAD + SIZE, PAD : PAD + SIZE].copy()
    b = big[PAD - dy : PAD - dy + SIZE, PAD - dx : PAD - dx + SIZE].copy()
    square = texture(side, seed=100)
    a[top : top + side, left : left + side] = square
    b[top : top + side, left : left + side] = square
    fp = estimate_flow(np.stack([a, b]), [(0, 1)])
    valid = fp.valid[0]

    rows, cols = np.mgrid[:SIZE, :SIZE]

    def in_square(i, j):
        return (i >= top) & (i < top + side) & (j >= left) & (j < left + side)

    # Background pixels of a whose true landing point in b is covered by the square.
    hidden = in_square(rows + dy, cols + dx) & ~in_square(rows, cols)
    assert hidden.sum() == side * abs(dx) + side * abs(dy) - abs(dx * dy)  # an L-shaped strip
    assert (~valid[hidden]).mean() > 0.6

    # The rest of the background close to the square stays valid, and so does the square itself.
    near = cv2.dilate(in_square(rows, cols).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    visible_near = near & ~hidden & ~in_square(rows, cols)
    assert valid[visible_near].mean() > 0.8
    assert valid[in_square(rows, cols)].mean() > 0.8
    far = np.zeros_like(hidden)
    far[INNER] = True
    far &= ~near
    assert valid[far].mean() > 0.95
    err = np.linalg.norm(fp.flow[0][far] - np.array([dx, dy]), axis=-1)
    assert np.median(err) < 0.3


def test_non_consecutive_and_reversed_pairs(frames):
    fp = estimate_flow(frames, [(0, 2), (2, 1), (0, 1)])
    assert fp.pairs.tolist() == [[0, 2], [2, 1], [0, 1]]
    expected = [np.array(SHIFT) * 2, -np.array(SHIFT), np.array(SHIFT)]
    for p, want in enumerate(expected):
        err = np.linalg.norm(fp.flow[p][INNER] - want, axis=-1)
        assert np.median(err) < 0.3, (fp.pairs[p], np.median(err))
        assert fp.valid[p][INNER].mean() > 0.95
    assert fp.index(2, 1) == 1
    with pytest.raises(KeyError):
        fp.index(1, 0)


def test_warping_b_by_the_flow_gives_back_a(frames, shift_flow):
    back = warp(frames[1], shift_flow.flow[0])
    assert back.shape == frames[0].shape and back.dtype == np.uint8
    v = shift_flow.valid[0]
    diff = np.abs(back.astype(np.int16) - frames[0].astype(np.int16))[v]
    assert diff.mean() < 2.0
    # a check that can fail: the unwarped frame differs a lot
    assert np.abs(frames[1].astype(np.int16) - frames[0].astype(np.int16))[v].mean() > 4 * max(diff.mean(), 1.0)


def test_flow_pairs_is_frozen(shift_flow):
    with pytest.raises(dataclasses.FrozenInstanceError):
        shift_flow.method = "other"  # type: ignore[misc]


# --- consistency_mask on exact, hand-made flows -------------------------------------------------

H, W = 20, 30


def const_flow(fx: float, fy: float) -> np.ndarray:
    f = np.zeros((H, W, 2), np.float32)
    f[..., 0], f[..., 1] = fx, fy
    return f


def test_consistent_flows_are_valid_except_where_they_leave_the_frame():
    m = consistency_mask(const_flow(2, 0), const_flow(-2, 0), rel=0.01, abs_tol=0.5)
    assert m.shape == (H, W) and m.dtype == bool
    assert m[:, : W - 2].all()
    assert not m[:, W - 2 :].any()

    m = consistency_mask(const_flow(0, -3), const_flow(0, 3), rel=0.01, abs_tol=0.5)
    assert m[3:].all() and not m[:3].any()


def test_inconsistent_flows_are_invalid():
    m = consistency_mask(const_flow(2, 0), const_flow(0, 0), rel=0.01, abs_tol=0.5)
    assert not m.any()


def test_backward_flow_is_read_where_the_forward_flow_lands():
    fwd = const_flow(2, 0)
    bwd = const_flow(-2, 0)
    bwd[:, 20:25] = 0.0  # in b, columns 20..24 do not lead back
    m = consistency_mask(fwd, bwd, rel=0.01, abs_tol=0.5)
    # pixels of a landing on columns 20..24 of b are j = 18..22
    assert not m[:, 18:23].any()
    assert m[:, :18].all() and m[:, 23 : W - 2].all()


def test_backward_flow_is_sampled_bilinearly():
    fwd = const_flow(0.5, 0)
    bwd = const_flow(0, 0)
    bwd[:, 1::2, 0] = -1.0  # odd columns lead back by 1 px, even columns not at all
    # Halfway between columns, the bilinear backward flow is −0.5, exactly undoing the forward flow;
    # a nearest-neighbour read would give 0 or −1 and miss by 0.5 px.
    m = consistency_mask(fwd, bwd, rel=0.0, abs_tol=1e-3)
    assert m[:, : W - 1].all()


def test_tolerance_grows_with_flow_length():
    # |f + b| = 0.05; tolerance 0.01 · (10 + 10.05) = 0.2005 with no absolute slack
    assert consistency_mask(const_flow(10, 0), const_flow(-10.05, 0), rel=0.01, abs_tol=0.0)[:, :10].all()
    # |f + b| = 0.3 > 0.01 · (10 + 10.3)
    assert not consistency_mask(const_flow(10, 0), const_flow(-10.3, 0), rel=0.01, abs_tol=0.0).any()
    # the absolute slack covers it
    assert consistency_mask(const_flow(10, 0), const_flow(-10.3, 0), rel=0.01, abs_tol=0.5)[:, :10].all()


def test_nan_flow_is_invalid():
    fwd = const_flow(1, 0)
    fwd[5, 5] = np.nan
    m = consistency_mask(fwd, const_flow(-1, 0), rel=0.01, abs_tol=0.5)
    assert not m[5, 5] and m[4, 5] and m[6, 5]


# --- warp -------------------------------------------------------------------------------------


def test_warp_constant_shift_matches_roll():
    img = texture(40, seed=3)
    out = warp(img, np.broadcast_to(np.array([3.0, -2.0], np.float32), (40, 40, 2)))
    # out[i, j] = img[i − 2, j + 3] = np.roll(img, (2, −3))[i, j]
    rolled = np.roll(img, shift=(2, -3), axis=(0, 1))
    assert out.shape == img.shape and out.dtype == img.dtype
    assert np.array_equal(out[2:, :-3], rolled[2:, :-3])
    assert not np.array_equal(out, img)


def test_warp_is_bilinear_and_keeps_shape_and_dtype():
    ramp = np.tile(np.arange(10, dtype=np.float32) * 2.0, (6, 1))  # value 2·column
    out = warp(ramp, np.broadcast_to(np.array([0.25, 0.0], np.float32), (6, 10, 2)))
    assert out.shape == (6, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :-1], ramp[:, :-1] + 0.5, atol=1e-3)

    many = np.repeat(ramp[..., None], 6, axis=-1).astype(np.float64)  # more channels than remap likes
    out = warp(many, np.broadcast_to(np.array([0.25, 0.0], np.float32), (6, 10, 2)))
    assert out.shape == (6, 10, 6) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, :-1], many[:, :-1] + 0.5, atol=1e-3)

    mask = np.zeros((6, 10), bool)
    mask[:, 5:] = True
    out = warp(mask, np.broadcast_to(np.array([1.0, 0.0], np.float32), (6, 10, 2)))
    assert out.dtype == bool and out[:, 4:].all() and not out[:, :4].any()


# --- invalid inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames_fn", "pairs", "kwargs", "message"),
    [
        (lambda f: f.astype(np.float32), [(0, 1)], {}, "uint8"),
        (lambda f: f[..., 0], [(0, 1)], {}, r"\(T, H, W, 3\)"),
        (lambda f: np.concatenate([f, f[..., :1]], axis=-1), [(0, 1)], {}, r"\(T, H, W, 3\)"),
        (lambda f: f[:1], [(0, 0)], {}, "at least 2 frames"),
        (lambda f: f[:, :10, :10], [(0, 1)], {}, "too small"),
        (lambda f: f, [(0, 3)], {}, r"\(0, 3\).*out of range.*0\.\.2"),
        (lambda f: f, [(-1, 1)], {}, "out of range"),
        (lambda f: f, [(1, 1)], {}, "itself"),
        (lambda f: f, [(0, 1, 2)], {}, "pairs"),
        (lambda f: f, [(0.0, 1.0)], {}, "integer"),
        (lambda f: f, [(0, 1)], {"preset": "slow"}, "preset 'slow'.*ultrafast, fast, medium"),
        (lambda f: f, [(0, 1)], {"fb_abs": -1.0}, "absolute"),
        (lambda f: f, [(0, 1)], {"fb_rel": float("nan")}, "relative"),
    ],
)
def test_invalid_inputs_raise_value_error(frames, frames_fn, pairs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_flow(frames_fn(frames), pairs, **kwargs)


def test_list_of_frames_is_rejected(frames):
    with pytest.raises(ValueError, match="numpy array"):
        estimate_flow(list(frames), [(0, 1)])  # type: ignore[arg-type]


def test_empty_pair_list_gives_empty_result(frames):
    fp = estimate_flow(frames, [])
    assert fp.pairs.shape == (0, 2) and fp.flow.shape == (0, SIZE, SIZE, 2) and fp.valid.shape == (0, SIZE, SIZE)


def test_bad_flows_raise_value_error():
    with pytest.raises(ValueError, match="same shape"):
        consistency_mask(const_flow(1, 0), np.zeros((H, W + 1, 2), np.float32), rel=0.01, abs_tol=0.5)
    with pytest.raises(ValueError, match=r"forward flow must have shape \(H, W, 2\)"):
        consistency_mask(np.zeros((H, W, 3), np.float32), const_flow(1, 0), rel=0.01, abs_tol=0.5)
    with pytest.raises(ValueError, match="floating point"):
        warp(np.zeros((H, W), np.uint8), np.zeros((H, W, 2), np.int32))
    with pytest.raises(ValueError, match="image must be"):
        warp(np.zeros((H, W, 3, 1), np.uint8), const_flow(1, 0))
