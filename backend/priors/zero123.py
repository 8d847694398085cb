"""Zero123 novel-view guidance (score distillation), assembled from diffusers and transformers parts.

The diffusers wheel has no Zero123 pipeline, and SDS needs none: only the networks. A Zero123-family
model in the diffusers folder layout (``unet`` an 8-channel SD-1.x UNet, ``vae`` an AutoencoderKL,
``image_encoder`` a CLIP vision model with projection, ``clip_camera_projection`` a Linear 772 → 768,
``scheduler`` the DDIM noise schedule; ``feature_extractor`` optional) is loaded part by part from a local
folder or a hub id, frozen (every module ``requires_grad_(False)``: the public code leaves the VAE
trainable and pays for its weight gradients), and run in bf16/fp16 on CUDA or float32 on the CPU.

Conditioning (docs/method.md §2.3): a crop of the object on white, 256², gives the CLIP image embedding
``c`` (768) and the VAE posterior latent ``v`` (4×32×32, without the latent scaling factor). A view at
Zero123 offsets (Δpolar, Δazimuth, Δradius) from the crop's view reads ``proj([c, camera])`` as its
single cross-attention token and ``v`` concatenated to the noisy latent. The unconditional branch of
classifier-free guidance (scale 5) reads a zero token and a zero latent. Embeddings of every
conditioning crop are computed once (``condition``) and indexed per rendered image afterwards.

Two entry points for the optimiser:

- ``Zero123Guidance.for_object(crop)`` → an ``ObjectGuidance`` that implements stage 1's ``Guidance``
  protocol (``optim/stage1.py``): 16 random views per step, τ annealed over [20, 980].
- ``Zero123Guidance.frame_loss(cond, frames, render, step_ratio)`` for stage 2: per object, a batch of
  frames × 4 views, each image conditioned on *its own frame's* crop (``frame_crops`` builds them), τ
  over [20, 500].

Optionally (``GuidanceConfig.compile``) the UNet's forward and the VAE encoder path run compiled by
``torch.compile`` (``from_parts``). A guidance step makes no host synchronisation of its own on CUDA: its
noise is drawn on the device, and the small camera and index tensors cross from pinned memory without
the host waiting (the view offsets stay on the host: the renderer builds its cameras there).

A call computes the SDS gradient on the images itself, the VAE encoder's backward included (``sds_core``),
and returns the loss as a ``PrecomputedGradient`` node: the encoder's activations are freed before the
call returns, and the call is one fixed-shape function of tensors, which ``GuidanceConfig.cuda_graph``
replays from a CUDA graph (``cuda_graph.GraphedCall``).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import GuidanceConfig
from ..errors import InputError
from ..profiling import span
from . import sds as S
from .cuda_graph import GraphedCall

SUBFOLDERS = ("unet", "vae", "image_encoder", "clip_camera_projection", "scheduler")
OPTIONAL_SUBFOLDERS = ("feature_extractor",)
# CLIP's own image normalisation, used when the folder has no feature_extractor/preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# torch.compile modes for the guidance networks (GuidanceConfig.compile). "reduce-overhead" is excluded: its
# CUDA graphs would cover each network's forward on its own; GuidanceConfig.cuda_graph captures the whole
# call instead, the VAE encoder's backward included (cuda_graph.py)
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")
DISABLE_HINT = ("pass --guidance_model with a local folder in the diffusers layout (unet, vae, image_encoder, "
                "clip_camera_projection, scheduler), or --disable_guidance to run without the diffusion prior")


def _diffusers():
    """diffusers' model classes, imported on first use so that runs without guidance never load them."""
    try:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from diffusers.configuration_utils import ConfigMixin, register_to_config
        from diffusers.models.modeling_utils import ModelMixin
    except ImportError as e:  # pragma: no cover - the requirements install it
        raise InputError(f"score-distillation guidance needs diffusers and transformers ({e})",
                         "pip install -r requirements/cpu.txt (or gpu.txt), or pass --disable_guidance") from e
    return AutoencoderKL, DDIMScheduler, UNet2DConditionModel, ConfigMixin, register_to_config, ModelMixin


def _projection_class():
    """The camera projection as a diffusers model, so that save_pretrained/from_pretrained work on it.

    Built lazily (its base classes come from diffusers). Its config keys (``in_channel``,
    ``out_channel``) and parameter names (``projection.weight``/``.bias``) are those of the published
    Zero123 folders, so their weights load into it.
    """
    global _CameraProjection
    if _CameraProjection is None:
        _, _, _, ConfigMixin, register_to_config, ModelMixin = _diffusers()

        class CameraProjection(ModelMixin, ConfigMixin):
            """Linear map of [CLIP image embedding (768), camera vector (4)] to one 768-d token."""

            @register_to_config
            def __init__(self, in_channel: int = 772, out_channel: int = 768):
                super().__init__()
                self.projection = nn.Linear(in_channel, out_channel)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.projection(x)

        _CameraProjection = CameraProjection
    return _CameraProjection


_CameraProjection = None


def CameraProjection(in_channel: int = 772, out_channel: int = 768):
    """A new camera projection module (see ``_projection_class``)."""
    return _projection_class()(in_channel=in_channel, out_channel=out_channel)


# ---------------------------------------------------------------------------------------------
# finding and loading the weights


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_path(spec: str) -> bool:
    """A spec names a local folder when it exists, or when it is not of the hub-id form ``owner/name``."""
    return Path(spec).expanduser().exists() or not _HUB_ID.match(spec)


def _missing_parts(folder: Path) -> list[str]:
    missing = []
    for sub in SUBFOLDERS:
        name = "scheduler_config.json" if sub == "scheduler" else "config.json"
        if not (folder / sub / name).is_file():
            missing.append(f"{sub}/{name}")
    return missing


def resolve_model(spec: str, *, allow_download: bool | None = None) -> Path:
    """The local folder holding the model named by ``spec``: a folder, or a hub id (cache, then download).

    Raises InputError naming the folder or hub id that was tried and how to run without guidance.
    Downloads only when ``allow_download`` (default: unless ``HF_HUB_OFFLINE`` is set).
    """
    spec = str(spec).strip()
    if not spec:
        raise InputError("score-distillation guidance is on but no model was given", DISABLE_HINT)
    local = Path(spec).expanduser()
    if _looks_like_path(spec):
        if not local.is_dir():
            raise InputError(f"score-distillation guidance (Zero123): model folder {local} not found", DISABLE_HINT)
        missing = _missing_parts(local)
        if missing:
            raise InputError(f"score-distillation guidance (Zero123): {local} is not a Zero123 model in the "
                             f"diffusers layout (missing {', '.join(missing)})", DISABLE_HINT)
        return local
    if allow_download is None:
        allow_download = os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover
        raise InputError(f"score-distillation guidance: cannot look up hub id {spec!r} ({e})", DISABLE_HINT) from e
    patterns = ["model_index.json", *(f"{s}/*" for s in SUBFOLDERS + OPTIONAL_SUBFOLDERS)]
    errors = []
    for online in ([False, True] if allow_download else [False]):
        try:
            folder = Path(snapshot_download(spec, allow_patterns=patterns, local_files_only=not online))
        except Exception as e:  # noqa: BLE001 - hub errors have many types; all mean "not available"
            errors.append(f"{'download' if online else 'cache'}: {type(e).__name__}")
            continue
        if not _missing_parts(folder):
            return folder
        errors.append(f"incomplete: missing {', '.join(_missing_parts(folder))}")
    raise InputError(f"score-distillation guidance (Zero123): model {spec!r} is not a local folder, was not found "
                     f"in the Hugging Face cache{' and could not be downloaded' if allow_download else ' (offline)'} "
                     f"[{'; '.join(errors)}]", DISABLE_HINT)


def detect_variant(spec: str, requested: str = "auto") -> str:
    """``zero123-xl`` or ``stable-zero123``; ``auto`` picks Stable-Zero123 when the model's name says
    "stable" (the two layouts are identical, only the camera vector differs)."""
    if requested != "auto":
        if requested not in S.VARIANTS:
            raise InputError(f"guidance variant {requested!r} is unknown", f"use auto or one of {', '.join(S.VARIANTS)}")
        return requested
    return "stable-zero123" if "stable" in Path(str(spec)).name.lower() or "stable" in str(spec).lower() \
        else "zero123-xl"


# attention of the VAE's mid block (one head of 512 channels over the 32² latent grid): "sdpa", diffusers'
# default, torch's fused scaled_dot_product_attention; "matmul", diffusers' AttnProcessor (baddbmm, a float
# softmax, bmm). No fused kernel takes a 512-channel head at full speed (docs/performance.md)
VAE_ATTENTIONS = ("sdpa", "matmul")


def check_vae_attention(name: str) -> str:
    """``name`` if it is one of ``VAE_ATTENTIONS``; InputError otherwise (checked before any work)."""
    if name not in VAE_ATTENTIONS:
        raise InputError(f"sds.vae_attention {name!r} is unknown",
                         f"use one of {', '.join(VAE_ATTENTIONS)} (e.g. --set sds.vae_attention=matmul)")
    return name


def check_compile_mode(mode: str) -> str:
    """``mode`` if it is one of ``COMPILE_MODES``; InputError otherwise (checked before any work)."""
    if mode not in COMPILE_MODES:
        raise InputError(f"sds.compile {mode!r} is unknown",
                         f"use one of {', '.join(COMPILE_MODES)} (e.g. --set sds.compile=default)")
    return mode


def vae_posterior(vae: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the VAE posterior of images ``x`` (B,3,H,W) in [-1, 1].

    The same operations as ``AutoencoderKL.encode(x).latent_dist`` (encoder, quant_conv, log-variance
    clamped to [-30, 20]) without its tiling and slicing options, which guidance never turns on; a
    plain function of tensors, so that ``torch.compile`` can take the whole path as one graph.
    """
    h = vae.encoder(x)
    if vae.quant_conv is not None:
        h = vae.quant_conv(h)
    mean, logvar = h.chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))


@dataclass
class Zero123Model:
    """The frozen networks plus what SDS needs from the scheduler and the image processor.

    ``unet_forward`` and ``posterior`` are what a guidance step calls: the UNet module itself and
    ``vae_posterior`` on this VAE, or both compiled (``from_parts``); ``unet`` and ``vae`` stay the plain
    modules (their ``config``, weights and hooks), never replaced.
    """

    unet: nn.Module
    vae: nn.Module
    image_encoder: nn.Module
    projection: nn.Module
    alphas_cumprod: torch.Tensor  # (N,) float32 on the device
    variant: str
    source: str  # the folder or hub id it came from
    device: torch.device
    dtype: torch.dtype
    clip_size: int = 224
    clip_mean: tuple[float, float, float] = CLIP_MEAN
    clip_std: tuple[float, float, float] = CLIP_STD
    channels_last: bool = False  # inputs of the UNet and VAE are handed over in NHWC (see from_parts)
    compile: str = "none"  # the torch.compile mode of unet_forward and posterior (COMPILE_MODES)
    vae_attention: str = "sdpa"  # how the VAE's attention is computed (VAE_ATTENTIONS, from_parts)
    unet_forward: Callable[..., object] | None = None  # default: the UNet module
    posterior: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # default: eager

    def __post_init__(self):
        if self.unet_forward is None:
            self.unet_forward = self.unet
        if self.posterior is None:
            self.posterior = functools.partial(vae_posterior, self.vae)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B,C,H,W) in the memory layout the convolutional networks were set up for.

        Made explicit in both layouts: the VAE's input is a permuted view of (B,H,W,3) renders, NHWC in
        memory, which would otherwise carry that layout into the convolutions (and a compiled network
        specialises on its input's strides)."""
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def latent_shape(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """The shape of the VAE latents of images ``x`` (B,3,H,W): each encoder level but the last halves
        the side."""
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (x.shape[0], int(self.vae.config.latent_channels), x.shape[-2] // f, x.shape[-1] // f)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.image_encoder, self.projection]

    def describe(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        compiled = "" if self.compile == "none" else f", compiled {self.compile}"
        layout = ", NHWC" if self.channels_last else ""
        return (f"{self.variant} from {self.source} ({dtype}, {self.device.type}{layout}{compiled}, "
                f"VAE attention {self.vae_attention})")


def model_dtype(device: torch.device, name: str) -> torch.dtype:
    """bf16/fp16 as configured on CUDA; float32 on the CPU (half-precision convolutions are slow there)."""
    if name not in DTYPES:
        raise InputError(f"guidance dtype {name!r} is unknown", f"use one of {', '.join(DTYPES)}")
    return DTYPES[name] if torch.device(device).type == "cuda" else torch.float32


COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def persistent_compile_cache() -> Path:
    """The folder where Inductor keeps the compiled guidance graphs, made to outlive this process.

    Inductor's default lies in the system's temporary folder, which many systems empty at boot, and a
    cold compile of the guidance networks takes minutes (113.8 s against 16.2 s from a warm cache for
    stage 2's graphs on an H100, docs/performance.md). Unless ``TORCHINDUCTOR_CACHE_DIR`` is set already
    (then it is used as given), it is set for this process to ``genmojo/torchinductor`` in the user's
    cache folder: ``$XDG_CACHE_HOME``, else ``%LOCALAPPDATA%`` (Windows), else ``~/.cache``.
    """
    given = os.environ.get(COMPILE_CACHE_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or str(Path.home() / ".cache")
    folder = Path(base) / "genmojo" / "torchinductor"
    os.environ[COMPILE_CACHE_ENV] = str(folder)
    return folder


def _check_compiler_toolchain(device: torch.device) -> None:
    """Inductor generates Triton kernels on CUDA and C++ on the CPU: refuse up front, naming what is
    missing, rather than on the first guidance call in the middle of a run."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise InputError("sds.compile needs Triton for CUDA code generation, and this Python has none "
                             "(or the GPU is older than compute capability 7.0)",
                             "install triton matching the CUDA torch build, or --set sds.compile=none")
        return
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler as e:
        raise InputError(f"sds.compile on the CPU needs a C++ compiler, and none was found ({e})",
                         "install g++ (or set CXX), or --set sds.compile=none") from e


def _compiled(fn: Callable, mode: str, what: str) -> Callable:
    """``fn`` compiled by torch.compile (Inductor) in ``mode`` for fixed shapes as one whole graph
    (``fullgraph``: a graph break is an error, never a silent partly eager network). Compilation
    happens on the first call per input shape; a failure is raised naming the network and the way out."""
    from torch._dynamo.exc import TorchDynamoException

    compiled = torch.compile(fn, mode=mode, dynamic=False, fullgraph=True)

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except TorchDynamoException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise RuntimeError(f"torch.compile (mode {mode!r}) of the guidance {what} failed: "
                               f"{type(e).__name__}: {first} (--set sds.compile=none runs it eagerly)") from e

    return call


def from_parts(unet: nn.Module, vae: nn.Module, image_encoder: nn.Module, projection: nn.Module,
               alphas_cumprod: torch.Tensor, *, variant: str, source: str, device: torch.device | str,
               dtype: torch.dtype, clip_size: int | None = None, clip_mean=CLIP_MEAN, clip_std=CLIP_STD,
               channels_last: bool = False, compile: str = "none", vae_attention: str = "sdpa") -> Zero123Model:
    """Move the networks to ``device``/``dtype``, freeze them all and wrap them.

    ``vae_attention`` (``VAE_ATTENTIONS``) chooses how the VAE's attention is computed; the values are
    the same either way, within rounding. "sdpa" is what diffusers builds; a run passes
    ``GuidanceConfig.vae_attention``.

    On CUDA with ``channels_last`` the convolutional networks (UNet, VAE) keep their weights in the
    NHWC layout that cuDNN's tensor-core convolutions run in natively, and cuDNN picks its fastest
    algorithm per shape. Measured slower on an H100 (docs/performance.md), hence off by default.

    With ``compile`` other than "none" (``COMPILE_MODES``) the two networks of a guidance step, the
    UNet's forward (run without autograd) and the VAE encoder path ``vae_posterior`` (run with
    autograd: the gradient reaches the images, the frozen weights get none), are compiled by
    ``torch.compile`` with that mode; each input shape compiles once, on its first call (stage 1's and
    stage 2's batches are one shape each). The CLIP encoder and the projection stay eager: they run
    once per crop, or on a single token.
    """
    check_compile_mode(compile)
    check_vae_attention(vae_attention)
    device = torch.device(device)
    if compile != "none":
        _check_compiler_toolchain(device)
    for m in (unet, vae, image_encoder, projection):
        m.to(device)
        if next(m.parameters()).dtype != dtype:
            m.to(dtype)
        m.requires_grad_(False)
        m.eval()
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    vae.set_attn_processor(AttnProcessor() if vae_attention == "matmul" else AttnProcessor2_0())
    channels_last = channels_last and device.type == "cuda"
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    size = clip_size or int(getattr(image_encoder.config, "image_size", 224))
    unet_forward = posterior = None  # eager (Zero123Model's defaults)
    if compile != "none":
        unet_forward = _compiled(unet.forward, compile, "UNet")
        posterior = _compiled(functools.partial(vae_posterior, vae), compile, "VAE encoder")
    return Zero123Model(unet=unet, vae=vae, image_encoder=image_encoder, projection=projection,
                        alphas_cumprod=alphas_cumprod.detach().float().to(device), variant=variant, source=source,
                        device=device, dtype=dtype, clip_size=size, clip_mean=tuple(clip_mean), clip_std=tuple(clip_std),
                        channels_last=channels_last, compile=compile, vae_attention=vae_attention,
                        unet_forward=unet_forward, posterior=posterior)


def _clip_preprocessing(folder: Path, default_size: int) -> tuple[int, tuple, tuple]:
    """Size, mean and std of the CLIP input from ``feature_extractor/preprocessor_config.json`` if any."""
    f = folder / "feature_extractor" / "preprocessor_config.json"
    if not f.is_file():
        return default_size, CLIP_MEAN, CLIP_STD
    d = json.loads(f.read_text())
    crop = d.get("crop_size", default_size)
    size = int(crop.get("height", default_size) if isinstance(crop, dict) else crop)
    return size, tuple(d.get("image_mean", CLIP_MEAN)), tuple(d.get("image_std", CLIP_STD))


def load_zero123(spec: str, device: torch.device | str, dtype_name: str = "bfloat16", variant: str = "auto",
                 *, allow_download: bool | None = None, channels_last: bool = False,
                 compile: str = "none", vae_attention: str = "sdpa") -> Zero123Model:
    """Load a Zero123-family model from a local folder or hub id (see ``resolve_model``), frozen; with
    ``compile`` its UNet and VAE encoder run compiled (``from_parts``). An unknown ``compile`` mode is
    refused before anything is looked for or loaded, and so is a compile mode this machine has no compiler
    for."""
    check_compile_mode(compile)
    check_vae_attention(vae_attention)
    if compile != "none":  # before gigabytes of weights are read, not after (from_parts checks it again)
        _check_compiler_toolchain(torch.device(device))
    folder = resolve_model(spec, allow_download=allow_download)
    AutoencoderKL, DDIMScheduler, UNet2DConditionModel, *_ = _diffusers()
    from transformers import CLIPVisionModelWithProjection

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is the run's log; a bar per part adds nothing there
    device = torch.device(device)
    dtype = model_dtype(device, dtype_name)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
        encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", dtype=dtype)
        projection = _projection_class().from_pretrained(folder, subfolder="clip_camera_projection", torch_dtype=dtype)
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise InputError(f"score-distillation guidance (Zero123): the model in {folder} could not be loaded "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", DISABLE_HINT) from e
    if unet.config.in_channels != 8:
        raise InputError(f"{folder}/unet has {unet.config.in_channels} input channels; a Zero123 UNet has 8 "
                         "(4 noisy latent + 4 image latent)", DISABLE_HINT)
    proj_in = projection.config.in_channel
    if proj_in != encoder.config.projection_dim + 4:
        raise InputError(f"{folder}/clip_camera_projection takes {proj_in} inputs, expected the CLIP "
                         f"embedding ({encoder.config.projection_dim}) + 4 camera values", DISABLE_HINT)
    size, mean, std = _clip_preprocessing(folder, int(encoder.config.image_size))
    return from_parts(unet, vae, encoder, projection, scheduler.alphas_cumprod,
                      variant=detect_variant(spec, variant), source=str(spec), device=device, dtype=dtype,
                      clip_size=size, clip_mean=mean, clip_std=std, channels_last=channels_last, compile=compile,
                      vae_attention=vae_attention)


def save_zero123(folder: str | Path, unet, vae, image_encoder, projection, scheduler) -> Path:
    """Write the parts in the diffusers folder layout that ``load_zero123`` reads (tests, benchmarks)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    image_encoder.save_pretrained(folder / "image_encoder")
    projection.save_pretrained(folder / "clip_camera_projection")
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "Zero123", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "clip_camera_projection": ["backend.priors.zero123", "CameraProjection"],
             "scheduler": ["diffusers", type(scheduler).__name__]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


# ---------------------------------------------------------------------------------------------
# guidance


@dataclass
class Conditioning:
    """Embeddings of N conditioning crops: CLIP image embeddings (N,D) and VAE latents (N,4,h,w)."""

    clip: torch.Tensor
    latents: torch.Tensor

    def __len__(self) -> int:
        return int(self.clip.shape[0])


@dataclass
class SdsStep:
    """What one SDS evaluation used and produced (for logging and for tests of the formula)."""

    loss: torch.Tensor  # the summed SDS loss (not yet weighted or divided)
    timestep: int
    weight: float  # w(τ)
    noise: torch.Tensor  # ε (B,4,h,w)
    latents: torch.Tensor  # z (B,4,h,w), detached
    eps_hat: torch.Tensor  # the guided noise prediction ε̂ (B,4,h,w)
    camera: torch.Tensor  # (B,4) the camera vectors


def _as_images(images) -> torch.Tensor:
    """(N,H,W,3) float in [0,1] (numpy or torch) → (N,3,H,W) float32 tensor."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3), got {tuple(x.shape)}")
    return x.float().permute(0, 3, 1, 2)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device`` without the host waiting for the GPU: a host tensor bound for CUDA is staged in
    pinned memory and copied asynchronously (a copy from pageable memory synchronises with the stream).
    The caching host allocator keeps the pinned block until the copy has run."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def sds_core(m: Zero123Model, guidance_scale: float, x: torch.Tensor, xi: torch.Tensor, noise: torch.Tensor,
             hidden: torch.Tensor, image_latent: torch.Tensor, ts: torch.Tensor, abar: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SDS evaluation from tensors alone: the loss, its gradient on the VAE's input ``x``, the latents
    and the guided noise prediction.

    ``x`` (B,3,s,s) the images in the VAE's range, dtype and layout; ``xi`` the posterior sample's standard
    normal and ``noise`` ε (B,4,h,w); ``hidden`` (2B,1,D) and ``image_latent`` (2B,4,h,w) the conditional
    then unconditional branch's token and image latent; ``ts`` (2B,) τ; ``abar`` the 0-dim ᾱ_τ.

    The loss is ``sds_loss`` (0.5·Σ (z − stopgrad(z − g))², g = w(τ)·(ε̂ − ε)), and its gradient reaches
    ``x`` through the VAE encoder's backward here, not later: the encoder's activations are freed before
    the call returns, and the whole evaluation (forward, UNet, backward) is one fixed-shape function of
    its inputs, which ``GraphedCall`` can replay from one CUDA graph.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        post_mean, post_std = m.posterior(x)
        latents = (post_mean + post_std * xi) * m.scaling_factor
    with torch.no_grad():
        noisy = S.add_noise(latents.detach().float(), noise, abar)
        unet_in = torch.cat([torch.cat([noisy, noisy]).to(m.dtype), image_latent], 1)
        eps = m.unet_forward(m.layout(unet_in), ts, encoder_hidden_states=hidden).sample.float()
        eps_cond, eps_uncond = eps.chunk(2)
        eps_hat = S.classifier_free(eps_cond, eps_uncond, guidance_scale)
        grad = S.sds_gradient(eps_hat, noise, S.weight_at(abar))
    with torch.enable_grad():
        loss = S.sds_loss(latents, grad)
        # backward(inputs=) rather than autograd.grad: the same gradient, and FlopCounterMode's module
        # tracking (a benchmark's FLOP count) refuses the latter on a leaf
        loss.backward(inputs=[x])
    return loss.detach(), x.grad, latents.detach(), eps_hat


class PrecomputedGradient(torch.autograd.Function):
    """A loss whose gradient on ``x`` is already known: the value passes through, and the backward hands
    on ``grad`` × the incoming scale, so the rest of the graph (resize, renders, the deformation) gets its
    gradient from autograd as usual."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, scale: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return (scale * grad.float()).to(grad.dtype), None, None


class Zero123Guidance:
    """Score distillation with a frozen Zero123 model; see the module docstring for the conventions.

    Random draws: ``generator`` (host, seeded with ``seed``) draws the view offsets, which the renderer
    reads on the host. The posterior samples and the SDS noise are drawn where they are used, on the
    model's device, from ``noise_generator``: on the CPU that is ``generator`` itself (one stream, as
    before there was a device one); on CUDA a device generator that each call reseeds from one draw of
    ``generator`` (``_device_draws``). Either way ``generator``'s state, which checkpoints keep,
    determines every draw, so a resumed run draws what the straight run drew.
    """

    def __init__(self, model: Zero123Model, cfg: GuidanceConfig, seed: int = 0):
        self.model = model
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(int(seed))
        self.noise_generator = (self.generator if model.device.type == "cpu"
                                else torch.Generator(device=model.device).manual_seed(int(seed)))
        # w(τ) is read on the host each step; indexing the device copy would wait for the GPU
        self._alphas_cumprod_host = model.alphas_cumprod.detach().cpu()
        self.last: SdsStep | None = None
        core = functools.partial(sds_core, model, cfg.guidance_scale)
        # on CUDA with sds.cuda_graph, each batch shape's call is captured once and replayed (cuda_graph.py)
        self._core = GraphedCall(core) if cfg.cuda_graph and model.device.type == "cuda" else core

    # -- conditioning -----------------------------------------------------------------------

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.cfg.image_size
        return x if x.shape[-2:] == (s, s) else F.interpolate(x, (s, s), mode="bilinear", align_corners=False)

    def _vae_input(self, x01: torch.Tensor) -> torch.Tensor:
        """Images (B,3,s,s) in [0,1] as the VAE reads them: [-1, 1], the model's dtype and layout."""
        m = self.model
        return m.layout((2 * x01 - 1).to(m.dtype))

    def _device_draws(self) -> torch.Generator:
        """``noise_generator``, ready for one call's draws: on CUDA reseeded from a host draw (a host
        operation: nothing waits for the GPU), so that ``generator``'s state determines its stream."""
        if self.noise_generator is self.generator:
            return self.generator
        return self.noise_generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))

    def _randn(self, shape, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal draws on the model's device (``generator`` is ``_device_draws()``)."""
        return torch.randn(shape, generator=generator, device=self.model.device, dtype=dtype)

    @torch.no_grad()
    def condition(self, crops) -> Conditioning:
        """Embeddings of conditioning crops (N,S,S,3) float in [0,1] on white; computed once, cached by the
        caller (per object for stage 1, per object and frame for stage 2)."""
        m = self.model
        x = self._resize(_as_images(crops).to(m.device))
        size = m.clip_size
        xc = F.interpolate(x, (size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(m.clip_mean, device=m.device)[None, :, None, None]
        std = torch.tensor(m.clip_std, device=m.device)[None, :, None, None]
        clip = m.image_encoder(pixel_values=((xc - mean) / std).to(m.dtype)).image_embeds
        # eager even when the step's path is compiled: this runs once per crop, at other batch sizes
        post_mean, post_std = vae_posterior(m.vae, self._vae_input(x))
        if self.cfg.cond_latent == "mode":
            latents = post_mean
        else:
            latents = post_mean + post_std * self._randn(post_mean.shape, self._device_draws(), post_mean.dtype)
        return Conditioning(clip=clip.detach(), latents=latents.detach())

    # -- one SDS evaluation -----------------------------------------------------------------------

    def sds(self, images: torch.Tensor, cond: Conditioning, index: torch.Tensor, deltas: torch.Tensor,
            t: int) -> SdsStep:
        """SDS of rendered images (B,H,W,3) in [0,1] (white background), each conditioned on
        ``cond[index[b]]`` at Zero123 offsets ``deltas`` (B,3) (Δpolar°, Δazimuth°, Δradius), at level τ=t.

        The gradient on the images is computed here, through the VAE encoder (``sds_core``), and handed
        to autograd with the loss (``PrecomputedGradient``): the loss's backward only carries it on into
        the renders. No model weight receives a gradient. On CUDA nothing here waits for the GPU: the
        draws are made on the device, ``index`` and the camera vectors (computed where ``deltas`` are, the
        host) cross from pinned memory, and w(τ) is read from a host copy of the schedule.
        """
        m, c = self.model, self.cfg
        B = images.shape[0]
        draws = self._device_draws()
        x = self._vae_input(self._resize(images.permute(0, 3, 1, 2)))
        xi = self._randn(m.latent_shape(x), draws, m.dtype)  # the posterior sample's standard normal
        noise = self._randn(xi.shape, draws)
        index = to_device(index.long(), m.device)
        camera = to_device(S.camera_embedding(deltas, m.variant, c.reference_polar_deg), m.device)
        with torch.no_grad():
            token = torch.cat([cond.clip[index].float(), camera], -1)[:, None, :]
            token = m.projection(token.to(m.dtype))
            hidden = torch.cat([token, torch.zeros_like(token)])  # conditional, then unconditional
            image_latent = torch.cat([cond.latents[index], torch.zeros_like(cond.latents[index])]).to(m.dtype)
            ts = torch.full((2 * B,), t, device=m.device, dtype=torch.long)
        with span("guidance_sds"):
            value, grad_x, latents, eps_hat = self._core(x.detach(), xi, noise, hidden, image_latent, ts,
                                                         m.alphas_cumprod[t])
        loss = PrecomputedGradient.apply(x, value, grad_x)
        step = SdsStep(loss=loss, timestep=t, weight=S.sds_weight(self._alphas_cumprod_host, t), noise=noise,
                       latents=latents, eps_hat=eps_hat, camera=camera)
        self.last = step
        return step

    @property
    def graphed(self) -> bool:
        """Whether each call is replayed from a CUDA graph (``GuidanceConfig.cuda_graph`` on CUDA)."""
        return isinstance(self._core, GraphedCall)

    def release_graphs(self) -> None:
        """Free the CUDA graphs of the guidance calls and their memory (stage 1's batch, once it is done)."""
        if self.graphed:
            self._core.release()

    # -- sampling views -------------------------------------------------------------------------

    def sample_deltas(self, n: int, radius_range: tuple[float, float]) -> torch.Tensor:
        """(n,3) Zero123 offsets: integer Δpolar and Δazimuth in [lo, hi) degrees, Δradius uniform."""
        c, g = self.cfg, self.generator
        polar = torch.randint(c.polar_range_deg[0], c.polar_range_deg[1], (n,), generator=g).float()
        azim = torch.randint(c.azimuth_range_deg[0], c.azimuth_range_deg[1], (n,), generator=g).float()
        lo, hi = radius_range
        radius = lo + (hi - lo) * torch.rand(n, generator=g)
        return torch.stack([polar, azim, radius], -1)

    # -- stage 1 and stage 2 ----------------------------------------------------------------------

    def for_object(self, crop_image) -> "ObjectGuidance":
        """Stage 1's guidance for one object, conditioned on its reference crop (S,S,3) in [0,1]."""
        return ObjectGuidance(self, self.condition(np.asarray(crop_image)[None]))

    def frame_loss(self, cond: Conditioning, frames: torch.Tensor,
                   render: Callable[[torch.Tensor], torch.Tensor], step_ratio: float) -> torch.Tensor:
        """Stage 2's SDS for one object: ``weight · SDS / (B·V)`` over B frames × V views.

        ``cond`` holds the object's per-frame embeddings (row t = frame t, from ``condition`` of
        ``frame_crops``); ``frames`` (B,) are the sampled frame indices; ``render(offsets)`` receives
        orbit offsets (B,V,3) (Δelevation° up-positive, Δazimuth°, Δradius, as ``orbit_viewmat``) and
        returns the object-centric renders (B·V,H,W,3), frame-major, on white.
        """
        c = self.cfg
        B, V = int(frames.shape[0]), c.stage2_views
        deltas = self.sample_deltas(B * V, c.stage2_radius_range)
        images = render(S.orbit_to_zero123(deltas).reshape(B, V, 3))
        index = frames.detach().long()[:, None].expand(B, V).reshape(-1)  # frame-major, where frames are
        t = S.timestep(step_ratio, c.stage2_t_range, self.model.num_train_timesteps)
        step = self.sds(images, cond, index, deltas, t)
        return c.weight * step.loss / (B * V)


class ObjectGuidance:
    """Stage 1's ``Guidance``: random views around one object, conditioned on its reference crop."""

    def __init__(self, guidance: Zero123Guidance, cond: Conditioning):
        self.guidance = guidance
        self.cond = cond

    def __call__(self, render_views: Callable[[torch.Tensor], torch.Tensor], step_ratio: float) -> torch.Tensor:
        g = self.guidance
        c = g.cfg
        V = c.stage1_views
        deltas = g.sample_deltas(V, c.stage1_radius_range)
        images = render_views(S.orbit_to_zero123(deltas))
        t = S.timestep(step_ratio, c.stage1_t_range, g.model.num_train_timesteps)
        step = g.sds(images, self.cond, torch.zeros(V, dtype=torch.long, device=g.model.device), deltas, t)
        return c.weight * step.loss / V


def frame_crops(frames: np.ndarray, masks: np.ndarray, bboxes: np.ndarray, visible: np.ndarray, ref_side: float,
                margin: float, size: int) -> np.ndarray:
    """(T,size,size,3) conditioning crops of one object for stage 2: frame t's object on white in a square
    of side ``max(bbox side / margin, ref_side)`` (never zoomed in past the reference crop). Frames where
    the object is not visible (or withheld) take the nearest visible frame's crop."""
    from ..model.crops import crop_box, crop_object

    T = frames.shape[0]
    vis = np.flatnonzero(visible)
    if vis.size == 0:
        raise ValueError("the object is visible in no frame")
    out = np.zeros((T, size, size, 3), np.float32)
    for t in vis:
        box = crop_box(bboxes[t], margin, ref_side)
        out[t] = crop_object(frames[t], masks[t].astype(np.float32), box, size)[0]
    for t in np.flatnonzero(~np.asarray(visible, bool)):
        out[t] = out[vis[np.argmin(np.abs(vis - t))]]
    return out
