"""The resumable state of an optimisation: optimizer, schedule, random stream and step count."""

from __future__ import annotations

from dataclasses import dataclass

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
