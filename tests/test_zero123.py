"""Zero123 score distillation: loader, frozen weights, the SDS formula, CFG, schedules, camera vectors,
stage-1/stage-2 entry points, the refusal when the weights are missing, the compiled networks and where
a step's draws are made (CPU, tiny random models)."""

import io
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.config import GuidanceConfig, get_preset, with_overrides
from backend.errors import InputError
from backend.priors import sds as S
from backend.priors import zero123 as Z

TINY_SIZE = 32  # image side the tiny model works at (the real one: 256)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions are dominated by thread hand-offs on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_parts(seed=0, embed=16):
    """A Zero123-shaped model, tiny: 8-channel UNet, ×8 VAE, CLIP vision with projection, 772→768 shape."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=4, in_channels=8, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=embed,
                                attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 4),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=TINY_SIZE)
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                         num_attention_heads=2, image_size=TINY_SIZE, patch_size=8,
                                                         projection_dim=embed))
    proj = Z.CameraProjection(embed + 4, embed)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False)
    return unet, vae, enc, proj, sched


def small_parts(seed=0, embed=16):
    """As ``tiny_parts`` with fewer kernels for Inductor to generate, for the compiled path: one UNet level
    (cross-attention on the way down only) and no mid block, a two-level VAE without mid-block attention.
    The compiled test takes about 60 s on two cores with a cold Inductor cache (the tiny model: about
    85 s), about 10 s with a warm one."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    _, _, enc, proj, sched = tiny_parts(seed, embed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=4, in_channels=8, out_channels=4, layers_per_block=1,
                                block_out_channels=(8,), down_block_types=("CrossAttnDownBlock2D",),
                                up_block_types=("UpBlock2D",), cross_attention_dim=embed,
                                attention_head_dim=4, norm_num_groups=4, mid_block_type=None)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(4, 4), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=TINY_SIZE, mid_block_add_attention=False)
    return unet, vae, enc, proj, sched


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zero123") / "tiny-zero123"
    Z.save_zero123(folder, *tiny_parts())
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return Z.load_zero123(str(model_dir), "cpu")


def cfg(**kw):
    return GuidanceConfig(image_size=TINY_SIZE, **kw)


def crops(n, seed=1):
    return np.random.default_rng(seed).random((n, 24, 24, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# loading


def test_loader_reads_every_part_and_freezes_it(model_dir, model):
    saved = tiny_parts()
    assert torch.equal(model.projection.projection.weight, saved[3].projection.weight)
    assert torch.equal(model.unet.conv_in.weight, saved[0].conv_in.weight)
    assert model.unet.config.in_channels == 8 and model.variant == "zero123-xl"
    assert model.dtype == torch.float32 and model.device.type == "cpu"  # the CPU always runs float32
    assert torch.allclose(model.alphas_cumprod, saved[4].alphas_cumprod)
    assert model.clip_size == TINY_SIZE and model.source == str(model_dir)
    for m in model.modules():
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())  # the VAE too (the public code trains it)


def test_published_projection_class_name_loads(tmp_path):
    """Published folders name the projection class CCProjection; its weights load into ours."""
    folder = tmp_path / "m"
    parts = tiny_parts(seed=3)
    Z.save_zero123(folder, *parts)
    cfg_file = folder / "clip_camera_projection" / "config.json"
    d = json.loads(cfg_file.read_text())
    d["_class_name"] = "CCProjection"
    cfg_file.write_text(json.dumps(d))
    m = Z.load_zero123(str(folder), "cpu")
    assert torch.equal(m.projection.projection.bias, parts[3].projection.bias)


def test_variant_detection_and_half_precision_only_on_cuda():
    assert Z.detect_variant("ashawkey/zero123-xl-diffusers") == "zero123-xl"
    assert Z.detect_variant("ashawkey/stable-zero123-diffusers") == "stable-zero123"
    assert Z.detect_variant("/models/mine", "stable-zero123") == "stable-zero123"
    with pytest.raises(InputError):
        Z.detect_variant("x", "zero123-huge")
    assert Z.model_dtype(torch.device("cuda"), "bfloat16") == torch.bfloat16
    assert Z.model_dtype(torch.device("cuda"), "float16") == torch.float16
    assert Z.model_dtype(torch.device("cpu"), "bfloat16") == torch.float32


def test_missing_folder_names_it_and_the_way_out(tmp_path):
    with pytest.raises(InputError) as e:
        Z.resolve_model(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(e.value) and "--disable_guidance" in e.value.hint
    (tmp_path / "half" / "unet").mkdir(parents=True)
    (tmp_path / "half" / "unet" / "config.json").write_text("{}")
    with pytest.raises(InputError) as e:
        Z.resolve_model(str(tmp_path / "half"))
    assert "vae/config.json" in str(e.value) and "unet/config.json" not in str(e.value)


def test_missing_hub_id_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as e:
        Z.resolve_model("someone/zero123-not-here")
    assert "'someone/zero123-not-here'" in str(e.value) and "offline" in str(e.value)
    assert "--disable_guidance" in e.value.hint


# ---------------------------------------------------------------------------------------------
# the formula


def reference_image_gradient(model, g_cfg, cond, images, index, deltas, step):
    """d SDS / d image computed here from the spec's formula, reusing only the draws (ε, and the
    posterior's standard-normal sample recovered from the latents) the implementation made."""
    x = images.detach().clone().requires_grad_(True)
    x_small = F.interpolate(x.permute(0, 3, 1, 2), (g_cfg.image_size,) * 2, mode="bilinear", align_corners=False)
    post = model.vae.encode(2 * x_small - 1).latent_dist
    sf = model.vae.config.scaling_factor
    xi = ((step.latents / sf - post.mean) / post.std).detach()
    z = (post.mean + post.std * xi) * sf
    t = step.timestep
    abar = model.alphas_cumprod[t]
    noisy = abar.sqrt() * z.detach() + (1 - abar).sqrt() * step.noise
    d = deltas.double()
    if model.variant == "zero123-xl":
        cam = torch.stack([torch.deg2rad(d[:, 0]), torch.sin(torch.deg2rad(d[:, 1])),
                           torch.cos(torch.deg2rad(d[:, 1])), d[:, 2]], -1).float()
    else:
        raise AssertionError("the tiny model is zero123-xl")
    with torch.no_grad():
        token = model.projection(torch.cat([cond.clip[index], cam], -1)[:, None])
        ts = torch.full((len(index),), t)
        e_c = model.unet(torch.cat([noisy, cond.latents[index]], 1), ts, encoder_hidden_states=token).sample
        e_u = model.unet(torch.cat([noisy, torch.zeros_like(noisy)], 1), ts,
                         encoder_hidden_states=torch.zeros_like(token)).sample
    eps = e_u + g_cfg.guidance_scale * (e_c - e_u)
    grad_z = (1 - abar) * (eps - step.noise)
    (gx,) = torch.autograd.grad(z, x, grad_z)
    return gx, grad_z


def test_sds_gradient_on_the_rendered_image_is_the_reference_formula(model):
    g_cfg = cfg()
    g = Z.Zero123Guidance(model, g_cfg, seed=5)
    cond = g.condition(crops(2))
    images = torch.rand(3, 40, 40, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    index = torch.tensor([1, 0, 1])
    deltas = torch.tensor([[10.0, 30.0, 0.2], [-20.0, -150.0, -0.1], [0.0, 90.0, 0.0]])
    step = g.sds(images, cond, index, deltas, t=600)
    step.loss.backward()
    ref, grad_z = reference_image_gradient(model, g_cfg, cond, images, index, deltas, step)
    assert images.grad.abs().max() > 0
    # float32 convolutions in another memory layout (the reference hands the VAE the renders' NHWC view,
    # the guidance a contiguous copy) round differently: a few 1e-6 of the largest value
    torch.testing.assert_close(images.grad, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # the loss is 0.5·Σ g² when evaluated (z − stopgrad(z − g) = g)
    torch.testing.assert_close(step.loss, 0.5 * grad_z.pow(2).sum(), rtol=1e-4, atol=0)
    assert step.weight == pytest.approx(1 - float(model.alphas_cumprod[600]))


def _graph_nodes(t: torch.Tensor) -> set[str]:
    """The names of the autograd nodes behind ``t``."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        n = todo.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        names.add(n.name())
        todo += [f for f, _ in n.next_functions]
    return names


def test_the_loss_hands_on_its_precomputed_gradient_times_the_incoming_scale(model):
    """The image gradient is computed inside the call (the VAE's backward runs there); the loss's own
    backward only scales it: a loss weighted by 2.5 gives 2.5 times the unit loss's gradient, and the
    VAE encoder's activations are not kept with the loss."""
    g = Z.Zero123Guidance(model, cfg(), seed=5)
    cond = g.condition(crops(2))
    base = torch.rand(3, 40, 40, 3, generator=torch.Generator().manual_seed(2))
    index, deltas = torch.tensor([1, 0, 1]), torch.tensor([[10.0, 30.0, 0.2], [-20.0, -150.0, -0.1], [0, 90.0, 0]])
    grads = []
    for scale in (1.0, 2.5):
        images = base.clone().requires_grad_(True)
        g.generator.manual_seed(9)  # the same draws both times
        step = g.sds(images, cond, index, deltas, t=600)
        assert step.loss.grad_fn.name() == "PrecomputedGradientBackward"
        assert step.loss.grad_fn.next_functions[0][0] is not None  # ... which leads on into the images
        assert not any("Convolution" in n for n in _graph_nodes(step.loss))  # and holds no VAE layer
        (scale * step.loss).backward()
        grads.append(images.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], 2.5 * grads[0], rtol=1e-5, atol=1e-6 * float(grads[0].abs().max()))


def test_no_model_weight_receives_a_gradient(model):
    before = {id(p): p.detach().clone() for m in model.modules() for p in m.parameters()}
    g = Z.Zero123Guidance(model, cfg(stage1_views=3), seed=0)
    og = g.for_object(crops(1)[0])
    images = torch.rand(3, 24, 24, 3, requires_grad=True)
    og(lambda offsets: images * 1.0, 0.4).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    for m in model.modules():
        for p in m.parameters():
            assert p.grad is None and torch.equal(p, before[id(p)])


class UnetSpy:
    """Records the UNet's inputs and outputs without changing them."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, out):
        self.calls.append({"sample": args[0].detach().clone(), "hidden": kwargs["encoder_hidden_states"].clone(),
                           "out": out.sample.detach().clone()})

    def close(self):
        self.handle.remove()


def test_classifier_free_guidance_branches_and_scale(model):
    g = Z.Zero123Guidance(model, cfg(), seed=0)
    cond = g.condition(crops(1))
    spy = UnetSpy(model.unet)
    try:
        step = g.sds(torch.rand(2, 24, 24, 3), cond, torch.zeros(2, dtype=torch.long),
                     torch.tensor([[5.0, 10.0, 0.0], [-5.0, 170.0, 0.3]]), t=300)
    finally:
        spy.close()
    (call,) = spy.calls
    x, hidden, out = call["sample"], call["hidden"], call["out"]
    assert x.shape[0] == 4 and x.shape[1] == 8 and hidden.shape[1] == 1  # one token per image
    # conditional first, then unconditional with a zero token and a zero image latent
    assert hidden[2:].abs().max() == 0 and hidden[:2].abs().max() > 0
    assert x[2:, 4:].abs().max() == 0 and torch.equal(x[:2, 4:], cond.latents[[0, 0]])
    assert torch.equal(x[:2, :4], x[2:, :4])  # the same noisy latent in both branches
    eps_c, eps_u = out[:2], out[2:]
    torch.testing.assert_close(step.eps_hat, eps_u + 5.0 * (eps_c - eps_u))
    assert GuidanceConfig().guidance_scale == 5.0


def test_timestep_schedules_end_points():
    st1, st2 = GuidanceConfig().stage1_t_range, GuidanceConfig().stage2_t_range
    assert S.timestep(0.0, st1) == 980 and S.timestep(1.0, st1) == 20
    assert S.timestep(0.25, st1) == 750 and S.timestep(0.999, st1) == 20
    assert S.timestep(0.0, st2) == 500 and S.timestep(0.5, st2) == 500 and S.timestep(1.0, st2) == 20
    assert S.timestep(0.75, st2) == 250
    with pytest.raises(ValueError):
        S.timestep(0.5, (0.5, 0.2))
    abar = torch.linspace(0.99, 0.01, 1000)
    assert S.sds_weight(abar, 20) == pytest.approx(1 - float(abar[20]))


def test_camera_vectors_and_the_orbit_sign_convention():
    d = torch.tensor([[30.0, 90.0, 0.5], [-10.0, -180.0, -0.2]])
    xl = S.camera_embedding(d, "zero123-xl")
    torch.testing.assert_close(xl[0], torch.tensor([math.pi / 6, 1.0, 0.0, 0.5]))
    torch.testing.assert_close(xl[1], torch.tensor([-math.pi / 18, 0.0, -1.0, -0.2]), atol=1e-6, rtol=0)
    st = S.camera_embedding(d, "stable-zero123", reference_polar_deg=90.0)
    assert torch.allclose(st[:, 3], torch.full((2,), math.pi / 2)) and torch.allclose(st[:, :3], xl[:, :3])
    # our orbit camera with positive elevation sits above the object (y points down): Zero123 Δpolar < 0
    from backend.model.object_camera import camera_center, orbit_viewmat

    assert float(camera_center(orbit_viewmat(2.0, 20.0, 0.0))[1]) < 0
    assert float(camera_center(orbit_viewmat(2.0, 0.0, 30.0))[0]) > 0  # positive azimuth: to the camera's right
    z = S.orbit_to_zero123(torch.tensor([[20.0, 30.0, 0.1]]))
    assert z.tolist() == [[-20.0, 30.0, pytest.approx(0.1)]]


def test_stage1_guidance_samples_the_specified_views(model):
    g = Z.Zero123Guidance(model, cfg(stage1_views=64), seed=0)
    og = g.for_object(crops(1)[0])
    seen = {}

    def render(offsets):
        seen["offsets"] = offsets.clone()
        return torch.ones(offsets.shape[0], 16, 16, 3, requires_grad=True)

    loss = og(render, 0.0)
    off = seen["offsets"]  # orbit convention: elevation is minus Zero123's Δpolar
    assert off.shape == (64, 3)
    assert (off[:, 0] == off[:, 0].round()).all() and (-29 <= off[:, 0]).all() and (off[:, 0] <= 30).all()
    assert (-180 <= off[:, 1]).all() and (off[:, 1] <= 179).all()
    assert (off[:, 2].abs() < 0.5).all() and off[:, 2].std() > 0.1
    assert g.last.timestep == 980
    torch.testing.assert_close(loss, g.last.loss / 64)  # λ = 1, divided by the views


def test_stage2_frame_loss_conditions_each_image_on_its_own_frame(model):
    c2 = cfg(stage2_views=2)
    g = Z.Zero123Guidance(model, c2, seed=0)
    table = g.condition(crops(4))  # one crop per frame
    spy = UnetSpy(model.unet)
    got = {}

    def render(offsets):
        got["offsets"] = offsets.clone()
        return torch.rand(offsets.shape[0] * offsets.shape[1], 16, 16, 3, requires_grad=True)

    try:
        loss = g.frame_loss(table, torch.tensor([2, 0, 3]), render, step_ratio=0.2)
    finally:
        spy.close()
    assert got["offsets"].shape == (3, 2, 3) and (got["offsets"][..., 2] == 0).all()  # Δradius 0 in stage 2
    x = spy.calls[0]["sample"]
    assert torch.equal(x[:6, 4:], table.latents[[2, 2, 0, 0, 3, 3]])
    assert g.last.timestep == 500  # τ stays at 500 for the first half of stage 2
    torch.testing.assert_close(loss, g.last.loss / 6)


def test_conditioning_is_cached_per_crop_and_deterministic(model):
    a = Z.Zero123Guidance(model, cfg(cond_latent="mode"), seed=0).condition(crops(3))
    b = Z.Zero123Guidance(model, cfg(cond_latent="mode"), seed=9).condition(crops(3)[[2, 1, 0]])
    assert a.clip.shape == (3, 16) and a.latents.shape == (3, 4, TINY_SIZE // 8, TINY_SIZE // 8)
    torch.testing.assert_close(a.clip[0], b.clip[2]) and torch.testing.assert_close(a.latents[0], b.latents[2])
    s = Z.Zero123Guidance(model, cfg(), seed=0).condition(crops(1))  # a posterior sample differs from the mean
    assert not torch.allclose(s.latents[0], a.latents[0])


def test_frame_crops_never_zoom_in_and_fill_hidden_frames():
    frames = np.zeros((3, 40, 40, 3), np.uint8)
    frames[..., 0] = 200
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 10:20, 10:20] = True
    masks[2, 12:16, 12:16] = True  # a small (partly hidden) object: crop stays at the reference side
    bboxes = np.array([[10, 10, 20, 20], [10, 10, 20, 20], [12, 12, 16, 16]], float)
    out = Z.frame_crops(frames, masks, bboxes, masks.any((1, 2)), ref_side=20.0, margin=0.9, size=20)
    assert out.shape == (3, 20, 20, 3)
    np.testing.assert_array_equal(out[1], out[0])  # frame 1 is empty: nearest visible frame's crop
    red = (out[2][..., 1] < 0.5).sum()  # object pixels (red on white) in frame 2's crop: 4×4 at 1 px/px
    assert 9 <= red <= 25


# ---------------------------------------------------------------------------------------------
# the compiled networks and where a step's tensors are made


def guidance_step(model, images: torch.Tensor, calls: int = 1, **sds) -> tuple[torch.Tensor, torch.Tensor]:
    """The last of ``calls`` stage-2 guidance calls (frames 2, 0, 1 × 2 views, seed 4, GuidanceConfig
    overrides ``sds``) rendering ``images``: its loss and their gradient; what the parity tests compare
    between two ways of running the networks."""
    g = Z.Zero123Guidance(model, cfg(stage2_views=2, **sds), seed=4)
    table = g.condition(crops(3))
    for _ in range(calls):
        images.grad = None
        loss = g.frame_loss(table, torch.tensor([2, 0, 1]), lambda offsets: images * 1.0, step_ratio=0.3)
        loss.backward()
    return loss.detach(), images.grad


def _cpu_images() -> torch.Tensor:
    return torch.rand(6, 40, 40, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)


def _prepare_refuses(tmp_path, sds: dict, match: str) -> None:
    """A cpu-tiny run with guidance and these ``sds`` settings is refused while validating, before the clip
    or the output folder is touched."""
    from backend import pipeline

    req = pipeline.RunRequest(data_dir=tmp_path / "no clip", mask_dir=tmp_path / "no masks",
                              out_dir=tmp_path / "out", save_name="r", device="cpu")
    config = replace(with_overrides(get_preset("cpu-tiny"), sds=sds), guidance=True)
    with pytest.raises(InputError, match=match):
        pipeline.prepare(req, config)
    assert not (tmp_path / "out").exists()


def test_an_unknown_compile_mode_is_refused_before_any_work(tmp_path, monkeypatch):
    import backend.pipeline  # noqa: F401  imported before the patch below: it binds resolve_model by name

    def no_lookup(*args, **kwargs):
        raise AssertionError("the model was looked for before the compile mode was checked")

    monkeypatch.setattr(Z, "resolve_model", no_lookup)
    with pytest.raises(InputError) as e:
        Z.load_zero123(str(tmp_path / "nowhere"), "cpu", compile="reduce-overhead")  # excluded on purpose
    assert "sds.compile 'reduce-overhead' is unknown" in str(e.value)
    assert all(m in e.value.hint for m in ("none", "default", "max-autotune-no-cudagraphs"))
    with pytest.raises(InputError, match="sds.compile 'fast'"):
        Z.from_parts(*(torch.nn.Identity(),) * 4, torch.ones(3), variant="zero123-xl", source="x", device="cpu",
                     dtype=torch.float32, compile="fast")
    assert GuidanceConfig().compile == "none" and "reduce-overhead" not in Z.COMPILE_MODES
    _prepare_refuses(tmp_path, {"compile": "fast"}, "sds.compile 'fast'")


def test_a_missing_compiler_is_refused_before_the_model_is_looked_for(tmp_path, monkeypatch):
    def no_compiler(device):
        raise InputError("sds.compile needs a compiler", "--set sds.compile=none")

    def no_lookup(*args, **kwargs):
        raise AssertionError("the model was looked for before the compiler was checked")

    monkeypatch.setattr(Z, "_check_compiler_toolchain", no_compiler)
    monkeypatch.setattr(Z, "resolve_model", no_lookup)
    with pytest.raises(InputError, match="needs a compiler"):
        Z.load_zero123(str(tmp_path / "nowhere"), "cpu", compile="default")


def test_a_step_draws_and_places_its_tensors_on_the_model_device(model):
    g = Z.Zero123Guidance(model, cfg(stage2_views=2), seed=0)
    assert g.noise_generator.device == model.device
    assert g.noise_generator is g.generator  # on the CPU: one stream, the draws of the single-generator code
    assert g.generator.device.type == "cpu"  # view offsets stay on the host, where the renderer reads them
    table = g.condition(crops(3))
    seen = {}

    def render(offsets):
        seen["device"] = offsets.device
        return torch.rand(offsets.shape[0] * offsets.shape[1], 16, 16, 3, requires_grad=True)

    state = g.generator.get_state()  # what a checkpoint keeps
    g.frame_loss(table, torch.tensor([2, 0, 1]), render, step_ratio=0.3)
    step = g.last
    assert seen["device"].type == "cpu"
    for t in (step.noise, step.camera, step.latents, step.eps_hat):
        assert t.device == model.device
    g.generator.set_state(state)  # resumed from there: the same draws
    g.frame_loss(table, torch.tensor([2, 0, 1]), render, step_ratio=0.3)
    assert torch.equal(g.last.noise, step.noise) and torch.equal(g.last.camera, step.camera)
    x = torch.arange(3)
    assert Z.to_device(x, torch.device("cpu")) is x  # nothing to copy on the CPU


def test_compiled_guidance_matches_eager(tmp_path):
    """Compiled (Inductor, mode "default") and eager SDS on the same weights and draws: the same loss and
    the same gradient on the rendered images, through the compiled VAE encoder's backward."""
    try:
        Z._check_compiler_toolchain(torch.device("cpu"))
    except InputError as e:
        pytest.skip(f"Inductor's CPU code generation needs a C++ compiler: {e}")
    from torch._dynamo.utils import counters

    parts = small_parts()
    u, v, enc, proj, sched = parts
    build = dict(variant="zero123-xl", source="small", device="cpu", dtype=torch.float32)
    eager = Z.from_parts(u, v, enc, proj, sched.alphas_cumprod, **build)
    compiled = Z.from_parts(u, v, enc, proj, sched.alphas_cumprod, **build, compile="default")
    assert eager.unet_forward is u and compiled.unet_forward is not u  # the module itself is never replaced
    assert compiled.unet.config.in_channels == 8 and compiled.scaling_factor == v.config.scaling_factor
    assert "compiled default" in compiled.describe() and "compiled" not in eager.describe()
    results = []
    graphs_before = counters["stats"]["unique_graphs"]
    for m in (eager, compiled):
        results.append(guidance_step(m, _cpu_images()))
    assert counters["stats"]["unique_graphs"] - graphs_before == 2  # the UNet and the VAE path, one graph each
    (loss_e, grad_e), (loss_c, grad_c) = results
    assert grad_e.abs().max() > 0
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-4, atol=1e-5 * float(grad_e.abs().max()))


# ---------------------------------------------------------------------------------------------
# the run


def clip_args(clip, out, name="run"):
    return ["--data_dir", clip / "JPEGImages", "--mask_dir", clip / "Annotations", "--out_dir", out,
            "--save_name", name]


def test_missing_weights_stop_the_run_before_any_optimisation(sample_clip, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    from genmojo_blender.core.protocol import decode_event

    missing = tmp_path / "no-such-model"
    p = subprocess.run([sys.executable, "-m", "backend", *map(str, clip_args(sample_clip, tmp_path / "out")),
                        "--preset", "lite", "--guidance_model", str(missing)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    events = [decode_event(line) for line in p.stdout.splitlines()]
    assert p.returncode == 2
    assert events[-1].type == "failed" and str(missing) in events[-1].get("error")
    assert "--disable_guidance" in events[-1].get("hint")
    began = [e.get("stage") for e in events if e.type == "stage" and e.get("status") == "begin"]
    assert began == ["validate"]


def test_a_run_with_guidance_records_it_and_distils_in_stage_one(sample_clip_master, model_dir, tmp_path):
    from backend import pipeline
    from backend.progress import Reporter
    from genmojo_blender.core.bundle import open_bundle

    base = get_preset("cpu-tiny")
    config = replace(with_overrides(base, stage1={"iterations": 3},
                                    sds={"model": str(model_dir), "image_size": TINY_SIZE}), guidance=True)
    out, log = io.StringIO(), io.StringIO()
    req = pipeline.RunRequest(data_dir=sample_clip_master / "JPEGImages", mask_dir=sample_clip_master / "Annotations",
                              out_dir=tmp_path, save_name="g", iterations=2, device="cpu")
    path = pipeline.run(req, config, Reporter(pipeline.STAGES, out=out, log=log))
    run = open_bundle(path).manifest.run
    assert run.guidance.startswith(f"zero123-xl from {model_dir}") and "stage 1" in run.guidance
    assert run.depth_source.startswith("heuristic")
    assert run.config["sds"]["guidance_scale"] == 5.0
    from genmojo_blender.core.protocol import decode_event

    events = [decode_event(line) for line in out.getvalue().splitlines()]
    stage1 = [e for e in events if e.type == "progress" and e.get("stage") == "objects"]
    assert stage1 and all("guidance" in e.get("losses") for e in stage1)
    # the skeleton has no guidance: it needs no weights
    req2 = replace(req, save_name="s")
    cfg2 = replace(config, method="skeleton", sds=replace(config.sds, model=str(tmp_path / "absent")))
    assert open_bundle(pipeline.run(req2, cfg2, Reporter(pipeline.STAGES, out=io.StringIO(), log=io.StringIO()))
                       ).manifest.run.guidance == "disabled"


def test_both_ways_of_computing_the_vae_attention_give_the_same_step():
    """``vae_attention="matmul"`` (diffusers' AttnProcessor) and the default fused SDPA: the same loss and
    image gradient, so the choice is about speed only; an unknown name is refused before any work."""
    import copy

    from diffusers import AutoencoderKL

    u, _, enc, proj, sched = small_parts()
    torch.manual_seed(0)
    v = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                      latent_channels=4, norm_num_groups=4, sample_size=TINY_SIZE)  # with its mid-block attention
    results = []
    for how in ("sdpa", "matmul"):
        m = Z.from_parts(u, copy.deepcopy(v), enc, proj, sched.alphas_cumprod, variant="zero123-xl", source="small",
                         device="cpu", dtype=torch.float32, vae_attention=how)
        processors = {type(p).__name__ for p in m.vae.attn_processors.values()}
        assert processors == {"AttnProcessor" if how == "matmul" else "AttnProcessor2_0"}
        assert m.describe().endswith(f"VAE attention {how})")
        results.append(guidance_step(m, _cpu_images()))
    (loss_s, grad_s), (loss_m, grad_m) = results
    assert grad_s.abs().max() > 0
    torch.testing.assert_close(loss_m, loss_s, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_m, grad_s, rtol=1e-4, atol=1e-5 * float(grad_s.abs().max()))
    with pytest.raises(InputError, match="sds.vae_attention 'flash'") as e:
        Z.load_zero123("nowhere/at-all", "cpu", vae_attention="flash")
    assert "sdpa, matmul" in e.value.hint


def test_a_run_refuses_an_unknown_vae_attention_before_touching_anything(tmp_path):
    _prepare_refuses(tmp_path, {"vae_attention": "flash"}, "sds.vae_attention 'flash'")


def test_compiled_graphs_go_to_a_cache_that_outlives_the_process(tmp_path, monkeypatch):
    """Inductor's cache folder: the user's own choice is kept; otherwise the user's cache folder, not the
    temporary one that many systems empty at boot."""
    monkeypatch.setenv(Z.COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert Z.persistent_compile_cache() == tmp_path / "mine"
    assert os.environ[Z.COMPILE_CACHE_ENV] == str(tmp_path / "mine")
    monkeypatch.delenv(Z.COMPILE_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Z.persistent_compile_cache() == tmp_path / "xdg" / "genmojo" / "torchinductor"
    assert os.environ[Z.COMPILE_CACHE_ENV] == str(tmp_path / "xdg" / "genmojo" / "torchinductor")
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert Path(cache_dir()) == tmp_path / "xdg" / "genmojo" / "torchinductor"  # what Inductor itself reads
    monkeypatch.delenv(Z.COMPILE_CACHE_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Z.persistent_compile_cache() == tmp_path / "home" / ".cache" / "genmojo" / "torchinductor"
