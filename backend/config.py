"""Every weight, schedule, count and learning rate of a run, in typed configs with named presets.

Nothing numeric that changes results lives inline in the optimizer: it reads this config. Presets:

- ``cpu-tiny``  the built-in sample and CI: small working resolution, few Gaussians, a short fit.
- ``lite``      the seed's ``--lite`` budget (30 iterations per frame), for GPUs.
- ``full``      the seed's default budget (40 iterations per frame), for GPUs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class InputConfig:
    """How the clip is read. Frames whose longer side exceeds ``max_side`` are downscaled for the fit."""

    max_side: int = 720
    default_fps: float = 24.0  # for image sequences, which carry no timing
    min_frames: int = 2
    max_frames: int = 2000


@dataclass(frozen=True)
class CameraConfig:
    """The static virtual camera used when no real camera is given (the spec's 49.1° vertical FoV)."""

    fovy_deg: float = 49.1
    near: float = 0.01
    far: float = 100.0
    scene_depth: float = 4.0  # distance of the objects from the camera, in scene units


@dataclass(frozen=True)
class InitConfig:
    """Per-object Gaussians lifted from the object's mask in its reference frame."""

    gaussians_per_object: int = 4000
    thickness: float = 0.25  # depth spread as a fraction of the object's radius
    opacity: float = 0.7
    scale_factor: float = 0.9  # initial std-dev as a fraction of the sampling spacing
    depth_spread: float = 0.35  # how far the ground-contact heuristic separates objects in depth (log units)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the skeleton fit's terms (see backend/optim/losses.py for definitions)."""

    rgb: float = 1.0  # balanced MSE of the joint render vs the frame inside/outside the union mask
    alpha: float = 0.5  # balanced MSE of the rendered alpha vs the union mask
    instance: float = 1.0  # MSE of each object's composited visibility vs its own mask
    motion_smooth: float = 0.05  # second difference of per-frame translations (scene units / depth)
    scale_reg: float = 0.01  # keeps Gaussians from growing into large blobs


@dataclass(frozen=True)
class FitConfig:
    """Iteration budget, batching and learning rates of the joint fit."""

    iters_per_frame: int = 30
    min_iterations: int = 100
    frames_per_step: int = 8
    lr_means: float = 2e-3  # scaled by the object's radius
    lr_colors: float = 2.5e-2
    lr_opacity: float = 5e-2
    lr_log_scales: float = 1e-2
    lr_quats: float = 1e-2
    lr_translation: float = 2e-3  # scaled by the scene depth
    lr_rotation: float = 5e-3
    lr_final_factor: float = 0.1  # exponential decay of all learning rates to this factor at the end
    random_background: bool = True  # white or black background per rendered frame, like the spec
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: only when stopped)

    def iterations(self, num_frames: int) -> int:
        return max(self.min_iterations, self.iters_per_frame * num_frames)


@dataclass(frozen=True)
class Config:
    """A complete run configuration. ``preset`` names where it came from."""

    preset: str = "lite"
    input: InputConfig = field(default_factory=InputConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    init: InitConfig = field(default_factory=InitConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    guidance: bool = True
    seed: int = 888

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


PRESETS: dict[str, Config] = {
    "cpu-tiny": Config(
        preset="cpu-tiny",
        input=InputConfig(max_side=96),
        init=InitConfig(gaussians_per_object=300),
        fit=FitConfig(iters_per_frame=10, min_iterations=60, frames_per_step=2, checkpoint_every=50),
        guidance=False,
    ),
    "lite": Config(preset="lite", fit=FitConfig(iters_per_frame=30)),
    "full": Config(preset="full", fit=FitConfig(iters_per_frame=40)),
}


def get_preset(name: str) -> Config:
    """The named preset; raises KeyError listing the valid names."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return ``cfg`` with fields of its sections replaced, e.g. ``fit={"iters_per_frame": 2}``."""
    changes = {}
    for section, values in sections.items():
        current = getattr(cfg, section)
        if dataclasses.is_dataclass(current):
            changes[section] = replace(current, **values)
        else:
            changes[section] = values
    return replace(cfg, **changes)
