"""A fixed-shape tensor function replayed from CUDA graphs, one graph per input signature.

Why: a guidance call is about 1 200 kernel launches (VAE encoder forward, the UNet's two CFG branches,
the VAE encoder's backward into the images). Replayed from a graph it is one launch, so the host does not
pace the device, and it is free to build the next object's deformation and renders while the device
works through this object's guidance.

The contract ``fn`` must keep (``Zero123Guidance``'s core does): it takes and returns only tensors, on one
CUDA device; it makes no host synchronisation and draws no random numbers (draws are made outside and
passed in); what it computes depends on its inputs' values only through tensor operations (no Python
branch on a value); and it keeps no state between calls. A graph is captured on the first call of each
signature (shape and dtype of every input), after ``warmup`` eager calls on a side stream (which also
compile a ``torch.compile``'d ``fn`` and let cuDNN pick its algorithms); later calls copy their inputs
into the graph's static inputs, replay it and return clones of its static outputs, which the next replay
overwrites. Each graph keeps its own memory pool (the activations of one call) for as long as it lives:
``release`` frees them all.

Under a torch dispatch mode (``FlopCounterMode``, a debug mode) ``fn`` runs eagerly: a replay issues
no operators for the mode to see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]
    outputs: tuple[torch.Tensor, ...]


def _signature(args: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((tuple(a.shape), a.dtype, a.device) for a in args)


class GraphedCall:
    """``fn(*tensors) -> tuple of tensors`` replayed from one CUDA graph per input signature."""

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], warmup: int = 2):
        if warmup < 1:
            raise ValueError("warmup must be at least 1: the first eager call compiles and picks algorithms")
        self.fn = fn
        self.warmup = warmup
        self._graphs: dict[tuple, _Captured] = {}

    @property
    def captured(self) -> int:
        """How many graphs (input signatures) are held."""
        return len(self._graphs)

    def release(self) -> None:
        """Drop every graph and its memory pool (the next call of a signature captures it again)."""
        self._graphs.clear()

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if any(not torch.is_tensor(a) or a.device.type != "cuda" for a in args):
            raise TypeError("a graphed call takes CUDA tensors only")
        if _get_current_dispatch_mode() is not None:
            return tuple(self.fn(*args))
        key = _signature(args)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(args)
        for static, a in zip(entry.inputs, args):
            static.copy_(a)
        entry.graph.replay()
        return tuple(o.clone() for o in entry.outputs)

    def _capture(self, args: tuple[torch.Tensor, ...]) -> _Captured:
        device = args[0].device
        inputs = tuple(a.detach().clone() for a in args)  # keeps each input's memory layout
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.fn(*inputs)
        if not isinstance(outputs, tuple) or not all(torch.is_tensor(o) for o in outputs):
            raise TypeError("a graphed function must return a tuple of tensors")
        return _Captured(graph, inputs, outputs)
