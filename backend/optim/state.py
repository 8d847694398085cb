"""The resumable state of an optimisation: optimizer, schedule, random stream and step count."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class FitState:
    """The optimizer, its schedule, the random stream and the completed step count of a fit.

    Together with the model's parameters this is everything a resumed run needs to continue exactly
    where an interrupted one stopped.
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    generator: torch.Generator
    step: int = 0

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "generator": self.generator.get_state(), "step": self.step}

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(d["scheduler"])
        self.generator.set_state(d["generator"])
        self.step = int(d["step"])


def finish_step(step: int, iterations: int, losses: dict[str, float], checkpoint_every: int,
                on_step: Callable[[int, int, dict[str, float]], None], on_checkpoint: Callable[[], None]) -> None:
    """After an optimiser step: stop on a non-finite loss, report, and checkpoint every N steps
    (not at the last step: the result itself is written then)."""
    if not math.isfinite(losses["total"]):
        raise FloatingPointError(f"the loss became {losses['total']} at step {step}; "
                                 "lower the learning rates in the config")
    on_step(step, iterations, losses)
    if checkpoint_every and step % checkpoint_every == 0 and step < iterations:
        on_checkpoint()
