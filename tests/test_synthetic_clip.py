"""Tests of the built-in sample clip generator (scripts/make_synthetic_clip.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_synthetic_clip.py"

_spec = importlib.util.spec_from_file_location("make_synthetic_clip", SCRIPT)
msc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("make_synthetic_clip", msc)
_spec.loader.exec_module(msc)


def read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert m is not None, path
    return m


def read_rgb(path: Path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert im is not None, path
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def load_masks(out: Path, n_objects: int, frames: int) -> np.ndarray:
    """(n_objects + 1, frames, H, W) bool; index 0 is the background."""
    return np.stack([
        np.stack([read_mask(out / "Annotations" / f"{k:03d}" / f"{t:05d}.png") > 0 for t in range(frames)])
        for k in range(n_objects + 1)
    ])


@pytest.fixture(scope="module")
def default_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "sample"
    gt = msc.make_clip(out)
    return out, gt


# ---------------------------------------------------------------------------------------------- layout


def test_layout_and_names_exact(default_clip):
    out, gt = default_clip
    assert sorted(p.name for p in out.iterdir()) == ["Annotations", "JPEGImages", "ground_truth.json"]
    names = [f"{t:05d}.png" for t in range(16)]
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == names
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == ["000", "001", "002", "003"]
    for k in range(4):
        assert sorted(p.name for p in (out / "Annotations" / f"{k:03d}").iterdir()) == names
    on_disk = json.loads((out / "ground_truth.json").read_text())
    returned = {k: v for k, v in gt.items() if k != "paths"}
    assert returned == on_disk
    assert gt["paths"]["video"] is None
    assert gt["paths"]["frames"] == [str(out / "JPEGImages" / n) for n in names]
    assert gt["paths"]["masks"]["002"] == [str(out / "Annotations" / "002" / n) for n in names]
    assert Path(gt["paths"]["ground_truth"]) == out / "ground_truth.json"


def test_ground_truth_schema(default_clip):
    _, gt = default_clip
    assert (gt["width"], gt["height"], gt["frames"], gt["fps"]) == (96, 96, 16, 12)
    cam = gt["camera"]
    assert cam["convention"] == "opencv" and cam["fovy_deg"] == pytest.approx(49.1)
    K = np.array(cam["K"])
    f = 48.0 / math.tan(math.radians(49.1) / 2.0)
    np.testing.assert_allclose(K, [[f, 0, 48.0], [0, f, 48.0], [0, 0, 1]])
    assert [o["id"] for o in gt["objects"]] == ["001", "002", "003"]
    names = [o["name"] for o in gt["objects"]]
    assert len(set(names)) == 3
    colors = np.array([o["color"] for o in gt["objects"]])
    assert colors.shape == (3, 3) and colors.min() >= 0.0 and colors.max() <= 1.0
    # distinct, saturated colours
    assert (colors.max(axis=1) - colors.min(axis=1)).min() > 0.5
    assert min(np.abs(colors[i] - colors[j]).sum() for i in range(3) for j in range(i + 1, 3)) > 0.5
    for o in gt["objects"]:
        for key in ("depth", "radius_px", "occluded_fraction", "truncated_fraction", "area_px"):
            assert len(o[key]) == 16, key
        assert np.array(o["center_px"]).shape == (16, 2)
        assert np.array(o["position"]).shape == (16, 3)
        occ = np.array(o["occluded_fraction"])
        assert occ.min() >= 0.0 and occ.max() <= 1.0
        assert min(o["depth"]) > 0.0
    assert all(isinstance(t, int) and 0 <= t < 16 for t in gt["occlusion_frames"])


def test_ground_truth_is_geometrically_consistent(default_clip):
    _, gt = default_clip
    K = np.array(gt["camera"]["K"])
    for o in gt["objects"]:
        pos = np.array(o["position"])
        uv = (K @ pos.T).T
        np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], np.array(o["center_px"]), atol=1e-3)
        np.testing.assert_allclose(pos[:, 2], o["depth"], atol=1e-6)
        # apparent size = f * world radius / depth
        np.testing.assert_allclose(np.array(o["radius_px"]) * np.array(o["depth"]),
                                   K[1, 1] * o["world_radius"], rtol=1e-4)
    # the far background is behind every object
    assert max(max(o["depth"]) for o in gt["objects"]) < gt["camera"]["background_depth"]


# ---------------------------------------------------------------------------------------------- masks


def test_frames_and_masks_formats(default_clip):
    out, _ = default_clip
    for t in range(16):
        im = cv2.imread(str(out / "JPEGImages" / f"{t:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert im.shape == (96, 96, 3) and im.dtype == np.uint8
        for k in range(4):
            m = read_mask(out / "Annotations" / f"{k:03d}" / f"{t:05d}.png")
            assert m.shape == (96, 96) and m.dtype == np.uint8
            assert set(np.unique(m).tolist()) <= {0, 255}


def test_background_is_complement_and_object_masks_are_disjoint(default_clip):
    out, _ = default_clip
    masks = load_masks(out, 3, 16)
    objs = masks[1:]
    assert objs.sum(axis=0).max() <= 1, "modal object masks must not overlap"
    np.testing.assert_array_equal(masks[0], ~objs.any(axis=0))
    assert masks[0].any(axis=(1, 2)).all(), "some background must stay visible in every frame"


@pytest.mark.parametrize("objects,seed", [(3, 0), (1, 4), (2, 1), (4, 2), (5, 3)])
def test_every_object_visible_in_frame0_and_never_vanishes(tmp_path, objects, seed):
    gt = msc.make_clip(tmp_path / "c", objects=objects, seed=seed)
    masks = load_masks(tmp_path / "c", objects, 16)
    areas = masks[1:].sum(axis=(2, 3))  # (objects, frames)
    assert (areas[:, 0] > 20).all(), areas[:, 0]
    assert (areas > 0).all()
    for o in gt["objects"]:
        c = np.array(o["center_px"])
        assert (c[:, 0] > 0).all() and (c[:, 0] < 96).all() and (c[:, 1] > 0).all() and (c[:, 1] < 96).all()
        assert max(o["truncated_fraction"]) <= 0.25


def test_mask_area_and_centroid_match_ground_truth(default_clip):
    out, gt = default_clip
    masks = load_masks(out, 3, 16)
    checked = 0
    for k, o in enumerate(gt["objects"], start=1):
        for t in range(16):
            area = masks[k, t].sum()
            expected = o["area_px"][t] * (1.0 - o["occluded_fraction"][t] - o["truncated_fraction"][t])
            perimeter = 2.0 * math.pi * o["radius_px"][t]
            assert abs(area - expected) <= 0.25 * perimeter + 2, (k, t, area, expected)
            if o["occluded_fraction"][t] == 0.0 and o["truncated_fraction"][t] == 0.0:
                ys, xs = np.nonzero(masks[k, t])
                centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centres at +0.5
                np.testing.assert_allclose(centroid, o["center_px"][t], atol=0.35)
                checked += 1
    assert checked >= 5
    disc = gt["objects"][0]
    assert disc["shape"] == "striped disc"
    np.testing.assert_allclose(disc["area_px"], math.pi * (0.97 * np.array(disc["radius_px"])) ** 2, rtol=0.03)


# ---------------------------------------------------------------------------------------------- occlusion


def test_occlusion_really_happens(default_clip):
    out, gt = default_clip
    masks = load_masks(out, 3, 16)
    assert len(gt["occlusion_frames"]) >= 2
    best = None
    for k, o in enumerate(gt["objects"], start=1):
        occ = np.array(o["occluded_fraction"])
        frames = np.nonzero(occ >= 0.2)[0]
        if len(frames) >= 2 and (best is None or occ.max() > best[1].max()):
            best = (k, occ, frames)
    assert best is not None, "no object is >= 20% occluded for >= 2 frames"
    k, occ, frames = best
    o = gt["objects"][k - 1]
    assert set(frames.tolist()) <= set(gt["occlusion_frames"])
    area = masks[k].sum(axis=(1, 2)).astype(float)
    full = np.array(o["area_px"]) * (1.0 - np.array(o["truncated_fraction"]))
    ratio = area / full  # visible share of the in-frame (amodal) area, measured on the masks
    clear = np.nonzero(occ == 0.0)[0]
    assert len(clear) >= 1
    assert ratio[clear].min() > 0.9
    for t in frames:
        assert ratio[t] < 0.85, (t, ratio[t])
        assert ratio[t] == pytest.approx(1.0 - occ[t] / (1.0 - o["truncated_fraction"][t]), abs=0.1)
    assert ratio[frames].min() < ratio[clear].min() - 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_painters_order_nearer_object_wins(tmp_path, seed):
    """Pixels well inside the disc (object 001) show either the disc or an object nearer than it."""
    gt = msc.make_clip(tmp_path / "c", seed=seed)
    masks = load_masks(tmp_path / "c", 3, 16)
    disc = gt["objects"][0]
    assert disc["shape"] == "striped disc"
    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    hidden_total = 0
    for t in range(16):
        (u, v), r = disc["center_px"][t], disc["radius_px"][t]
        core = (xx - u) ** 2 + (yy - v) ** 2 <= (0.97 * r - 1.0) ** 2
        z = disc["depth"][t]
        nearer = np.zeros((96, 96), bool)
        farther = np.zeros((96, 96), bool)
        for k, o in enumerate(gt["objects"][1:], start=2):
            (nearer if o["depth"][t] < z else farther)[...] |= masks[k, t]
        assert not (core & farther).any(), t
        assert not (core & masks[0, t]).any(), t
        assert (core <= (masks[1, t] | nearer)).all(), t
        hidden_total += int((core & nearer).sum())
    if max(disc["occluded_fraction"]) >= 0.2:
        assert hidden_total > 50


# ---------------------------------------------------------------------------------------------- size


def test_apparent_size_follows_depth(tmp_path):
    gt = msc.make_clip(tmp_path / "c", objects=1, frames=16, seed=5)
    masks = load_masks(tmp_path / "c", 1, 16)
    o = gt["objects"][0]
    depth = np.array(o["depth"])
    assert depth.max() / depth.min() > 1.1, "the object must move in depth"
    inside = np.array(o["truncated_fraction"]) == 0.0
    assert inside.sum() >= 8
    area = masks[1].sum(axis=(1, 2)).astype(float)
    # area ~ 1 / z^2, so sqrt(area) * z is constant
    k = np.sqrt(area[inside]) * depth[inside]
    assert k.std() / k.mean() < 0.02
    # and sizes really change: nearest frame clearly larger than farthest
    near, far = np.argmin(np.where(inside, depth, np.inf)), np.argmax(np.where(inside, depth, -np.inf))
    assert area[near] / area[far] == pytest.approx((depth[far] / depth[near]) ** 2, rel=0.05)
    assert area[near] > 1.15 * area[far]


# ---------------------------------------------------------------------------------------------- determinism


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_determinism(tmp_path):
    a = msc.make_clip(tmp_path / "a", seed=7)
    b = msc.make_clip(tmp_path / "b", seed=7)
    c = msc.make_clip(tmp_path / "c", seed=8)
    ta, tb, tc = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b"), _tree_bytes(tmp_path / "c")
    assert ta == tb
    assert {k: v for k, v in a.items() if k != "paths"} == {k: v for k, v in b.items() if k != "paths"}
    assert ta.keys() == tc.keys()
    differing = [n for n in ta if n.startswith("JPEGImages") and ta[n] != tc[n]]
    assert len(differing) == 16
    assert a["objects"][0]["center_px"] != c["objects"][0]["center_px"]


def test_rerun_into_same_folder_replaces_old_clip(tmp_path):
    out = tmp_path / "c"
    msc.make_clip(out, frames=12, objects=4, video=True)
    msc.make_clip(out, frames=6, objects=2)
    assert sorted(p.name for p in out.iterdir()) == ["Annotations", "JPEGImages", "ground_truth.json"]
    assert len(list((out / "JPEGImages").iterdir())) == 6
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == ["000", "001", "002"]
    assert all(len(list(d.iterdir())) == 6 for d in (out / "Annotations").iterdir())


# ---------------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("width,height,frames,objects", [
    (64, 48, 8, 1), (48, 64, 10, 2), (128, 96, 12, 4), (80, 80, 6, 5), (32, 32, 4, 3),
])
def test_parameters_are_honoured(tmp_path, width, height, frames, objects):
    out = tmp_path / "c"
    gt = msc.make_clip(out, width=width, height=height, frames=frames, objects=objects, seed=1)
    assert (gt["width"], gt["height"], gt["frames"]) == (width, height, frames)
    assert len(gt["objects"]) == objects
    assert len(list((out / "JPEGImages").iterdir())) == frames
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == [f"{k:03d}" for k in range(objects + 1)]
    im = read_rgb(out / "JPEGImages" / f"{frames - 1:05d}.png")
    assert im.shape == (height, width, 3)
    masks = load_masks(out, objects, frames)
    assert masks.shape == (objects + 1, frames, height, width)
    assert masks[1:, 0].any(axis=(1, 2)).all()
    K = np.array(gt["camera"]["K"])
    assert K[0, 2] == width / 2 and K[1, 2] == height / 2
    assert K[1, 1] == pytest.approx((height / 2) / math.tan(math.radians(49.1) / 2))
    for o in gt["objects"]:
        assert len(o["depth"]) == frames
    if objects >= 2 and frames >= 8:
        assert len(gt["occlusion_frames"]) >= 2
    if objects == 1:
        assert gt["occlusion_frames"] == []


@pytest.mark.parametrize("kwargs", [
    {"objects": 0}, {"objects": 6}, {"width": 16}, {"height": 8}, {"frames": 0}, {"seed": -1},
])
def test_invalid_parameters_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        msc.make_clip(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_frames_are_textured_and_antialiased(default_clip):
    out, gt = default_clip
    im = read_rgb(out / "JPEGImages" / "00000.png").astype(float)
    masks = load_masks(out, 3, 1)[:, 0]
    bg = im[masks[0]]
    assert bg.std(axis=0).min() > 2.0, "background must not be flat"
    for k in range(1, 4):
        pix = im[masks[k]]
        # the object's colour dominates its pixels and it carries visible texture
        expected = np.array(gt["objects"][k - 1]["color"])
        assert np.argmax(pix.mean(axis=0)) == np.argmax(expected)
        assert pix.std(axis=0).max() > 15.0
    # 4x supersampling leaves intermediate values on object boundaries
    edge = cv2.dilate(masks[1].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    edge &= ~cv2.erode(masks[1].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert len(np.unique(im[edge].reshape(-1, 3), axis=0)) > 10


# ---------------------------------------------------------------------------------------------- video + CLI


def test_video_is_readable_with_right_frame_count(tmp_path):
    out = tmp_path / "v"
    gt = msc.make_clip(out, frames=10, video=True)
    video = out / "clip.mp4"
    assert gt["paths"]["video"] == str(video) and video.is_file()
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0, abs=0.01)
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(decoded) == 10
    assert decoded[0].shape == (96, 96, 3)
    for t in (0, 9):
        png = read_rgb(out / "JPEGImages" / f"{t:05d}.png").astype(float)
        assert np.abs(decoded[t].astype(float) - png).mean() < 12.0


def test_cli_runs_and_help(tmp_path):
    py = sys.executable
    res = subprocess.run([py, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for flag in ("OUT_DIR", "--width", "--height", "--frames", "--objects", "--seed", "--video"):
        assert flag in res.stdout
    out = tmp_path / "cli"
    res = subprocess.run([py, str(SCRIPT), str(out), "--width", "64", "--height", "48", "--frames", "6",
                          "--objects", "2", "--seed", "3", "--video"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    gt = json.loads((out / "ground_truth.json").read_text())
    assert (gt["width"], gt["height"], gt["frames"], len(gt["objects"])) == (64, 48, 6, 2)
    assert (out / "clip.mp4").is_file()
    assert len(list((out / "JPEGImages").iterdir())) == 6
    # the CLI and the function produce the same clip
    msc.make_clip(tmp_path / "fn", width=64, height=48, frames=6, objects=2, seed=3)
    assert (out / "JPEGImages" / "00003.png").read_bytes() == (tmp_path / "fn" / "JPEGImages" / "00003.png").read_bytes()
    bad = subprocess.run([py, str(SCRIPT), str(tmp_path / "bad"), "--objects", "6"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "objects" in bad.stderr
