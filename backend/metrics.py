"""Image and mask metrics for evaluating a render against its clip, restricted to the objects' pixels.

The scene's background is not reconstructed, so every image metric here takes a mask (normally the
union of the object masks) and scores only the pixels inside it. Images are (H, W, 3) float arrays with
values in [0, 1] (data range 1); masks are (H, W) bool arrays. Plain numpy (and OpenCV for the SSIM
window), so the metrics can be used and checked without torch.
"""

from __future__ import annotations

import cv2
import numpy as np

SSIM_WINDOW = 11  # Gaussian window size of Wang et al. (2004)
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2  # (K1 * L)^2 with L = 1, stabilises the luminance term where both means are ~0
SSIM_C2 = 0.03 ** 2  # (K2 * L)^2 with L = 1, stabilises the contrast-structure term on flat patches
MSE_FLOOR = 1e-10  # identical images score 100 dB instead of infinity


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"images differ in shape: {p.shape} vs {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) images, got shape {p.shape}")
    return p, t


def _mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask, bool)
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask has shape {m.shape}, images have {tuple(shape[:2])}")
    return m


def masked_psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB (data range 1) over the pixels inside ``mask``; NaN when the mask is empty.

    The squared error is averaged over channels, then over the masked pixels, so pixels outside the
    mask never influence the score. The MSE is floored at 1e-10, so identical images give 100 dB.
    """
    p, t = _pair(pred, target)
    m = _mask(mask, p.shape)
    if not m.any():
        return float("nan")
    se = (p - t) ** 2
    if se.ndim == 3:
        se = se.mean(-1)
    mse = float(se[m].mean())
    return float(-10.0 * np.log10(max(mse, MSE_FLOOR)))


def _blur(img: np.ndarray) -> np.ndarray:
    # BORDER_REFLECT mirrors including the edge pixel (…cba|abc…), the usual "reflect" of SSIM code.
    return cv2.GaussianBlur(img, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, sigmaY=SSIM_SIGMA,
                            borderType=cv2.BORDER_REFLECT)


def ssim_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The local SSIM index of Wang et al. (2004) at every pixel, (H, W), averaged over channels.

    Local means, variances and covariance come from an 11×11 Gaussian window (σ = 1.5) with mirrored
    borders; C1 = 0.01², C2 = 0.03² for data range 1. Each channel is scored separately, as is common
    for colour images, and the channel maps are averaged. 1 means locally identical.
    """
    p, t = _pair(pred, target)
    if p.ndim == 2:
        p, t = p[..., None], t[..., None]
    maps = []
    for c in range(p.shape[-1]):
        x, y = np.ascontiguousarray(p[..., c]), np.ascontiguousarray(t[..., c])
        mx, my = _blur(x), _blur(y)
        vx = _blur(x * x) - mx * mx
        vy = _blur(y * y) - my * my
        cxy = _blur(x * y) - mx * my
        num = (2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)
        den = (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2)
        maps.append(num / den)
    return np.mean(maps, axis=0)


def masked_ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``ssim_map(pred, target)`` over the pixels inside ``mask``; NaN when the mask is empty.

    This is SSIM's own local statistics averaged over the masked pixels: the windows of pixels near the
    mask border still reach outside it, so the pixels outside the mask are taken exactly as the caller
    gives them in both images. To score only the objects, give both images the same background (e.g.
    black outside the union mask); otherwise a background difference leaks in at the border.
    """
    p, t = _pair(pred, target)
    m = _mask(mask, p.shape)
    if not m.any():
        return float("nan")
    return float(ssim_map(p, t)[m].mean())


def mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty (nothing to compare)."""
    a, b = np.asarray(pred, bool), np.asarray(true, bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.count_nonzero(a | b)
    if union == 0:
        return float("nan")
    return float(np.count_nonzero(a & b) / union)
