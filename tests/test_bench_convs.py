"""scripts/bench_convs.py on the CPU with the tiny model: it finds every convolution of both networks,
counts their FLOPs, times the VAE's input gradient (its backward into the renders) and not the UNet's."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the benchmark builds diffusers networks")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_convs  # noqa: E402


def test_the_convolution_benchmark_covers_every_convolution(tmp_path):
    import torch

    assert bench_convs.main(["--tiny", "--device", "cpu", "--reps", "1", "--images", "2", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "convs_bench.json").read_text())
    rows = r["convolutions"]
    unet, vae, *_ = bench_convs.tiny_parts()
    for net, module in (("vae", vae.encoder), ("unet", unet)):
        mine = [c for c in rows if c["network"] == net]
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in module.modules())
        # each of the network's convolutions is called once per forward (the VAE's quant_conv too)
        assert sum(c["calls"] for c in mine) == convs + (net == "vae")
        assert all(("input_grad_ms" in c["nchw"]) == (net == "vae") for c in mine)
        assert all(c["nchw"]["forward_ms"] > 0 and c["nhwc"]["forward_ms"] > 0 for c in mine)
        assert r["networks"][net]["tflop"] == pytest.approx(sum(c["flop"] for c in mine) / 1e12, abs=1e-3)
        for c in mine:  # forward FLOPs, twice for the VAE (its input gradient costs the same again)
            key = (tuple(c["input"]), tuple(c["weight"]), tuple(c["stride"]), tuple(c["padding"]), c["groups"])
            assert c["flop"] == bench_convs.conv_flops(key) * (2 if net == "vae" else 1) * c["calls"]
    # a 3×3 convolution, stride 1, padding 1: 2·N·Cout·H·W·Cin·9
    assert bench_convs.conv_flops(((2, 4, 8, 8), (6, 4, 3, 3), (1, 1), (1, 1), 1)) == 2 * 2 * 6 * 64 * 4 * 9
    assert "| vae |" in (tmp_path / "convs_bench.md").read_text()
