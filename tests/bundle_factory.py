"""Builds small, valid result bundles for tests that need one without running the optimizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.io.bundle_writer import BakedObject, CanonicalArrays, write_bundle
from genmojo_blender.core import bundle as fmt


def make_bundle(out_dir: Path, *, save_name: str = "result", frames: int = 4, objects: int = 2,
                gaussians: int = 50, width: int = 64, height: int = 48, fps: float = 12.0,
                preview: bool = True, seed: int = 0, overwrite: bool = False, should_stop=None) -> Path:
    """A bundle whose objects translate along +x by 0.1 per frame under a static camera."""
    rng = np.random.default_rng(seed)
    names = [f"{i:05d}.png" for i in range(frames)]
    clip = fmt.ClipInfo(width=width, height=height, fps=fps, frame_names=names,
                        frame_numbers=list(range(frames)), source=str(out_dir / "JPEGImages"))
    f = 0.5 * height / np.tan(np.deg2rad(49.1) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], float)
    camera = fmt.CameraTrack(K=np.repeat(K[None], frames, 0), c2w=np.repeat(np.eye(4)[None], frames, 0),
                             width=width, height=height)
    baked = []
    for k in range(objects):
        n = gaussians + 7 * k
        means0 = rng.normal(size=(n, 3)).astype(np.float32) * 0.2 + np.array([0.3 * k, 0, 3.0], np.float32)
        quats = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
        logs = np.full((n, 3), np.log(0.03), np.float32)
        cols = rng.uniform(size=(n, 3)).astype(np.float32)
        ops = rng.uniform(0.2, 0.9, size=n).astype(np.float32)
        shift = np.arange(frames, dtype=np.float32)[:, None, None] * np.array([0.1, 0, 0], np.float32)
        fr = fmt.ObjectFrames(means=means0[None] + shift, quats=np.repeat(quats[None], frames, 0),
                              log_scales=np.repeat(logs[None], frames, 0),
                              colors=np.repeat(cols[None], frames, 0),
                              opacities=np.repeat(ops[None], frames, 0))
        baked.append(BakedObject(id=f"{k + 1:03d}", name=f"object_{k + 1:03d}",
                                 color=(0.2 * k, 0.5, 0.9), frames=fr, visible=[True] * frames,
                                 canonical=CanonicalArrays(means=means0, quats=quats, log_scales=logs,
                                                              colors=cols, opacities=ops)))
    run = fmt.RunInfo(optimizer="test-factory", preset="test", device="cpu", iterations=0,
                      guidance="disabled", depth_source="none", duration_s=0.0)
    prev = (rng.uniform(size=(frames, height, width, 3)) * 255).astype(np.uint8) if preview else None
    return write_bundle(out_dir, save_name, clip=clip, camera=camera, camera_info=fmt.CameraInfo(),
                        objects=baked, run=run, previews={} if prev is None else {"input_view": prev},
                        overwrite=overwrite, should_stop=should_stop)
