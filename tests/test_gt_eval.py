"""Ground truth end to end (CPU): the Blender-rendered tiny clip, the backend fitted to it with its true
cameras, and the evaluation's bounds, which a correct run meets and broken bundles miss.

The clip comes from ``scripts/make_gt_clip.py --preset tiny`` (64x64, 8 frames, 3 objects; about 10 s
of Cycles on two cores), the fit is ``--preset cpu-tiny --device cpu --cam_path <its npz> --holdout 4``.
Both run as subprocesses (Blender is reset by the generator; torch's threads stay out of this process).
The backend gets ``OMP_NUM_THREADS=1``: on a shared two-core machine two spinning torch threads made
the same fit more than ten times slower.

BOUNDS sit between what a correct cpu-tiny run scores (docs/results.md, "Ground truth") and what each
broken bundle scores: Gaussians shuffled between frames (renders unchanged, tracks destroyed), shifted
sideways (images and silhouettes wrong), moved with their cameras into another world (images unchanged,
everything 3D wrong), and pushed along the camera rays so the depth order flips (input views nearly
unchanged, depth order and novel views wrong).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backend.evaluate_gt import main as evaluate_gt_main
from backend.gt_eval import evaluate_gt, load_ground_truth
from backend.io.megasam import load_megasam
from conftest import ROOT

# name -> (what it reads from the metrics, "min" or "max", bound)
BOUNDS = {
    "held-out PSNR": (lambda m: m["frames"]["splits"]["holdout"]["psnr_masked"], "min", 11.0),
    "held-out IoU": (lambda m: np.mean(list(m["frames"]["splits"]["holdout"]["iou"].values())), "min", 0.55),
    "novel-view PSNR": (lambda m: m["novel_views"]["summary"]["psnr_masked"], "min", 7.5),
    "3D error, visible": (lambda m: m["tracks_3d"]["visible"]["relative_mean"], "max", 0.6),
    "3D error, occluded": (lambda m: m["tracks_3d"]["occluded"]["relative_mean"], "max", 0.8),
    "object centre": (lambda m: m["tracks_3d"]["object_centre_relative_mean"], "max", 1.2),
    "2D accuracy": (lambda m: m["tracks_2d"]["visible"]["delta_avg"], "min", 0.15),
    "depth order": (lambda m: m["depth_order"]["summary"]["accuracy"], "min", 0.75),
    "depth order coverage": (lambda m: m["depth_order"]["summary"]["coverage"], "min", 0.25),
    "true cameras": (lambda m: len(m["warnings"]), "max", 0),
}


def failures(m: dict) -> set[str]:
    """The bounds a result misses (an undefined value misses its bound)."""
    out = set()
    for name, (get, kind, bound) in BOUNDS.items():
        v = get(m)
        if v is None or not np.isfinite(v) or (v < bound if kind == "min" else v > bound):
            out.add(name)
    return out


def _run(args, env=None, timeout=600):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return p


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gt_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("gt") / "tiny"
    p = _run(["scripts/make_gt_clip.py", out, "--preset", "tiny", "--threads", "2"])
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fitted(gt_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    p = _run(["-m", "backend", "--data_dir", gt_clip / "JPEGImages", "--mask_dir", gt_clip / "Annotations",
              "--out_dir", out, "--save_name", "run", "--preset", "cpu-tiny", "--device", "cpu",
              "--cam_path", gt_clip / "MegaSAM_Outputs" / "ground_truth.npz", "--holdout", "4"],
             env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return out / "run"


@pytest.fixture(scope="module")
def correct(fitted, gt_clip, one_thread):
    return evaluate_gt(fitted, gt_clip).metrics


# --------------------------------------------------------------------------------------------------
# The clip


def test_clip_has_the_backend_layout_and_consistent_ground_truth(gt_clip):
    meta = json.loads((gt_clip / "ground_truth" / "scene.json").read_text())
    assert (meta["width"], meta["height"], meta["frames"]) == (64, 64, 8)
    kinds = [o["deformation"] for o in meta["objects"]]
    assert kinds == ["rigid", "armature", "shape keys"]
    assert len(meta["occlusion_frames"]) >= 2
    names = sorted(p.name for p in (gt_clip / "JPEGImages").iterdir())
    assert names == [f"{t:05d}.png" for t in range(8)]
    masks = np.stack([[cv2.imread(str(gt_clip / "Annotations" / f"{k:03d}" / n), cv2.IMREAD_GRAYSCALE) > 127
                       for n in names] for k in range(4)])  # (4, T, H, W), 000 first
    assert (masks.sum(0) == 1).all()  # background and objects partition every frame
    assert masks[1:].any(axis=(2, 3)).all()  # every object is visible in every frame
    assert cv2.imread(str(gt_clip / "InpaintedBackgrounds" / "00000.png")).shape == (64, 64, 3)

    cams = load_megasam(gt_clip / "MegaSAM_Outputs" / "ground_truth.npz", 8, 64, 64)  # the backend's reader
    gt = load_ground_truth(gt_clip)
    np.testing.assert_allclose(cams.K[0], gt.K, rtol=1e-6)
    assert not np.allclose(gt.c2w[0], gt.c2w[-1])  # the camera moves

    labels = np.argmax(masks, 0)  # (T, H, W): 0 background, k object k
    t_idx, m_idx = np.nonzero(gt.visible)
    u = np.floor(gt.uv[t_idx, m_idx, 0]).astype(int)
    v = np.floor(gt.uv[t_idx, m_idx, 1]).astype(int)
    own = labels[t_idx, v, u] == gt.object_index[m_idx] + 1
    assert own.mean() > 0.9  # visible points land on their own object's mask (edges may round away)
    # ...at the depth the map gives there (a pixel spans a range of depths on slanted surfaces)
    z = np.load(gt_clip / "ground_truth" / "tracks.npz")["depth"][t_idx, m_idx][own]
    rel = np.abs(cams.depths[t_idx, v, u][own] - z) / z
    assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.9
    hidden = gt.in_frame & ~gt.visible & (gt.occluder > 0) & (gt.occluder != gt.object_index[None] + 1)
    assert hidden.sum() > 20  # some points are hidden by another object, not only by their own back
    t_idx, m_idx = np.nonzero(hidden)
    u = np.floor(gt.uv[t_idx, m_idx, 0]).astype(int)
    v = np.floor(gt.uv[t_idx, m_idx, 1]).astype(int)
    assert np.mean(labels[t_idx, v, u] == gt.occluder[t_idx, m_idx]) > 0.8  # ...by the object seen there
    amodal = gt.amodal_depth > 0  # (T, K, H, W), sampled at pixel centres
    grown = np.stack([[cv2.dilate(a.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for a in at] for at in amodal])
    modal = masks[1:].transpose(1, 0, 2, 3)  # majority of 2x2 sub-pixel rays: may reach one pixel further
    assert np.mean(grown[modal]) > 0.99  # the visible part lies inside the whole silhouette
    assert (amodal.sum(1) >= 2).any()  # silhouettes overlap
    assert gt.novel_images.shape == (2, 8, 64, 64, 3)
    for k in range(3):
        assert (gt.novel_labels == k + 1).any()


def test_generator_is_deterministic_and_takes_its_parameters(tmp_path):
    args = ["--width", "48", "--height", "40", "--frames", "4", "--objects", "2", "--samples", "1", "--points", "40",
            "--novel_cameras", "1", "--novel_every", "2", "--mask_ss", "1", "--seed", "3", "--threads", "2"]
    for name in ("a", "b"):
        p = _run(["scripts/make_gt_clip.py", tmp_path / name, *args])
        assert p.returncode == 0, p.stderr[-3000:]
    a, b = load_ground_truth(tmp_path / "a"), load_ground_truth(tmp_path / "b")
    assert a.points.shape == (4, 40, 3) and a.amodal_depth.shape == (4, 2, 40, 48)
    assert a.novel_images.shape == (1, 2, 40, 48, 3) and a.novel_frames.tolist() == [0, 2]
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.visible, b.visible)
    for t in range(4):
        for k in ("000", "001", "002"):
            name = f"{t:05d}.png"
            assert (tmp_path / "a" / "Annotations" / k / name).read_bytes() == \
                (tmp_path / "b" / "Annotations" / k / name).read_bytes()
    p = _run(["scripts/make_gt_clip.py", tmp_path / "c", "--objects", "7"])
    assert p.returncode == 2 and "objects must be in 1..4" in p.stderr


# --------------------------------------------------------------------------------------------------
# The evaluation: a correct run passes, broken bundles fail


def test_correct_run_meets_the_bounds(correct):
    assert failures(correct) == set(), json.dumps({k: BOUNDS[k][0](correct) for k in BOUNDS}, default=float)
    assert correct["holdout_frames"] == [2, 6]
    assert correct["run"]["camera_source"] == "megasam"
    assert correct["camera_check"]["rotation_deg"] < 1e-3
    t3 = correct["tracks_3d"]
    assert t3["visible"]["count"] > 200 and t3["occluded_by_other"]["count"] > 20
    # occluded points are harder than visible ones
    assert t3["occluded"]["epe_mean"] > t3["visible"]["epe_mean"]


def _edit_frames(bundle: Path, fn) -> None:
    for p in sorted(bundle.glob("objects/*/frames.npz")):
        with np.load(p) as z:
            arrays = {k: z[k].copy() for k in z.files}
        fn(arrays)
        np.savez(p, **arrays)


def _shuffle(bundle: Path) -> None:
    rng = np.random.default_rng(0)

    def fn(a):
        for t in range(a["means"].shape[0]):
            perm = rng.permutation(a["means"].shape[1])
            for k in a:
                a[k][t] = a[k][t][perm]
    _edit_frames(bundle, fn)


def _shift(bundle: Path) -> None:
    def fn(a):
        a["means"] += np.array([0.3, 0.0, 0.0], np.float32)
    _edit_frames(bundle, fn)


def _quat_mul(q, r):
    w1, x1, y1, z1 = np.moveaxis(q, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(r, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def _other_world(bundle: Path) -> None:
    """Gaussians and cameras moved together by one rigid motion: the same images, another world."""
    a = np.radians(20)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    shift = np.array([1.0, 0.5, 0.0])
    qR = np.array([np.cos(a / 2), 0, 0, np.sin(a / 2)])

    def fn(arr):
        arr["means"] = (arr["means"] @ R.T + shift).astype(np.float32)
        arr["quats"] = _quat_mul(qR, arr["quats"]).astype(np.float32)
    _edit_frames(bundle, fn)
    with np.load(bundle / "camera.npz") as z:
        cam = {k: z[k].copy() for k in z.files}
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, shift
    cam["c2w"] = M @ cam["c2w"]
    np.savez(bundle / "camera.npz", **cam)


def _flip_depth(bundle: Path) -> None:
    """Each object slid along its cameras' rays (scaled about the camera centre) so that the nearest takes the
    farthest's distance and so on: the input views barely change, the depth order reverses."""
    with np.load(bundle / "camera.npz") as z:
        centres = z["c2w"][:, None, :3, 3]
    paths = sorted(bundle.glob("objects/*/frames.npz"))
    dist = []
    for p in paths:
        with np.load(p) as z:
            dist.append(float(np.median(np.linalg.norm(z["means"] - centres, axis=-1))))
    order = np.argsort(dist)
    for rank, k in enumerate(order):
        s = dist[order[len(order) - 1 - rank]] / dist[k]

        def fn(a, s=s):
            a["means"] = (centres + (a["means"] - centres) * s).astype(np.float32)
            a["log_scales"] = (a["log_scales"] + np.log(s)).astype(np.float32)
        with np.load(paths[k]) as z:
            arrays = {n: z[n].copy() for n in z.files}
        fn(arrays)
        np.savez(paths[k], **arrays)


@pytest.mark.parametrize("breakage, expected", [
    (_shuffle, {"3D error, visible", "2D accuracy"}),
    (_shift, {"held-out PSNR", "held-out IoU"}),
    (_other_world, {"true cameras", "3D error, visible", "object centre", "novel-view PSNR"}),
    (_flip_depth, {"depth order", "object centre", "novel-view PSNR"}),
])
def test_broken_bundles_miss_their_bounds(breakage, expected, fitted, gt_clip, tmp_path, one_thread):
    broken = tmp_path / "broken"
    shutil.copytree(fitted, broken)
    breakage(broken)
    missed = failures(evaluate_gt(broken, gt_clip).metrics)
    assert expected <= missed, f"{breakage.__name__} missed only {sorted(missed)}"


# --------------------------------------------------------------------------------------------------
# The command


def test_command_writes_json_report_and_pictures(fitted, gt_clip, tmp_path, capsys, one_thread):
    assert evaluate_gt_main(["--bundle", str(fitted), "--gt", str(gt_clip), "--out", str(tmp_path / "r")]) == 0
    head = json.loads(capsys.readouterr().out)
    assert set(head) >= {"frames", "novel_views", "tracks_3d", "tracks_2d_delta_avg", "depth_order"}
    m = json.loads((tmp_path / "r" / "gt_eval.json").read_text())
    assert m["holdout_frames"] == [2, 6] and len(m["tracks_3d"]["per_frame"]["visible"]) == 8
    report = (tmp_path / "r" / "report.md").read_text()
    for section in ("## Input frames", "## Novel views", "## 3D tracks", "## 2D tracks", "## Depth order"):
        assert section in report
    pictures = sorted(p.name for p in (tmp_path / "r" / "images").iterdir())
    assert {"errors_over_time.png", "tracks.png", "held_out_frame_2.png", "held_out_frame_6.png"} <= set(pictures)
    for name in pictures:
        assert f"images/{name}" in report
        assert cv2.imread(str(tmp_path / "r" / "images" / name)) is not None


def test_command_refuses_a_folder_without_ground_truth_and_another_clip(fitted, gt_clip, tmp_path, capsys):
    assert evaluate_gt_main(["--bundle", str(fitted), "--gt", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "scene.json: not found" in err and "make_gt_clip.py" in err
    other = tmp_path / "other"
    shutil.copytree(gt_clip, other)
    meta = json.loads((other / "ground_truth" / "scene.json").read_text())
    meta["objects"] = meta["objects"][:2]
    (other / "ground_truth" / "scene.json").write_text(json.dumps(meta))
    assert evaluate_gt_main(["--bundle", str(fitted), "--gt", str(other), "--out", str(tmp_path / "r")]) == 2
    assert "do not match the clip" in capsys.readouterr().err
