"""Headless import benchmark (not a test): a synthetic result of 3 objects x 15,000 Gaussians x 52
frames is imported into an empty scene with the bpy module, and the wall-clock times are written
to a JSON file. The target for the default (points) import is 10 s or less.

    .venv/bin/python scripts/bench_import.py [--out bench_import.json] [--representations POINTS SPLATS MESH]

Each representation is timed in a fresh interpreter, because bpy's state is global to a process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OBJECTS, GAUSSIANS, FRAMES = 3, 15_000, 52
TARGET_S = 10.0

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
from genmojo_blender.blender import importer
t1 = time.perf_counter()
res = importer.import_bundle({bundle!r}, representation={rep!r}, load_plate=False)
t2 = time.perf_counter()
bpy.context.scene.frame_set(26)
dg = bpy.context.evaluated_depsgraph_get()
t3 = time.perf_counter()
print("BENCH:" + json.dumps(dict(import_s=t2 - t1, first_frame_eval_s=t3 - t2, bpy_start_s=t1 - t0,
                                 vertices=[len(o.data.vertices) for o in res.objects],
                                 shape_keys=[len(o.data.shape_keys.key_blocks) for o in res.objects])))
"""


def make_synthetic_bundle(folder: Path) -> Path:
    """A valid bundle with moving, rotating blobs of Gaussians (written by the backend's writer)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import numpy as np

    from bundle_factory import make_bundle

    b = make_bundle(folder, save_name="bench", frames=FRAMES, objects=OBJECTS, gaussians=GAUSSIANS,
                    width=960, height=540, fps=24.0, preview=False)
    rng = np.random.default_rng(0)
    for k in range(OBJECTS):
        path = b / "objects" / f"{k + 1:03d}" / "frames.npz"
        with np.load(path) as z:
            arrays = dict(z)
        n = arrays["means"].shape[1]
        # a shell-shaped object (like a real surface) that turns and travels
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        base = d * (0.4 + 0.01 * rng.normal(size=(n, 1))) + [0.9 * (k - 1), 0, 3.0]
        frames = []
        for t in range(FRAMES):
            a = 0.02 * t
            R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
            c = base.mean(0)
            frames.append((base - c) @ R.T + c + [0.005 * t, 0, 0])
        arrays["means"] = np.array(frames, np.float32)
        arrays["log_scales"] = np.log(rng.uniform(0.01, 0.03, size=(1, n, 3))).repeat(FRAMES, 0).astype(np.float32)
        np.savez(path, **arrays)
    return b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench_import.json"), help="JSON file for the figures")
    ap.add_argument("--representations", nargs="+", default=["POINTS", "SPLATS", "MESH"],
                    choices=["POINTS", "SPLATS", "MESH"])
    ns = ap.parse_args(argv)
    env = dict(os.environ)
    scratch = Path(tempfile.mkdtemp(prefix="genmojo-bench-"))
    env.setdefault("BLENDER_USER_RESOURCES", str(scratch / "blender"))
    t = time.perf_counter()
    bundle = make_synthetic_bundle(scratch)
    results = {"objects": OBJECTS, "gaussians_per_object": GAUSSIANS, "frames": FRAMES,
               "target_s": TARGET_S, "bundle_write_s": time.perf_counter() - t, "cpu_count": os.cpu_count(),
               "python": sys.version.split()[0], "runs": {}}
    for rep in ns.representations:
        cp = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), bundle=str(bundle), rep=rep)],
                            capture_output=True, text=True, env=env)
        line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("BENCH:")), None)
        if cp.returncode != 0 or line is None:
            print(cp.stdout[-2000:], cp.stderr[-2000:], file=sys.stderr)
            return 1
        results["runs"][rep] = json.loads(line[len("BENCH:"):])
        print(f"{rep:7s} import {results['runs'][rep]['import_s']:.2f} s", flush=True)
    import bpy  # noqa: F401  (only for the version string)
    results["blender"] = bpy.app.version_string
    results["points_within_target"] = results["runs"].get("POINTS", {}).get("import_s", 1e9) <= TARGET_S
    Path(ns.out).write_text(json.dumps(results, indent=2))
    print(f"written {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
