"""The random streams of a fit, held where a checkpoint can save them.

Every draw of a fit comes from a ``torch.Generator`` that the run owns and checkpoints. Library code
that draws from torch's global generators instead (gsplat's split of large Gaussians, torch.nn's
parameter initialisers) runs inside ``seeded_global``: the global generators are seeded from one draw
of the run's generator (``draw_seed``) and restored when the block ends, so those draws depend only on
the run's generator and nothing outside the block sees them. A resumed run that restores the generator
therefore draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

SEED_LIMIT = 2**62  # seeds are drawn uniformly from [0, SEED_LIMIT)


def draw_seed(generator: torch.Generator) -> int:
    """One seed drawn from ``generator`` (advancing it), for a stream derived from it."""
    return int(torch.randint(0, SEED_LIMIT, (1,), generator=generator))


@contextmanager
def seeded_global(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's global CPU generator (and, for a CUDA ``device``, every CUDA device's)
    seeded with ``seed``; their previous states are restored afterwards."""
    cuda = torch.device(device).type == "cuda"
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.manual_seed_all(int(seed))
        yield
