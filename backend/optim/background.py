"""Fitting background mode's static background through the real cameras, and measuring it.

The background Gaussians (``model/background.py``) are compared with every training frame where the
background is seen: the background mask (``Annotations/000`` when given, else the pixels no object
mask covers), shrunk by ``mask_erode_px`` so that the mixed colours at object edges do not leak into
it. Every frame is rendered through its own camera (MegaSAM's intrinsics and pose), so what the fit
learns is one static world that explains the plate as the camera moves. The objects are fitted on
their own (stage 1 and 2, which only look inside the object masks); background and objects meet in
the joint render of the previews and the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from ..config import BackgroundConfig
from ..errors import Cancelled
from ..model.background import BackgroundGaussians
from ..model.camera import Cameras
from ..model.gaussians import GaussianBatch
from ..model.scene import render_scene
from .state import finish_step


def background_masks(background: np.ndarray | None, object_masks: np.ndarray, erode_px: int) -> np.ndarray:
    """(T,H,W) bool: where the background is seen, ``erode_px`` pixels away from anything else.

    ``background`` (T,H,W) bool is the clip's background mask (folder 000) or None, in which case the
    pixels that no object's mask (K,T,H,W) covers are the background. Eroding does not eat into the
    image border (pixels outside the image do not count as foreground)."""
    base = background if background is not None else ~object_masks.any(0)
    if erode_px <= 0:
        return base.copy()
    k = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
    return np.stack([cv2.erode(m.astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE).astype(bool) for m in base])


@dataclass
class BackgroundTargets:
    """What the background is fitted to: frames (T,H,W,3) float [0,1] and masks (T,H,W) bool on the
    fit's device, depth (T,H,W) MegaSAM's metric depth or None, and ``train`` (M,) host long, the
    training frames with at least one background pixel."""

    frames: torch.Tensor
    masks: torch.Tensor
    depth: torch.Tensor | None
    train: torch.Tensor


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def render_background(bg: GaussianBatch, cameras: Cameras, frames: torch.Tensor, backdrop: torch.Tensor):
    """The background alone at ``frames`` (B,) through their cameras over ``backdrop`` (B,3):
    a ``SceneRender`` (no instance channels)."""
    fr = frames.to(cameras.c2w.device)
    return render_scene([], cameras.viewmats(fr), cameras.K[fr], cameras.width, cameras.height, backdrop,
                        near=cameras.near, far=cameras.far, static=bg)


def background_step_losses(model: BackgroundGaussians, targets: BackgroundTargets, cameras: Cameras,
                           frames: torch.Tensor, backdrop: torch.Tensor, cfg: BackgroundConfig) -> dict[str, torch.Tensor]:
    """The weighted terms for frames ``frames`` (B,) host long; ``total`` is their sum (see
    ``BackgroundConfig`` for the terms)."""
    dev = targets.frames.device
    fr = frames.to(dev)
    r = render_background(model.batch(len(frames)), cameras, fr, backdrop)
    mask = targets.masks[fr]
    terms = {"rgb": cfg.w_rgb * _masked_mean(((r.image - targets.frames[fr]) ** 2).mean(-1), mask),
             "alpha": cfg.w_alpha * _masked_mean((1 - r.alpha) ** 2, mask)}
    if targets.depth is not None and cfg.w_depth > 0:
        d = targets.depth[fr]
        sel = mask & (r.alpha > 0.5) & (d > 0)
        err = (torch.log(r.depth.clamp_min(1e-6)) - torch.log(d.clamp_min(1e-6))).abs()
        terms["depth"] = cfg.w_depth * _masked_mean(err, sel)
    terms["total"] = sum(terms.values())
    return terms


def fit_background(model: BackgroundGaussians, targets: BackgroundTargets, cameras: Cameras,
                   cfg: BackgroundConfig, generator: torch.Generator, *, scene_depth: float,
                   on_step: Callable[[int, int, dict[str, float]], None] = lambda *a: None,
                   should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Optimise the background in place for ``cfg.iterations`` steps (Adam; positions move at
    ``lr_means`` × ``scene_depth``); returns the last step's loss terms.

    Each step renders ``frames_per_step`` training frames drawn from ``generator`` over a random
    white or black backdrop per frame."""
    if targets.train.numel() == 0:
        raise ValueError("no training frame shows any background")
    opt = torch.optim.Adam([
        {"params": [model.means], "lr": cfg.lr_means * scene_depth},
        {"params": [model.color_logits], "lr": cfg.lr_colors},
        {"params": [model.opacity_logits], "lr": cfg.lr_opacity},
        {"params": [model.log_scales], "lr": cfg.lr_scales},
    ], eps=1e-15)
    dev = targets.frames.device
    per = min(cfg.frames_per_step, int(targets.train.numel()))
    last: dict[str, float] = {}
    for step in range(1, cfg.iterations + 1):
        if should_stop():
            raise Cancelled(f"stopped while fitting the background (step {step - 1} of {cfg.iterations})")
        frames = targets.train[torch.randperm(int(targets.train.numel()), generator=generator)[:per]]
        backdrop = (torch.rand(per, generator=generator) < 0.5).float()[:, None].repeat(1, 3).to(dev)
        opt.zero_grad(set_to_none=True)
        terms = background_step_losses(model, targets, cameras, frames, backdrop, cfg)
        terms["total"].backward()
        opt.step()
        last = dict(zip(terms, torch.stack([v.detach() for v in terms.values()]).tolist()))
        finish_step(step, cfg.iterations, last, 0, on_step, lambda: None)
    return last


@dataclass(frozen=True)
class BackgroundScore:
    """The background's fidelity on some frames: PSNR (dB) over every background pixel (the render
    over black), PSNR over the pixels it covers (alpha > 0.5), and that coverage (fraction)."""

    psnr: float
    psnr_covered: float
    coverage: float
    frames: list[int]

    def to_dict(self) -> dict:
        return {"psnr": round(self.psnr, 3), "psnr_covered": round(self.psnr_covered, 3),
                "coverage": round(self.coverage, 4), "frames": list(self.frames)}


def _psnr(se: float, n: float) -> float:
    return float("inf") if se == 0 else 10.0 * float(np.log10(max(n, 1.0) / se))


@torch.no_grad()
def score_background(bg: GaussianBatch, cameras: Cameras, frames_rgb: torch.Tensor, masks: torch.Tensor,
                     frame_ids: list[int], chunk: int = 4) -> BackgroundScore:
    """Masked PSNR of the background alone (``bg``, a 1-frame batch of static Gaussians) against
    ``frames_rgb`` (T,H,W,3) float [0,1] on ``masks`` (T,H,W) bool at ``frame_ids``, through the
    frames' own cameras. Errors are pooled over all selected pixels of all frames (one mean squared
    error, not a mean of per-frame PSNRs)."""
    dev = frames_rgb.device
    se = se_cov = n = n_cov = 0.0
    for s in range(0, len(frame_ids), chunk):
        ids = torch.tensor(frame_ids[s:s + chunk], dtype=torch.long, device=dev)
        B = len(ids)
        batch = GaussianBatch(*(x.expand(B, *x.shape[1:]) for x in (bg.means, bg.quats, bg.log_scales, bg.colors,
                                                                   bg.opacities)))
        r = render_background(batch, cameras, ids, torch.zeros(B, 3, device=dev))
        m = masks[ids]
        err = ((r.image.clamp(0, 1) - frames_rgb[ids]) ** 2).mean(-1)
        cov = m & (r.alpha > 0.5)
        se += float(err[m].sum())
        n += float(m.sum())
        se_cov += float(err[cov].sum())
        n_cov += float(cov.sum())
    if n == 0:
        raise ValueError("the background mask selects no pixel in these frames")
    return BackgroundScore(psnr=_psnr(se, n), psnr_covered=_psnr(se_cov, n_cov) if n_cov else float("nan"),
                           coverage=n_cov / n, frames=list(frame_ids))
