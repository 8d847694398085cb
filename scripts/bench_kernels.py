"""Time the custom kernels in ``backend/kernels`` against their torch twins at stage 2's shapes.

Plane features (``hexplane_features``): one object's deformation-field lookup of one micro-batch, the
spec's planes (4 scales 64–512, 32 channels, ``--time_nodes`` time nodes) at ``--gaussians`` Gaussians
and ``--frames`` frames, forward and forward + backward (into the planes), for each kernel and plane
layout; then the whole deformation field (planes, trunk, heads) forward + backward with each kernel,
which is what a stage-2 step pays per object and micro-batch. kNN losses (``knn_rigidity``,
``knn_smoothness``): one object's terms over ``--frames`` frame pairs with ``--knn`` neighbours, forward
and forward + backward, each kernel. Median of ``--steps`` timed calls after
``--warmup``, CUDA events; peak memory per case. Writes ``kernel_bench.json`` and ``kernel_bench.md``.

    python scripts/bench_kernels.py --out $OUT/kernels                   # on a CUDA machine
    python scripts/bench_kernels.py --device cpu --gaussians 2000 --steps 2 --warmup 1 --out /tmp/k   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.config import get_preset  # noqa: E402
from backend.kernels import hexplane_features, knn_rigidity, knn_smoothness, resolve_kernels  # noqa: E402
from backend.model.deformation_field import DeformationField  # noqa: E402
from backend.optim.knn import knn_table  # noqa: E402


def timed(fn, device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    """Median milliseconds of ``fn()`` and the peak memory (GiB) it allocated on CUDA."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--gaussians", type=int, default=17000, help="Gaussians of one object (crossing: 16-18 k)")
    ap.add_argument("--frames", type=int, default=8, help="frames of one micro-batch (spec: 8)")
    ap.add_argument("--time_nodes", type=int, default=13, help="time nodes of the planes (crossing, lite: 13)")
    ap.add_argument("--knn", type=int, default=16, help="neighbours per Gaussian (spec: 16)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    kernels = ["torch"] + (["triton"] if resolve_kernels("auto", device) == "triton" else [])
    dcfg = get_preset("lite").deformation
    torch.manual_seed(0)
    coords = (torch.rand(args.gaussians, 3, device=device) * 2 - 1) * 0.8
    taus = torch.linspace(-1, 1, args.frames, device=device)
    C = dcfg.grid_channels
    rows = []
    for layout in ("contiguous", "channels-last"):
        fmt = torch.channels_last if layout == "channels-last" else torch.contiguous_format
        sp = [torch.rand(3, C, r, r, device=device).contiguous(memory_format=fmt).requires_grad_()
              for r in dcfg.grid_resolutions]
        tp = [(1 + 0.1 * torch.randn(3, C, args.time_nodes, r, device=device)).contiguous(memory_format=fmt)
              .requires_grad_() for r in dcfg.grid_resolutions]
        grad = torch.randn(args.frames, args.gaussians, C * len(sp), device=device)
        for k in kernels:
            def fwd():
                with torch.no_grad():
                    hexplane_features(sp, tp, coords, taus, backend=k)

            def fwd_bwd():
                out = hexplane_features(sp, tp, coords, taus, backend=k)
                torch.autograd.grad(out, sp + tp, grad)

            f_ms, _ = timed(fwd, device, args.steps, args.warmup)
            fb_ms, peak = timed(fwd_bwd, device, args.steps, args.warmup)
            rows.append({"what": "plane features", "kernel": k, "layout": layout, "forward_ms": round(f_ms, 3),
                         "forward_backward_ms": round(fb_ms, 3), "peak_gib": None if peak is None else round(peak, 3)})
            print(rows[-1], flush=True)
    frames = torch.linspace(0, 51, args.frames, device=device).long()
    means = coords * dcfg.bounds
    for k in kernels:
        torch.manual_seed(0)
        field = DeformationField(dcfg, 52, kernel=k).to(device)
        if k == "triton":
            field.planes.channels_last_()

        def field_fwd_bwd():
            d = field(means, frames)
            loss = sum(t.square().sum() for t in (d.d_means, d.d_log_scales, d.d_quats, d.d_colors))
            loss.backward()

        fb_ms, peak = timed(field_fwd_bwd, device, args.steps, args.warmup)
        rows.append({"what": "deformation field", "kernel": k, "layout": "channels-last" if k == "triton" else
                     "contiguous", "forward_ms": None, "forward_backward_ms": round(fb_ms, 3),
                     "peak_gib": None if peak is None else round(peak, 3)})
        print(rows[-1], flush=True)
    table = knn_table(coords, args.knn, 20.0)
    P = args.frames
    xp = (coords + 0.01 * torch.randn(P, args.gaussians, 3, device=device)).requires_grad_()
    xc = (coords + 0.01 * torch.randn(P, args.gaussians, 3, device=device)).requires_grad_()
    back = (torch.eye(3, device=device) + 0.1 * torch.randn(P, args.gaussians, 3, 3, device=device)).requires_grad_()
    dls = (0.05 * torch.randn(P, args.gaussians, 3, device=device)).requires_grad_()
    for what, fn, inputs in (("kNN rigidity", knn_rigidity, (xp, xc, back)), ("kNN scale smoothness", knn_smoothness,
                                                                              (dls,))):
        for k in kernels:
            def loss_fwd():
                with torch.no_grad():
                    fn(*inputs, table.indices, table.weights, backend=k, groups=table.groups)

            def loss_fwd_bwd():
                torch.autograd.grad(fn(*inputs, table.indices, table.weights, backend=k, groups=table.groups), inputs)

            f_ms, _ = timed(loss_fwd, device, args.steps, args.warmup)
            fb_ms, peak = timed(loss_fwd_bwd, device, args.steps, args.warmup)
            rows.append({"what": what, "kernel": k, "layout": "-", "forward_ms": round(f_ms, 3),
                         "forward_backward_ms": round(fb_ms, 3), "peak_gib": None if peak is None else round(peak, 3)})
            print(rows[-1], flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "gaussians": args.gaussians, "frames": args.frames,
              "time_nodes": args.time_nodes, "knn": args.knn, "resolutions": list(dcfg.grid_resolutions), "channels": C,
              "steps": args.steps, "warmup": args.warmup, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernel_bench.json").write_text(json.dumps(result, indent=2))
    md = [f"device {name}, torch {torch.__version__}; {args.gaussians} Gaussians × {args.frames} frames, planes "
          f"{list(dcfg.grid_resolutions)} × {C} channels, {args.time_nodes} time nodes; median of {args.steps}", "",
          "| what | kernel | plane layout | forward ms | forward + backward ms | peak GiB |", "|---|---|---|---|---|---|",
          *(f"| {r['what']} | {r['kernel']} | {r['layout']} | {r['forward_ms']} | {r['forward_backward_ms']} | "
            f"{r['peak_gib']} |" for r in rows)]
    (args.out / "kernel_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
