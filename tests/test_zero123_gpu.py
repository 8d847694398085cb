"""Zero123 guidance on CUDA (scripts/gpu_check.sh): the compiled networks and the CUDA-graph replay give
the eager step's loss and image gradient, a guidance step queues its work without making the host wait
for the GPU, and the host generator's state (what checkpoints keep) determines the draws made on the
device (tiny random models of test_zero123)."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
pytest.importorskip("diffusers", reason="guidance needs diffusers (.carry/wheels_guidance)")
pytest.importorskip("transformers", reason="guidance needs transformers (.carry/wheels_guidance)")

from backend.priors import zero123 as Z  # noqa: E402
from test_zero123 import cfg, crops, guidance_step, tiny_parts  # noqa: E402

CUDA = torch.device("cuda")


@pytest.fixture
def no_tf32():
    """TF32 off for the parity check, so that eager and compiled float32 differ only in summation order."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _model(parts, dtype, mode):
    unet, vae, enc, proj, sched = parts
    return Z.from_parts(unet, vae, enc, proj, sched.alphas_cumprod, variant="zero123-xl", source="tiny",
                        device=CUDA, dtype=dtype, compile=mode)


def _images():
    return torch.rand(6, 40, 40, 3, generator=torch.Generator().manual_seed(1)).to(CUDA).requires_grad_(True)


FRAMES = torch.tensor([2, 0, 1])  # host long, as stage 2 passes them


@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs"])
def test_compiled_guidance_matches_eager_on_cuda(mode, no_tf32):
    parts = tiny_parts()
    results = []
    for model in (_model(parts, torch.float32, "none"), _model(parts, torch.float32, mode)):
        results.append(guidance_step(model, _images()))
    (loss_e, grad_e), (loss_c, grad_c) = results
    assert grad_e.abs().max() > 0
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-3, atol=0)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-3, atol=1e-3 * float(grad_e.abs().max()))


@pytest.mark.parametrize("mode", ["none", "default"])
def test_a_guidance_call_replayed_from_a_cuda_graph_matches_the_direct_one(mode, no_tf32):
    """sds.cuda_graph: the third call (the first captures, after warm-up calls) against the same call
    made directly, on the same draws: the same loss and image gradient."""
    parts = tiny_parts()
    model = _model(parts, torch.float32, mode)
    direct = guidance_step(model, _images(), calls=3)
    graphed = guidance_step(model, _images(), calls=3, cuda_graph=True)
    assert direct[1].abs().max() > 0
    torch.testing.assert_close(graphed[0], direct[0], rtol=1e-4, atol=0)
    torch.testing.assert_close(graphed[1], direct[1], rtol=1e-4, atol=1e-4 * float(direct[1].abs().max()))


@pytest.mark.parametrize("mode,graph", [("none", False), ("default", False), ("default", True)])
def test_a_guidance_step_never_waits_for_the_gpu(mode, graph):
    """CUDA's sync debug mode turns any synchronising call (a pageable host-to-device copy, ``.item()``,
    reading a device value into Python) into an error; the step's forward pass must make none."""
    g = Z.Zero123Guidance(_model(tiny_parts(), torch.bfloat16, mode), cfg(stage2_views=2, cuda_graph=graph),
                          seed=0)
    assert g.graphed == graph
    assert g.noise_generator.device.type == "cuda" and g.generator.device.type == "cpu"
    table = g.condition(crops(3))
    images = _images()
    g.frame_loss(table, FRAMES, lambda offsets: images * 1.0, step_ratio=0.3).backward()  # compiles, if at all
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = g.frame_loss(table, FRAMES, lambda offsets: images * 1.0, step_ratio=0.3)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    loss.backward()
    step = g.last
    assert step.noise.device.type == "cuda" and step.camera.device.type == "cuda"
    assert torch.isfinite(loss) and images.grad.abs().max() > 0


def test_the_host_generator_state_determines_the_device_draws():
    g = Z.Zero123Guidance(_model(tiny_parts(), torch.bfloat16, "none"), cfg(stage2_views=2), seed=0)
    table = g.condition(crops(3))
    images = _images()
    state = g.generator.get_state()
    g.frame_loss(table, FRAMES, lambda offsets: images * 1.0, step_ratio=0.3)
    first = g.last
    g.frame_loss(table, FRAMES, lambda offsets: images * 1.0, step_ratio=0.3)
    assert not torch.equal(g.last.noise, first.noise)  # a new draw each call
    g.generator.set_state(state)  # a resumed run
    g.frame_loss(table, FRAMES, lambda offsets: images * 1.0, step_ratio=0.3)
    assert torch.equal(g.last.noise, first.noise) and torch.equal(g.last.camera, first.camera)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_vae_attentions_give_the_same_compiled_step_on_cuda(dtype, no_tf32):
    """sds.vae_attention "matmul" (the default) against torch's fused SDPA, compiled as a run compiles them:
    the same loss and image gradient, to float32 rounding, and in bf16 to its precision."""
    import copy

    unet, vae, enc, proj, sched = tiny_parts()
    results = []
    for how in ("sdpa", "matmul"):
        model = Z.from_parts(unet, copy.deepcopy(vae), enc, proj, sched.alphas_cumprod, variant="zero123-xl",
                             source="tiny", device=CUDA, dtype=dtype, compile="default", vae_attention=how)
        loss, grad = guidance_step(model, _images())
        results.append((loss.float(), grad.float()))
    (loss_s, grad_s), (loss_m, grad_m) = results
    assert grad_s.abs().max() > 0
    if dtype == torch.float32:
        torch.testing.assert_close(loss_m, loss_s, rtol=1e-4, atol=0)
        torch.testing.assert_close(grad_m, grad_s, rtol=1e-3, atol=1e-4 * float(grad_s.abs().max()))
    else:
        torch.testing.assert_close(loss_m, loss_s, rtol=2e-2, atol=0)
        cos = torch.nn.functional.cosine_similarity(grad_m.flatten(), grad_s.flatten(), dim=0)
        assert cos > 0.99, float(cos)
