"""The guidance networks' convolutions one at a time on cuDNN: how fast each runs alone, in both layouts.

A guidance call (``bench_guidance.py``) is mostly convolutions: the VAE encoder's at 256² (forward, and
the input gradient its backward into the renders needs; no weight gradient, the weights are frozen) and
the UNet's at 32² (forward only: SDS never backpropagates through it). This script records every
convolution those networks make at the spec's batch (32 images per call: the VAE encodes 32, the UNet
runs 64 latents for the two CFG branches), then times each distinct one alone with cuDNN's algorithm
search on, in NCHW and NHWC, bf16. The sum over the calls, each in its faster layout, is what the
convolutions of one call cost if everything between them (GroupNorm, SiLU, attention, the layout
transposes) cost nothing: a floor for the call on this software, and its TFLOP/s the most the guidance
path could reach with cuDNN's convolutions.

    python scripts/bench_convs.py --out bench_convs              # on a GPU
    python scripts/bench_convs.py --tiny --device cpu --reps 1   # smoke check of the script
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_guidance import bf16_peak, full_parts, tiny_parts  # noqa: E402
from bench_kernels import timed  # noqa: E402


def record_convs(module: nn.Module, run) -> Counter:
    """How often ``run()`` calls each distinct convolution of ``module``: keys are (input shape, weight
    shape, stride, padding, groups)."""
    seen: Counter = Counter()

    def hook(conv, args, _out):
        seen[(tuple(args[0].shape), tuple(conv.weight.shape), tuple(conv.stride), tuple(conv.padding),
              conv.groups)] += 1

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return seen


def conv_flops(key) -> int:
    """Multiply-adds × 2 of one forward (the input gradient costs the same)."""
    (n, cin, h, w), (cout, cin_g, kh, kw), (sh, sw), (ph, pw), _groups = key
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return 2 * n * cout * ho * wo * cin_g * kh * kw


WARMUP = 2  # untimed runs before each timing (the first one runs cuDNN's algorithm search)


def time_conv(key, dtype, device, channels_last: bool, input_grad: bool, reps: int) -> dict:
    """Median ms of the forward (and with ``input_grad`` the input gradient alone) of one convolution."""
    shape, wshape, stride, padding, groups = key
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(wshape, device=device, dtype=dtype).contiguous(memory_format=fmt) * 0.05
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, w, None, stride, padding, 1, groups)
        gy = torch.randn_like(y)
        out = {"forward_ms": timed(lambda: torch.nn.functional.conv2d(x, w, None, stride, padding, 1, groups),
                                   device, reps, WARMUP)[0]}
        if input_grad:
            out["input_grad_ms"] = timed(lambda: torch.ops.aten.convolution_backward(
                gy, x, w, None, stride, padding, (1, 1), False, (0, 0), groups, (True, False, False)),
                device, reps, WARMUP)[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=32, help="images per guidance call (spec: 8 frames × 4 views)")
    ap.add_argument("--reps", type=int, default=10, help="timed runs of each convolution")
    ap.add_argument("--tiny", action="store_true", help="the tiny model (smoke check)")
    ap.add_argument("--peak_tflops", type=float, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench_convs"))
    args = ap.parse_args(argv)
    if args.images < 1 or args.reps < 1:
        ap.error("--images and --reps must be at least 1")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # each convolution at its best algorithm
    with torch.device(device):
        unet, vae, _enc, _proj, _sched = tiny_parts() if args.tiny else full_parts()
    unet.to(dtype), vae.to(dtype)
    size = 32 if args.tiny else 256
    n = args.images
    x = torch.randn(n, 3, size, size, device=device, dtype=dtype)
    latent = size // 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(2 * n, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
    hidden = torch.randn(2 * n, 1, unet.config.cross_attention_dim, device=device, dtype=dtype)
    ts = torch.full((2 * n,), 500, device=device, dtype=torch.long)
    networks = {"vae": (record_convs(vae, lambda: vae.quant_conv(vae.encoder(x))), True),
                "unet": (record_convs(unet, lambda: unet(z, ts, encoder_hidden_states=hidden)), False)}
    rows, totals = [], {}
    for net, (convs, input_grad) in networks.items():
        t = {"flops": 0, "nchw_ms": 0.0, "nhwc_ms": 0.0, "best_ms": 0.0}
        for key, count in sorted(convs.items(), key=lambda kv: -conv_flops(kv[0]) * kv[1]):
            nchw = time_conv(key, dtype, device, False, input_grad, args.reps)
            nhwc = time_conv(key, dtype, device, True, input_grad, args.reps)
            per = 2 if input_grad else 1
            flops = conv_flops(key) * per * count
            ms = {k: sum(v.values()) * count for k, v in (("nchw", nchw), ("nhwc", nhwc))}
            t["flops"] += flops
            t["nchw_ms"] += ms["nchw"]
            t["nhwc_ms"] += ms["nhwc"]
            t["best_ms"] += min(ms.values())
            rows.append({"network": net, "input": list(key[0]), "weight": list(key[1]), "stride": list(key[2]),
                         "padding": list(key[3]), "groups": key[4], "calls": count, "flop": flops,
                         "nchw": {k: round(v, 4) for k, v in nchw.items()},
                         "nhwc": {k: round(v, 4) for k, v in nhwc.items()},
                         "best_tflops": round(flops / (min(ms.values()) / 1000) / 1e12, 1)})
        totals[net] = t
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (bf16_peak(name) if device.type == "cuda" else None)
    flops = sum(t["flops"] for t in totals.values())
    best_ms = sum(t["best_ms"] for t in totals.values())
    result = {"device": name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
              "dtype": str(dtype).replace("torch.", ""), "images": n, "image_size": size,
              "networks": {k: {"tflop": round(t["flops"] / 1e12, 3), "nchw_ms": round(t["nchw_ms"], 3),
                               "nhwc_ms": round(t["nhwc_ms"], 3), "best_ms": round(t["best_ms"], 3),
                               "best_tflops": round(t["flops"] / (t["best_ms"] / 1000) / 1e12, 1)}
                           for k, t in totals.items()},
              "conv_tflop": round(flops / 1e12, 3), "conv_best_ms": round(best_ms, 3),
              "conv_best_tflops": round(flops / (best_ms / 1000) / 1e12, 1), "bf16_peak_tflops": peak,
              "conv_best_fraction_of_peak": round(flops / (best_ms / 1000) / 1e12 / peak, 4) if peak else None,
              "convolutions": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convs_bench.json").write_text(json.dumps(result, indent=2))
    md = ["| network | TFLOP (convolutions) | NCHW ms | NHWC ms | each in its faster layout, ms | TFLOP/s |",
          "|---|---|---|---|---|---|"]
    for k, t in result["networks"].items():
        md.append(f"| {k} | {t['tflop']} | {t['nchw_ms']} | {t['nhwc_ms']} | {t['best_ms']} | {t['best_tflops']} |")
    share = result["conv_best_fraction_of_peak"]
    share = f" ({100 * share:.1f} % of the bf16 peak)" if share is not None else ""
    md.append(f"| all | {result['conv_tflop']} | | | {result['conv_best_ms']} | {result['conv_best_tflops']}{share} |")
    md += ["", "| network | input | weight | stride | calls | GFLOP (all calls) | NCHW ms (forward / input gradient) "
               "| NHWC ms | TFLOP/s (faster layout) |", "|---|---|---|---|---|---|---|---|---|"]

    def ms(t: dict) -> str:
        return " / ".join(str(v) for v in t.values())

    for r in rows:
        md.append(f"| {r['network']} | {r['input']} | {r['weight']} | {r['stride']} | {r['calls']} "
                  f"| {r['flop'] / 1e9:.2f} | {ms(r['nchw'])} | {ms(r['nhwc'])} | {r['best_tflops']} |")
    text = f"{name}, {result['dtype']}, {n} images per call, cuDNN {result['cudnn']}\n\n" + "\n".join(md) + "\n"
    (args.out / "convs_bench.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
