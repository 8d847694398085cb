"""Stage 1: one object's static Gaussians, fitted to its object-centric crop in its reference frame.

The object is seen through its reference camera (``model.object_camera.ReferenceCamera``: by default the
scene camera restricted to the crop window) in a square crop where its larger side fills
``crop_margin`` of the image, on white. Gaussians start uniform in a ball, and
balanced RGB and alpha losses (ramped up over training, as the spec) shape them while gsplat's
strategy clones, splits and prunes. Score distillation from a novel-view prior plugs in through
``guidance`` (issue #4); without it the back of the object is whatever the front view implies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from ..config import Stage1Config
from ..errors import Cancelled
from ..kernels import rasterize
from ..model.back_prior import mirror_back
from ..model.gaussians import CanonicalGaussians
from ..model.object_camera import ReferenceCamera
from . import losses as L
from .densify import make_strategy, strategy_info


class Guidance(Protocol):
    """A novel-view prior: given a function that renders the object from (elevation, azimuth,
    radius) offsets, returns a loss to add (score distillation). Implementations live in #4."""

    def __call__(self, render_views: Callable[[torch.Tensor], torch.Tensor], step_ratio: float) -> torch.Tensor: ...


@dataclass(frozen=True)
class ObjectCrop:
    """The object-centric target: image (S,S,3) float in [0,1] on white, mask (S,S) float in [0,1]."""

    image: np.ndarray
    mask: np.ndarray

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def _knn_log_scales(means: torch.Tensor, k: int = 3) -> torch.Tensor:
    """log of the RMS distance to the ``k`` nearest neighbours (the usual 3DGS initial scale)."""
    d2 = torch.cdist(means, means).pow(2)
    d2.fill_diagonal_(float("inf"))
    near = d2.topk(k, largest=False).values.mean(-1).clamp_min(1e-10)
    return 0.5 * torch.log(near)


def init_ball(cfg: Stage1Config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``num_points`` Gaussians uniform in a ball of ``init_radius``: grey, faint, isotropic."""
    n = cfg.num_points
    direction = torch.randn(n, 3, generator=generator)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    radius = cfg.init_radius * torch.rand(n, 1, generator=generator).pow(1 / 3)
    means = direction * radius
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    logit = math.log(cfg.init_opacity / (1 - cfg.init_opacity))
    return {
        "means": means,
        "scales": _knn_log_scales(means)[:, None].repeat(1, 3),
        "quats": quats,
        "opacities": torch.full((n,), logit),
        "colors": torch.full((n, 3), math.log(cfg.init_color / (1 - cfg.init_color))),
    }


def _means_lr(cfg: Stage1Config, step: int) -> float:
    """Log-linear decay from ``lr_means`` to ``lr_means_final`` over ``lr_means_steps``, then constant."""
    t = min(max(step / max(cfg.lr_means_steps, 1), 0.0), 1.0)
    return math.exp((1 - t) * math.log(cfg.lr_means) + t * math.log(cfg.lr_means_final))


def render_object(params: dict[str, torch.Tensor], viewmats: torch.Tensor, K: torch.Tensor, size: int,
                  background: float = 1.0):
    """Render the object's Gaussians into C square views (viewmats (C,4,4)); returns image, alpha, meta."""
    C = viewmats.shape[0]
    dev = params["means"].device
    bg = torch.full((C, 3), background, device=dev)
    img, alpha, meta = rasterize(params["means"], params["quats"], params["scales"].exp(),
                                 torch.sigmoid(params["opacities"]), torch.sigmoid(params["colors"]),
                                 viewmats, K[None].expand(C, 3, 3), size, size, backgrounds=bg)
    return img, alpha[..., 0], meta


def fit_object(crop: ObjectCrop, cfg: Stage1Config, ref: ReferenceCamera, device: torch.device,
               generator: torch.Generator, *, iterations: int | None = None, guidance: Guidance | None = None,
               on_step: Callable[[int, int, dict[str, float]], None] = lambda *a: None,
               should_stop: Callable[[], bool] = lambda: False) -> CanonicalGaussians:
    """Fit one object's canonical Gaussians to its crop, seen through ``ref``; returns them after the
    final prune, with a mirrored back where ``cfg.back_prior`` asks for one. The guidance's views orbit
    the object about ``ref``'s line of sight."""
    iters = cfg.iterations if iterations is None else iterations
    S = crop.size
    if ref.size != S:
        raise ValueError(f"the reference camera is for {ref.size} px crops, the crop has {S}")
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.to(device))
                                     for k, v in init_ball(cfg, generator).items()})
    lrs = {"means": cfg.lr_means, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacities": cfg.lr_opacity, "colors": cfg.lr_colors}
    optimizers = {k: torch.optim.AdamW([{"params": [params[k]], "lr": lr, "name": k}], eps=1e-15,
                                       weight_decay=cfg.weight_decay) for k, lr in lrs.items()}
    strategy = make_strategy(cfg, generator)
    strategy.check_sanity(params, optimizers)
    sstate = strategy.initialize_state(scene_scale=cfg.extent)
    target = torch.from_numpy(crop.image).to(device)[None]
    mask_f = torch.from_numpy(crop.mask).to(device)[None]
    mask = mask_f > 0.5
    view = ref.viewmat.to(device)[None]
    K = ref.K.to(device)
    for step in range(1, iters + 1):
        if should_stop():
            raise Cancelled(f"stopped in stage 1 at step {step - 1} of {iters}")
        for g in optimizers["means"].param_groups:
            g["lr"] = _means_lr(cfg, step)
        ramp = step / iters if cfg.ramp else 1.0
        img, alpha, meta = render_object(params, view, K, S)
        info = strategy_info(meta, S, S, 1)
        strategy.step_pre_backward(params, optimizers, sstate, step, info)
        band = cfg.silhouette_band_px
        terms = {"rgb": cfg.w_rgb * ramp * L.balanced_mse(img, target, mask, band),
                 "alpha": cfg.w_alpha * ramp * L.balanced_mse(alpha, mask_f, mask, band)}
        if cfg.w_alpha_sharp > 0:
            terms["alpha_sharp"] = cfg.w_alpha_sharp * ramp * L.alpha_sharpness(alpha, mask, cfg.alpha_sharp_ring_px)
        if guidance is not None:
            terms["guidance"] = guidance(lambda offsets: _render_offsets(params, offsets, ref), step / iters)
        total = terms["total"] = sum(terms.values())
        for o in optimizers.values():
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in optimizers.values():
            o.step()
        strategy.step_post_backward(params, optimizers, sstate, step, info)
        values = {k: float(v.detach()) for k, v in terms.items()}
        if not math.isfinite(values["total"]):
            raise FloatingPointError(f"the stage-1 loss became non-finite at step {step}")
        on_step(step, iters, dict(values, gaussians=float(params["means"].shape[0])))
    canonical = final_prune(params, cfg)
    if uses_back_prior(cfg, guidance is not None):
        canonical = mirror_back(canonical, ref)
    return canonical


def uses_back_prior(cfg: Stage1Config, guided: bool) -> bool:
    """Whether stage 1 gives the object a mirrored back (``Stage1Config.back_prior``)."""
    return cfg.back_prior == "mirror" or (cfg.back_prior == "auto" and not guided)


def _render_offsets(params, offsets: torch.Tensor, ref: ReferenceCamera) -> torch.Tensor:
    """Render orbit views at (Δelevation°, Δazimuth°, Δradius) offsets (V,3) from the reference side."""
    dev = params["means"].device
    return render_object(params, ref.orbit_viewmats(offsets).to(dev), ref.orbit_K().to(dev), ref.size)[0]


@torch.no_grad()
def final_prune(params: dict[str, torch.Tensor], cfg: Stage1Config) -> CanonicalGaussians:
    """Drop faint and oversized Gaussians; the survivors become the object's canonical Gaussians."""
    opac = torch.sigmoid(params["opacities"])
    keep = (opac >= cfg.final_prune_opacity) & (params["scales"].exp().amax(-1) <= cfg.final_prune_scale)
    if int(keep.sum()) == 0:
        raise FloatingPointError("stage 1 left no Gaussians after pruning; the object's crop may be empty")
    return CanonicalGaussians(means=params["means"][keep].detach(), log_scales=params["scales"][keep].detach(),
                              colors=torch.sigmoid(params["colors"][keep]).detach(), opacities=opac[keep].detach(),
                              quats=params["quats"][keep].detach())
