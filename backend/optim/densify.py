"""Densification and pruning for stage 1, through gsplat's DefaultStrategy.

gsplat's strategy decides from accumulated screen-space gradients which Gaussians to clone (small)
or split (large) and edits the parameters and their optimizer state in place. Three changes make it
behave as the spec's stage 1:

- a cap: Gaussians are only added while there are fewer than ``max_gaussians``;
- oversized Gaussians are pruned at every refinement, not only after the first opacity reset;
- the periodic opacity reset actually fires: in gsplat 1.5.3 the condition
  ``step % reset_every == 0 & step > 0`` parses as ``(step % reset_every == 0) and (0 > 0)``, so it
  never runs; here it is evaluated as intended.

gsplat's split draws its new positions from torch's global generator, which no checkpoint holds. Each
refinement here runs with the global generator seeded from one draw of the strategy's ``generator``
(the fit's own, which checkpoints save; ``optim/rng.py``), so a resumed run splits exactly as an
uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove, reset_opa

from ..config import Stage1Config
from .rng import draw_seed, seeded_global


@dataclass
class CappedStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy with a Gaussian budget, early size pruning and a working reset; its
    random draws come from ``generator``."""

    max_gaussians: int = 15000
    generator: torch.Generator | None = None  # the fit's stream; make_strategy always sets it

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):  # noqa: D401
        """Accumulate gradient statistics; refine every ``refine_every`` steps; reset opacities."""
        if step >= self.refine_stop_iter:
            return
        self._update_state(params, state, info, packed=packed)
        if step > self.refine_start_iter and step % self.refine_every == 0:
            if len(params["means"]) < self.max_gaussians:
                if self.generator is None:
                    raise ValueError("CappedStrategy needs a generator for its splits (use make_strategy)")
                with seeded_global(draw_seed(self.generator), params["means"].device):
                    self._grow_gs(params, optimizers, state, step)
            self._prune(params, optimizers, state)
            state["grad2d"].zero_()
            state["count"].zero_()
        if self.reset_every > 0 and step > 0 and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    @torch.no_grad()
    def _prune(self, params, optimizers, state) -> int:
        too_faint = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        too_big = torch.exp(params["scales"]).amax(-1) > self.prune_scale3d * state["scene_scale"]
        drop = too_faint | too_big
        if drop.all():  # never remove the whole object; the final prune reports an empty result
            drop = too_big & ~too_faint if not too_faint.all() else torch.zeros_like(drop)
        n = int(drop.sum())
        if n:
            remove(params=params, optimizers=optimizers, state=state, mask=drop)
        return n


def make_strategy(cfg: Stage1Config, generator: torch.Generator) -> CappedStrategy:
    """The stage-1 strategy with the spec's thresholds (see ``Stage1Config``), drawing from ``generator``."""
    return CappedStrategy(
        prune_opa=cfg.prune_opacity, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
        prune_scale3d=cfg.prune_scale3d, refine_start_iter=0, refine_stop_iter=cfg.densify_until,
        refine_every=cfg.densify_every, reset_every=cfg.opacity_reset_every, absgrad=False,
        max_gaussians=cfg.max_gaussians, generator=generator)


def strategy_info(meta: dict[str, Any], width: int, height: int, n_cameras: int) -> dict[str, Any]:
    """The rasterizer's meta in the form gsplat's strategy reads (per-axis radii, image size)."""
    return {"means2d": meta["means2d"], "radii": meta["radii_xy"], "width": width, "height": height,
            "n_cameras": n_cameras, "gaussian_ids": None}
