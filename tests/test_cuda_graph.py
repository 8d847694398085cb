"""GraphedCall (backend/priors/cuda_graph.py): a function with an autograd backward inside, replayed from a
CUDA graph, gives the direct call's results for each call's own inputs; one graph per input signature;
a dispatch mode sees the operators; CPU tensors are refused."""

import pytest
import torch

from backend.priors.cuda_graph import GraphedCall



def loss_and_gradient(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A small stand-in for the guidance core: a forward with autograd, its backward into ``x``, a value."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = torch.tanh(x @ w) * scale
        loss = 0.5 * y.pow(2).sum()
        loss.backward(inputs=[x])
    return loss.detach(), x.grad


def test_cpu_tensors_and_a_zero_warmup_are_refused():
    with pytest.raises(TypeError, match="CUDA tensors only"):
        GraphedCall(loss_and_gradient)(torch.ones(2, 3), torch.ones(3, 3), torch.ones(()))
    with pytest.raises(ValueError, match="warmup"):
        GraphedCall(loss_and_gradient, warmup=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_replays_give_each_call_its_own_results():
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator(device="cuda").manual_seed(0)

    def inputs(n):
        return (torch.randn(n, 16, device="cuda", generator=gen), torch.randn(16, 8, device="cuda", generator=gen),
                torch.rand((), device="cuda", generator=gen) + 0.5)

    call = GraphedCall(loss_and_gradient)
    outs = []
    for n in (32, 32, 32, 8):  # capture, two replays with new values, a second signature
        args = inputs(n)
        got, want = call(*args), loss_and_gradient(*args)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        outs.append(got)
    assert call.captured == 2
    assert not torch.equal(outs[0][1], outs[1][1])  # the clones are not overwritten by the next replay
    with FlopCounterMode(display=False) as counter:  # run directly: the mode sees the matmuls
        call(*inputs(32))
    assert counter.get_total_flops() > 0
    call.release()
    assert call.captured == 0
