"""The same end-to-end run as on CPU, on CUDA with gsplat (run on the device machine)."""

import pytest
import torch

from genmojo_blender.core.bundle import open_bundle
from test_pipeline import assert_objects_follow_masks, backend, clip_args

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tiny_pipeline_on_cuda(sample_clip_master, tmp_path):
    pytest.importorskip("gsplat")
    code, events, err = backend(*clip_args(sample_clip_master, tmp_path), "--preset", "cpu-tiny", "--device",
                                "cuda", "--iters", 60)
    assert code == 0, err
    b = open_bundle(events[-1].get("bundle"))
    assert b.manifest.run.device.startswith("cuda")
    totals = [e.get("losses")["total"] for e in events if e.type == "progress"]
    assert totals[-1] < 0.7 * totals[0]
    assert_objects_follow_masks(b.root, sample_clip_master)
