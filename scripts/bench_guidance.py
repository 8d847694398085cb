"""Time one Zero123 guidance step at the spec's batch with a full-size, random-weight model (no download).

What is timed is exactly stage 2's per-object guidance call, ``Zero123Guidance.frame_loss``: 8 frames ×
4 views = 32 rendered images (stand-ins: random 256² images that require grad), resized, VAE-encoded with
autograd, one UNet pass on 64 latents (conditional + unconditional), the SDS loss and its backward
through the VAE encoder into the images. The model is built from the published Zero123-XL shapes
(SD-1.x UNet with 8 input channels, 320 base channels, multipliers 1/2/4/4, cross-attention 768; the
SD AutoencoderKL; CLIP ViT-L/14 vision tower with a 768 projection; the 772 → 768 camera projection),
so the figures hold for the real weights, which only differ in value.

Reports milliseconds per step (median of the timed steps), the FLOPs of one step (forward + backward,
counted by torch's FlopCounterMode), the achieved TFLOP/s against the device's dense bf16 peak, and
the peak memory; writes JSON and a markdown table into ``--out``.

``--profile_steps N`` profiles N more steps after the timed ones and adds the table of the kernels with
the most device time per step (forward and backward), the launches and kernel time per step, and the
host operations with the most self time: where a layout or a fused kernel would have to win, and
whether the device or the host sets the pace.

``--cuda_graph`` replays each call from a CUDA graph (``GuidanceConfig.cuda_graph``), captured in the
first step; FLOPs are then counted on a direct call (a replay issues no operators to count).

``--compile MODE`` runs the UNet and the VAE encoder path compiled by torch.compile
(``GuidanceConfig.compile``). The first step compiles them; it is timed on its own (``first_step_s``)
and followed by ``--warmup`` untimed steps, so the timed steps never include compilation. FLOPs are
counted on an eager run of the same step (the networks compute the same operations either way).

    python scripts/bench_guidance.py --device cuda --dtype bfloat16 --out bench_out     # on a GPU
    python scripts/bench_guidance.py --device cuda --compile default --out bench_c      # compiled
    python scripts/bench_guidance.py --tiny --device cpu --steps 2 --warmup 1           # smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend import profiling  # noqa: E402
from backend.config import GuidanceConfig  # noqa: E402
from backend.priors import zero123 as Z  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment, from the vendors' data sheets
BF16_PEAK = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("A100", 312.0),
             ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("4090", 165.2)]


def full_parts():
    """The networks of Zero123-XL at their published sizes, random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNet2DConditionModel(sample_size=32, in_channels=8, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280),
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                                cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, latent_channels=4, sample_size=256, scaling_factor=0.18215)
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                                         num_hidden_layers=24, num_attention_heads=16, image_size=224,
                                                         patch_size=14, projection_dim=768, hidden_act="quick_gelu"))
    proj = Z.CameraProjection(772, 768)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, num_train_timesteps=1000)
    return unet, vae, enc, proj, sched


def tiny_parts():
    """The same architecture families, tiny (for a CPU smoke run of this script)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNet2DConditionModel(sample_size=4, in_channels=8, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                         num_attention_heads=2, image_size=32, patch_size=8,
                                                         projection_dim=16))
    proj = Z.CameraProjection(20, 16)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False)
    return unet, vae, enc, proj, sched


def bf16_peak(name: str) -> float | None:
    for frag, peak in BF16_PEAK:
        if frag.lower() in name.lower():
            return peak
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                    help="model precision on CUDA (the CPU always runs float32)")
    ap.add_argument("--frames", type=int, default=8, help="frames per object and step (spec: 8)")
    ap.add_argument("--views", type=int, default=4, help="views per frame (spec: 4) → frames × views images")
    ap.add_argument("--render_size", type=int, default=256, help="side of the stand-in renders")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (compiling) one")
    ap.add_argument("--tiny", action="store_true", help="a tiny model instead of the full-size one (smoke check)")
    ap.add_argument("--channels_last", action="store_true",
                    help="the UNet and VAE in the NHWC layout with cuDNN autotuning (GuidanceConfig.channels_last)")
    ap.add_argument("--compile", default="none", choices=Z.COMPILE_MODES,
                    help="torch.compile mode of the UNet and the VAE encoder path (GuidanceConfig.compile)")
    ap.add_argument("--vae_attention", default=GuidanceConfig().vae_attention, choices=Z.VAE_ATTENTIONS,
                    help="how the VAE's attention is computed (GuidanceConfig.vae_attention)")
    ap.add_argument("--cuda_graph", action="store_true",
                    help="replay each guidance call from a CUDA graph (GuidanceConfig.cuda_graph)")
    ap.add_argument("--cudnn_benchmark", default="auto", choices=["auto", "on", "off"],
                    help="cuDNN's per-shape algorithm search: auto leaves it as from_parts sets it (on with "
                         "--channels_last)")
    ap.add_argument("--profile_steps", type=int, default=0,
                    help="profile this many steps after the timed ones for a kernel table (0: none)")
    ap.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak, if not known")
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    args = ap.parse_args(argv)
    if args.profile_steps < 0:
        ap.error("--profile_steps must be 0 or more")

    device = torch.device(args.device)
    dtype = Z.model_dtype(device, args.dtype)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise the random weights where they will run
        parts = tiny_parts() if args.tiny else full_parts()
    unet, vae, enc, proj, sched = parts
    model = Z.from_parts(unet, vae, enc, proj, sched.alphas_cumprod, variant="zero123-xl",
                         source="random weights (" + ("tiny" if args.tiny else "Zero123-XL shapes") + ")",
                         device=device, dtype=dtype, channels_last=args.channels_last, compile=args.compile,
                         vae_attention=args.vae_attention)
    if args.cudnn_benchmark != "auto":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    build_s = time.perf_counter() - t0
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in
              (("unet", unet), ("vae", vae), ("image_encoder", enc), ("projection", proj))}
    size = 32 if args.tiny else 256
    cfg = GuidanceConfig(image_size=size, stage2_views=args.views, cuda_graph=args.cuda_graph)
    guidance = Z.Zero123Guidance(model, cfg, seed=0)
    B = args.frames
    crops = torch.rand(B, size, size, 3)
    cond = guidance.condition(crops)  # computed once per object and frame in a run: not part of the step
    frames = torch.arange(B)
    images = torch.rand(B * args.views, args.render_size, args.render_size, 3, device=device, requires_grad=True)

    def step(ratio=0.3):
        images.grad = None
        loss = guidance.frame_loss(cond, frames, lambda offsets: images, ratio)
        loss.backward()
        return loss

    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    if device.type == "cuda":
        # from the first step on: a CUDA graph's memory pool is allocated while it is captured there, and a
        # replay allocates nothing the allocator would count
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t = time.perf_counter()
    step()  # with --compile, the UNet and the VAE path compile here; with --cuda_graph, the call is captured
    sync(device)
    first_step_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - t
    from torch.utils.flop_counter import FlopCounterMode

    # the compiled networks run eagerly while FLOPs are counted: the counter sees aten operations only,
    # and a whole-graph compile refuses to trace under its dispatch mode
    eager = torch.compiler.set_stance("force_eager") if model.compile != "none" else contextlib.nullcontext()
    with eager, FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    times = []
    for _ in range(args.steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append((time.perf_counter() - t) * 1000)
    kernels, launches, busy_ms, host_ops = [], None, None, []
    if args.profile_steps:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(args.profile_steps):
                step()
            sync(device)
        kernels, launches, busy_ms = profiling.top_kernels(prof, args.profile_steps)
        host_ops = profiling.top_host_ops(prof, args.profile_steps)
    # the UNet alone (both CFG branches), to show how the step splits
    unet_ms = []
    with torch.no_grad():
        # the step's shapes, layout and dtypes, so that a compiled UNet runs the graph the step compiled
        x = model.layout(torch.randn(2 * B * args.views, 8, size // 8, size // 8, device=device, dtype=dtype))
        h = torch.randn(2 * B * args.views, 1, unet.config.cross_attention_dim, device=device, dtype=dtype)
        ts = torch.full((x.shape[0],), 500, device=device, dtype=torch.long)
        for _ in range(max(2, args.steps // 2)):
            sync(device)
            t = time.perf_counter()
            model.unet_forward(x, ts, encoder_hidden_states=h)
            sync(device)
            unet_ms.append((time.perf_counter() - t) * 1000)
    # graphs torch.compile captured in this run: 2 (UNet, VAE path) unless a shape or guard recompiled
    compiled_graphs = counters["stats"]["unique_graphs"] - graphs_before

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = args.peak_tflops or (bf16_peak(name) if device.type == "cuda" else None)
    ms = statistics.median(times)
    achieved = flops / (ms / 1000) / 1e12
    result = {
        "device": name, "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
        "model": "tiny" if args.tiny else "Zero123-XL shapes, random weights", "params": params,
        "layout": "NHWC (channels_last)" if model.channels_last else "NCHW", "compile": model.compile,
        "vae_attention": model.vae_attention, "cuda_graph": guidance.graphed,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "first_step_s": round(first_step_s, 3), "warmup_steps": args.warmup, "warmup_s": round(warmup_s, 3),
        "compiled_graphs": compiled_graphs,
        "images_per_step": B * args.views, "frames": B, "views": args.views, "render_size": args.render_size,
        "model_image_size": size, "ms_per_step": round(ms, 3), "ms_all": [round(t, 3) for t in times],
        "unet_ms_both_branches": round(statistics.median(unet_ms), 3), "flops_per_step": flops,
        "achieved_tflops": round(achieved, 3), "bf16_peak_tflops": peak,
        "fraction_of_peak": round(achieved / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 3) if device.type == "cuda" else None,
        "build_s": round(build_s, 2),
        "profiled_steps": args.profile_steps, "top_kernels": kernels, "kernel_launches_per_step": launches,
        "kernel_ms_per_step": busy_ms, "top_host_ops": host_ops,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guidance_bench.json").write_text(json.dumps(result, indent=2))
    rows = [("device", name), ("dtype", result["dtype"]), ("model", result["model"]), ("layout", result["layout"]),
            ("compile", result["compile"]), ("VAE attention", result["vae_attention"]),
            ("replayed from a CUDA graph", result["cuda_graph"]),
            ("cuDNN benchmark", result["cudnn_benchmark"]), ("images per step", result["images_per_step"]),
            ("first step, s (compiles with --compile; not timed below)", result["first_step_s"]),
            (f"warm-up steps after it ({args.warmup}), s", result["warmup_s"]),
            ("graphs compiled", compiled_graphs),
            ("ms per step (median)", result["ms_per_step"]),
            ("UNet, both CFG branches (ms)", result["unet_ms_both_branches"]),
            ("TFLOP per step (fwd+bwd)", round(flops / 1e12, 4)), ("achieved TFLOP/s", result["achieved_tflops"]),
            ("bf16 peak TFLOP/s", peak if peak else "unknown (pass --peak_tflops)"),
            ("fraction of peak", result["fraction_of_peak"]), ("peak memory (GiB)", result["peak_memory_gib"]),
            ("peak reserved by the allocator (GiB)", result["peak_reserved_gib"])]
    if args.profile_steps:
        rows += [("device kernel launches per step", launches), ("device kernel time per step (ms)", busy_ms)]
    md = "| what | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    if args.profile_steps:
        md += "\n" + "\n".join(profiling.kernel_table_md(kernels) + [""] + profiling.host_table_md(host_ops)) + "\n"
    (args.out / "guidance_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
