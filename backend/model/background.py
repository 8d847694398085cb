"""The static background of background mode: world-space Gaussians lifted from the inpainted image.

The inpainted background image shows the scene of one frame (the reference, frame 0 by default)
without its objects. Each pixel (or every s-th pixel in x and y, to stay within a Gaussian budget)
becomes one Gaussian, back-projected through that frame's real camera (MegaSAM's intrinsics and
camera-to-world, OpenCV axes) at MegaSAM's metric depth, so the background lives in the same world as
the objects and stays put while the camera moves. This replaces the public code's lift through the
virtual 49.1° camera with a hand-made world flip (spec §5.2, §5.4).

MegaSAM's depth map at the reference frame shows the objects where they are; there the background's
depth is unknown, so it is filled in from the surrounding background (log depth, from the hole's
rim inwards) before lifting. The fit (``optim/background.py``) refines colours, opacities, sizes and
positions against the background pixels of every training frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from .gaussians import GaussianBatch


def fill_depth(depth: np.ndarray, known: np.ndarray, radius_px: int) -> np.ndarray:
    """``depth`` (H,W) with the pixels outside ``known`` (H,W bool) filled from the known ones.

    The hole is filled from its rim inwards, one ring at a time: each new pixel takes the mean log
    depth of the already-filled pixels within ``radius_px`` (a square window), so a hole between a
    near and a far region gets depths in between on a relative scale. Raises ValueError when
    nothing is known."""
    if not known.any():
        raise ValueError("no known depth to fill from")
    out = np.log(np.maximum(depth, 1e-6)).astype(np.float64)
    filled = known.copy()
    k = 2 * max(1, int(radius_px)) + 1
    while not filled.all():
        w = cv2.blur(filled.astype(np.float64), (k, k), borderType=cv2.BORDER_CONSTANT)
        v = cv2.blur(np.where(filled, out, 0.0), (k, k), borderType=cv2.BORDER_CONSTANT)
        ring = ~filled & (w > 1e-9)
        out[ring] = v[ring] / w[ring]
        filled |= ring
    result = np.exp(out).astype(np.float32)
    result[known] = depth[known]
    return result


def sampling_stride(width: int, height: int, max_gaussians: int) -> int:
    """The smallest pixel stride s with ceil(W/s)·ceil(H/s) ≤ ``max_gaussians`` (s = 1: one per pixel)."""
    if max_gaussians < 1:
        raise ValueError("max_gaussians must be at least 1")
    s = max(1, int(math.floor(math.sqrt(width * height / max_gaussians))))
    while math.ceil(width / s) * math.ceil(height / s) > max_gaussians:
        s += 1
    return s


@dataclass(frozen=True)
class LiftedBackground:
    """Initial background Gaussians as plain arrays: means (N,3) world, log_scales (N,3), colors (N,3)
    in [0,1], and the pixel stride they were sampled with."""

    means: np.ndarray
    log_scales: np.ndarray
    colors: np.ndarray
    stride: int

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])


def lift_background(image: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, *,
                    max_gaussians: int, scale_factor: float) -> LiftedBackground:
    """One Gaussian per sampled pixel of ``image`` (H,W,3 uint8 RGB) at camera depth ``depth`` (H,W),
    through the camera ``K`` (3,3, pixel centres at +0.5) and ``c2w`` (4,4, OpenCV axes).

    Pixels are sampled on a regular grid of stride s (``sampling_stride``) at the centres of s×s
    blocks, coloured by the block's mean colour; each Gaussian is isotropic with a standard deviation
    of ``scale_factor`` × its block's footprint at its depth (s·z/f)."""
    H, W = depth.shape
    if image.shape != (H, W, 3):
        raise ValueError(f"image {image.shape} and depth {depth.shape} differ in size")
    s = sampling_stride(W, H, max_gaussians)
    ys = np.arange(0, H, s)
    xs = np.arange(0, W, s)
    # block centres in pixel coordinates (a block at the border may be cut short)
    cy = np.minimum(ys + s / 2.0, (ys + np.minimum(ys + s, H)) / 2.0)
    cx = np.minimum(xs + s / 2.0, (xs + np.minimum(xs + s, W)) / 2.0)
    u, v = np.meshgrid(cx, cy)
    iy, ix = np.meshgrid(np.minimum((ys + np.minimum(ys + s, H)) // 2, H - 1),
                         np.minimum((xs + np.minimum(xs + s, W)) // 2, W - 1), indexing="ij")
    z = depth[iy, ix].astype(np.float64)
    small = cv2.resize(image, (len(xs), len(ys)), interpolation=cv2.INTER_AREA) if s > 1 else image
    colors = small.reshape(-1, 3).astype(np.float32) / 255.0
    K = np.asarray(K, np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)
    c2w = np.asarray(c2w, np.float64)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    sigma = scale_factor * s * z.reshape(-1) / K[0, 0]
    log_scales = np.repeat(np.log(sigma)[:, None], 3, axis=1)
    return LiftedBackground(means=world.astype(np.float32), log_scales=log_scales.astype(np.float32),
                            colors=colors, stride=s)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


class BackgroundGaussians(nn.Module):
    """Learnable static background Gaussians in world space (rotations fixed at the identity: they
    start isotropic, and an isotropic Gaussian has no rotation to learn)."""

    def __init__(self, lifted: LiftedBackground, opacity: float):
        super().__init__()
        n = lifted.num_gaussians
        self.means = nn.Parameter(torch.from_numpy(lifted.means).float().clone())
        self.log_scales = nn.Parameter(torch.from_numpy(lifted.log_scales).float().clone())
        self.color_logits = nn.Parameter(_logit(torch.from_numpy(lifted.colors).float().clamp(0.02, 0.98)))
        self.opacity_logits = nn.Parameter(_logit(torch.full((n,), float(opacity)).clamp(1e-3, 1 - 1e-3)))
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        self.register_buffer("quats", quats)

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    def batch(self, frames: int) -> GaussianBatch:
        """The same Gaussians at ``frames`` frames (they do not move): a (frames, N, ...) batch."""
        def rep(x: torch.Tensor) -> torch.Tensor:
            return x[None].expand(frames, *x.shape)

        return GaussianBatch(means=rep(self.means), quats=rep(self.quats), log_scales=rep(self.log_scales),
                             colors=rep(torch.sigmoid(self.color_logits)),
                             opacities=rep(torch.sigmoid(self.opacity_logits)))

    @torch.no_grad()
    def arrays(self) -> dict[str, np.ndarray]:
        """Plain float32 arrays (the bundle's background entry): means, quats, log_scales, colors,
        opacities, with leading dimension N."""
        return {"means": self.means.detach().float().cpu().numpy(),
                "quats": self.quats.float().cpu().numpy(),
                "log_scales": self.log_scales.detach().float().cpu().numpy(),
                "colors": torch.sigmoid(self.color_logits).float().cpu().numpy(),
                "opacities": torch.sigmoid(self.opacity_logits).float().cpu().numpy()}
