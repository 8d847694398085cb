"""Image and mask metrics (backend/metrics.py) against known values and an independent SSIM."""

import math

import numpy as np
import pytest

from backend.metrics import mask_iou, masked_psnr, masked_ssim, ssim_map


def smooth_image(h=32, w=40, seed=0):
    """A textured image in [0, 1] with structure at several scales."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(7 * x + c) * np.cos(5 * y - c) for c in range(3)], -1)
    return np.clip(img + 0.05 * rng.normal(size=img.shape), 0, 1)


def reference_ssim_map(a, b, size=11, sigma=1.5, c1=0.01 ** 2, c2=0.03 ** 2):
    """SSIM written out pixel by pixel: explicit normalised Gaussian window, mirrored-edge padding."""
    r = size // 2
    g = np.array([math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)])
    win = np.outer(g, g)
    win /= win.sum()
    h, w, C = a.shape
    out = np.zeros((h, w))
    for c in range(C):
        pa = np.pad(a[..., c], r, mode="symmetric")
        pb = np.pad(b[..., c], r, mode="symmetric")
        for i in range(h):
            for j in range(w):
                x, y = pa[i:i + size, j:j + size], pb[i:i + size, j:j + size]
                mx, my = (win * x).sum(), (win * y).sum()
                vx = (win * (x - mx) ** 2).sum()
                vy = (win * (y - my) ** 2).sum()
                cxy = (win * (x - mx) * (y - my)).sum()
                out[i, j] += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return out / C


def test_identical_images_score_perfectly():
    img = smooth_image()
    full = np.ones(img.shape[:2], bool)
    assert masked_psnr(img, img, full) == pytest.approx(100.0)
    assert masked_ssim(img, img, full) == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(ssim_map(img, img), 1.0, atol=1e-9)


def test_psnr_of_a_known_error():
    a = np.zeros((8, 8, 3))
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert masked_psnr(a, b, np.ones((8, 8), bool)) == pytest.approx(20.0)


def test_ssim_matches_a_direct_implementation():
    rng = np.random.default_rng(1)
    a = smooth_image(20, 20, seed=2)
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    b[5:9, 12:18] = 0.0  # a sharp local defect
    ours, ref = ssim_map(a, b), reference_ssim_map(a, b)
    assert ours.shape == (20, 20)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_ssim_falls_as_noise_grows():
    img = smooth_image()
    rng = np.random.default_rng(3)
    noise = rng.normal(size=img.shape)
    full = np.ones(img.shape[:2], bool)
    scores = [masked_ssim(img + s * noise, img, full) for s in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    psnrs = [masked_psnr(img + s * noise, img, full) for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs


def test_masked_metrics_ignore_pixels_outside_the_mask():
    rng = np.random.default_rng(4)
    target = smooth_image(40, 40)
    pred = np.clip(target + rng.normal(scale=0.05, size=target.shape), 0, 1)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 12:28] = True
    psnr, ssim = masked_psnr(pred, target, mask), masked_ssim(pred, target, mask)
    # Change only pixels whose SSIM windows (radius 5) never reach a masked pixel.
    far = np.ones((40, 40), bool)
    far[10 - 5:30 + 5, 12 - 5:28 + 5] = False
    p2, t2 = pred.copy(), target.copy()
    p2[far] = rng.uniform(size=(far.sum(), 3))
    t2[far] = 0.0
    assert masked_psnr(p2, t2, mask) == psnr
    assert masked_ssim(p2, t2, mask) == pytest.approx(ssim, abs=1e-12)
    # PSNR reads only the masked pixels themselves, even right next to the border.
    p3 = pred.copy()
    p3[~mask] = 1.0 - p3[~mask]
    assert masked_psnr(p3, target, mask) == psnr
    # And a change inside the mask does change both.
    p4 = pred.copy()
    p4[15:20, 15:20] = 1.0
    assert masked_psnr(p4, target, mask) < psnr and masked_ssim(p4, target, mask) < ssim


def test_empty_masks_give_nan():
    img = smooth_image(8, 8)
    empty = np.zeros((8, 8), bool)
    assert math.isnan(masked_psnr(img, img, empty))
    assert math.isnan(masked_ssim(img, img, empty))
    assert math.isnan(mask_iou(empty, empty))


def test_iou_of_known_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, overlap 10
    assert mask_iou(a, b) == pytest.approx(10 / 30)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, ~a) == 0.0
    assert mask_iou(a, np.zeros_like(a)) == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        masked_psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), np.ones((4, 4), bool))
    with pytest.raises(ValueError):
        masked_ssim(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), np.ones((4, 5), bool))
    with pytest.raises(ValueError):
        mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_area_ratio_says_whether_a_render_spills_or_falls_short():
    from backend.evaluate import _silhouette_fractions

    def _area_ratio(pred, true):
        return _silhouette_fractions(pred, true)[0]

    true = np.zeros((10, 10), bool)
    true[2:6, 2:6] = True
    big = np.zeros_like(true)
    big[1:7, 2:6] = True
    assert _area_ratio(big, true) == 1.5
    assert _area_ratio(true[::-1], true) == 1.0
    assert _area_ratio(np.zeros_like(true), true) == 0.0
    assert np.isnan(_area_ratio(true, np.zeros_like(true)))
