"""The skeleton optimizer: per-object Gaussians lifted from masks, rigid per-frame motion, one joint fit.

Stages (each a plain function with typed inputs and outputs):

1. ``build_scene``  tracks → per-object canonical Gaussians (lifted from the reference frame's mask
   at a depth from the depth source) and per-frame motion initialised from the 2D tracks.
2. ``fit_scene``    all objects rendered jointly (composited by depth, with an object-id channel) and
   fitted to the frames, the union mask and each object's own mask.

The full GenMOJO method replaces these two functions; the seams it needs — the ``Deformation`` call,
``render_scene``, the loss functions and the config — stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..errors import Cancelled
from ..model.camera import Cameras
from ..model.gaussians import CanonicalGaussians, GaussianBatch, lift_from_mask
from ..model.geometry import unproject
from ..model.motion import RigidMotion
from ..model.scene import SceneRender, render_scene
from ..model.tracks import ObjectTrack
from . import losses as L
from .state import FitState, finish_step


class SceneModel(nn.Module):
    """All objects of a clip: canonical Gaussians and motion per object."""

    def __init__(self, object_ids: list[str], canonicals: list[CanonicalGaussians],
                 motions: list[RigidMotion], radii: list[float]):
        super().__init__()
        self.object_ids = list(object_ids)
        self.canonicals = nn.ModuleList(canonicals)
        self.motions = nn.ModuleList(motions)
        self.radii = list(radii)

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)

    def at(self, frames: torch.Tensor) -> list[GaussianBatch]:
        """Every object's world-space Gaussians at the given frame indices."""
        return [m(c, frames) for c, m in zip(self.canonicals, self.motions)]

    world_at = at  # the name the baker uses for every model

    def canonical(self, k: int) -> CanonicalGaussians:
        return self.canonicals[k]


def build_scene(frames: np.ndarray, masks: np.ndarray, tracks: list[ObjectTrack], cameras: Cameras,
                depths: np.ndarray, cfg: Config, generator: torch.Generator,
                trained: np.ndarray | None = None) -> SceneModel:
    """Lift each object from its reference frame and initialise its per-frame translation.

    ``depths`` (K, T) is each object's camera distance per frame from the depth source; the initial
    translation puts the object's origin on the ray through its mask centroid at that depth.
    """
    canonicals, motions, radii = [], [], []
    for k, tr in enumerate(tracks):
        r = tr.reference
        lifted = lift_from_mask(frames[r], masks[k, r], tr.centroid[r], cameras.K[r].double(),
                                cameras.c2w[r].double(), float(depths[k, r]), cfg.init.gaussians_per_object,
                                thickness=cfg.init.thickness, opacity=cfg.init.opacity,
                                scale_factor=cfg.init.scale_factor, generator=generator)
        T = tr.num_frames
        origins = torch.stack([
            unproject(torch.tensor(tr.centroid[t], dtype=torch.float64),
                      torch.tensor(float(depths[k, t]), dtype=torch.float64),
                      cameras.K[t].double(), cameras.c2w[t].double())
            for t in range(T)])
        origins[r] = lifted.origin.double()
        canonicals.append(lifted.gaussians)
        motions.append(RigidMotion(origins, trained))
        radii.append(lifted.radius)
    return SceneModel([tr.id for tr in tracks], canonicals, motions, radii)


@dataclass
class FitTargets:
    """The clip on the fit's device: frames (T,H,W,3) float in [0,1], masks (T,H,W,K) bool, and the
    training frames (M,) the fit may sample."""

    frames: torch.Tensor
    masks: torch.Tensor
    train: torch.Tensor


def scene_losses(render: SceneRender, frames: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor,
                 model: SceneModel, cfg: Config, scene_depth: float) -> dict[str, torch.Tensor]:
    """Every weighted loss term for one batch of frames; ``total`` is their sum."""
    w = cfg.losses
    union = masks.any(-1)
    target = torch.where(union[..., None], frames, backgrounds[:, None, None, :])
    terms = {
        "rgb": w.rgb * L.balanced_mse(render.image, target, union),
        "alpha": w.alpha * L.balanced_mse(render.alpha, union.float(), union),
        "instance": w.instance * L.instance_mse(render.instance, masks),
        "motion_smooth": w.motion_smooth * sum(L.second_difference(m.translations, scene_depth)
                                               for m in model.motions),
        "scale_reg": w.scale_reg * sum(L.oversize(c.log_scales, 0.25 * r)
                                       for c, r in zip(model.canonicals, model.radii)),
    }
    terms["total"] = sum(terms.values())
    return terms


def make_optimizer(model: SceneModel, cfg: Config, scene_depth: float) -> torch.optim.Optimizer:
    """Adam with one parameter group per kind of parameter and object (spatial rates scaled to size)."""
    f = cfg.fit
    groups = []
    for c, m, r in zip(model.canonicals, model.motions, model.radii):
        groups += [
            {"params": [c.means], "lr": f.lr_means * r * 10, "name": "means"},
            {"params": [c.quats], "lr": f.lr_quats, "name": "quats"},
            {"params": [c.log_scales], "lr": f.lr_log_scales, "name": "log_scales"},
            {"params": [c.color_logits], "lr": f.lr_colors, "name": "colors"},
            {"params": [c.opacity_logits], "lr": f.lr_opacity, "name": "opacity"},
            {"params": [m.translations], "lr": f.lr_translation * scene_depth, "name": "translation"},
            {"params": [m.rotations], "lr": f.lr_rotation, "name": "rotation"},
        ]
    return torch.optim.Adam(groups, eps=1e-15)


def make_fit_state(model: SceneModel, cfg: Config, iterations: int, scene_depth: float,
                   generator: torch.Generator) -> FitState:
    """A fresh fit: Adam, learning rates decaying to ``lr_final_factor`` over ``iterations``."""
    opt = make_optimizer(model, cfg, scene_depth)
    gamma = cfg.fit.lr_final_factor ** (1.0 / max(iterations, 1))
    return FitState(opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma), generator)


def fit_scene(model: SceneModel, targets: FitTargets, cameras: Cameras, cfg: Config, iterations: int,
              state: FitState, *, scene_depth: float,
              on_step: Callable[[int, int, dict[str, float]], None] = lambda *a: None,
              should_stop: Callable[[], bool] = lambda: False,
              on_checkpoint: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Optimise ``model`` in place from ``state.step`` to ``iterations``; returns the last loss terms.

    ``on_checkpoint`` is called every ``cfg.fit.checkpoint_every`` steps; a stop request raises
    Cancelled between two steps, with ``state`` consistent with the model for a checkpoint.
    """
    train = targets.train
    dev = targets.frames.device
    per_step = min(cfg.fit.frames_per_step, int(train.numel()))
    opt, sched, generator = state.optimizer, state.scheduler, state.generator
    every = cfg.fit.checkpoint_every
    last: dict[str, float] = {}
    for step in range(state.step + 1, iterations + 1):
        if should_stop():
            raise Cancelled(f"stopped at step {step - 1} of {iterations}")
        frames = train[torch.randperm(int(train.numel()), generator=generator)[:per_step].to(dev)]
        if cfg.fit.random_background:
            white = torch.rand(per_step, generator=generator) < 0.5
            bgs = white.float()[:, None].repeat(1, 3).to(dev)
        else:
            bgs = torch.ones(per_step, 3, device=dev)
        render = render_scene(model.at(frames), cameras.viewmats(frames), cameras.K[frames], cameras.width,
                              cameras.height, bgs, near=cameras.near, far=cameras.far)
        terms = scene_losses(render, targets.frames[frames], targets.masks[frames], bgs, model, cfg, scene_depth)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        sched.step()
        state.step = step
        last = {k: float(v.detach()) for k, v in terms.items()}
        finish_step(step, iterations, last, every, on_step, on_checkpoint)
    return last
