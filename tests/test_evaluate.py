"""Evaluation of a bundle against its clip (backend/evaluate.py): frame splits, scores, refusals.

The clip is rendered from the bundle itself, so the bundle is a perfect reconstruction of it; noise
added to some frames of a copy of that clip must lower their scores and only theirs.
"""

import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch

from backend.errors import InputError
from backend.evaluate import bundle_cameras, evaluate_bundle, frame_batches, main
from backend.model.scene import render_scene
from bundle_factory import make_bundle
from genmojo_blender.core.bundle import open_bundle

T = 6
HOLDOUT = [2, 5]


def write_clip(bundle_dir, out, noisy_frames=(), seed=0):
    """Frames and masks rendered from the bundle (render over black, masks where visibility > 0.5)."""
    b = open_bundle(bundle_dir)
    c = b.manifest.clip
    baked = [b.load_frames(o) for o in b.manifest.objects]
    cams = bundle_cameras(b, c.width, c.height)
    rng = np.random.default_rng(seed)
    for t in range(c.frame_count):
        idx = torch.tensor([t])
        with torch.no_grad():
            r = render_scene(frame_batches(baked, t, torch.device("cpu")), cams.viewmats(idx), cams.K[idx],
                             c.width, c.height, torch.zeros(1, 3), near=cams.near, far=cams.far)
        img = r.image[0].clamp(0, 1).numpy()
        if t in noisy_frames:
            img = np.clip(img + rng.normal(scale=0.15, size=img.shape), 0, 1)
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "JPEGImages" / f"{t:05d}.png"),
                    cv2.cvtColor(np.round(img * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        for k, o in enumerate(b.manifest.objects):
            d = out / "Annotations" / o.id
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{t:05d}.png"), ((r.instance[0, ..., k] > 0.5).numpy() * 255).astype(np.uint8))
    return out


def set_holdout(bundle_dir, frames):
    p = bundle_dir / "manifest.json"
    m = json.loads(p.read_text())
    m["run"]["holdout_frames"] = frames
    p.write_text(json.dumps(m, indent=2))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    plain = make_bundle(root / "bundles", save_name="plain", frames=T, objects=2, gaussians=80, preview=False)
    held = root / "bundles" / "held"
    shutil.copytree(plain, held)
    set_holdout(held, HOLDOUT)
    clip = write_clip(plain, root / "clip")
    noisy = write_clip(plain, root / "noisy", noisy_frames=HOLDOUT)
    return {"plain": plain, "held": held, "clip": clip, "noisy": noisy}


def run(bundle, clip, **kw):
    return evaluate_bundle(bundle, clip / "JPEGImages", clip / "Annotations", **kw)


def test_perfect_render_scores_perfectly(setup):
    res = run(setup["plain"], setup["clip"])
    assert res["frames"] == list(range(T)) and res["holdout_frames"] == [] and res["size"] == [64, 48]
    assert list(res["splits"]) == ["all"]
    s = res["splits"]["all"]
    assert s["frames"] == list(range(T)) and s["count"] == T
    assert s["psnr_masked"] > 40 and s["ssim_masked"] > 0.97, s
    assert all(v == 1.0 for v in s["iou"].values()), s
    assert all(v == 1.0 for v in s["area_ratio"].values()), s
    assert res["summary"] == s
    assert [r["frame"] for r in res["per_frame"]] == list(range(T))
    assert not any(r["holdout"] for r in res["per_frame"])
    assert all(v == 0.0 for v in s["spill"].values()) and all(v == 0.0 for v in s["missed"].values()), s
    assert all(v > 40 for v in s["psnr_object"].values()) and s["psnr_interior"] > 40 and s["psnr_edge"] > 40, s
    assert set(res["per_frame"][0]) == {"frame", "holdout", "psnr_masked", "ssim_masked", "iou", "area_ratio",
                                        "spill", "missed", "psnr_object", "psnr_interior", "psnr_edge", "jitter_px"}


def _remask(clip, out, change):
    """A copy of ``clip`` whose masks are ``change``d (the frames stay)."""
    shutil.copytree(clip, out)
    for f in (out / "Annotations").rglob("*.png"):
        m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127
        cv2.imwrite(str(f), change(m).astype(np.uint8) * 255)
    return out


def test_spill_and_misses_tell_a_too_large_silhouette_from_a_misplaced_one(setup, tmp_path):
    """Against eroded masks the (perfect) render only spills; against shifted masks it spills and misses."""
    eroded = _remask(setup["clip"], tmp_path / "eroded",
                     lambda m: cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))
    shifted = _remask(setup["clip"], tmp_path / "shifted", lambda m: np.roll(m, 3, axis=1))
    too_large = run(setup["plain"], eroded)["summary"]
    misplaced = run(setup["plain"], shifted)["summary"]
    for oid in ("001", "002"):
        assert too_large["spill"][oid] > 0.2 and too_large["missed"][oid] == 0.0, too_large
        assert misplaced["spill"][oid] > 0.1 and misplaced["missed"][oid] > 0.1, misplaced
        assert too_large["area_ratio"][oid] == pytest.approx(1 - too_large["missed"][oid] + too_large["spill"][oid])


def _renoise(clip, out, where):
    """A copy of ``clip`` with noise added to each frame where ``where(masks of that frame)`` is true."""
    shutil.copytree(clip, out)
    rng = np.random.default_rng(0)
    ids = sorted(d.name for d in (out / "Annotations").iterdir())
    for f in sorted((out / "JPEGImages").glob("*.png")):
        masks = [cv2.imread(str(out / "Annotations" / i / f.name), cv2.IMREAD_GRAYSCALE) > 127 for i in ids]
        img = cv2.imread(str(f)).astype(np.float64)
        noise = rng.normal(scale=40.0, size=img.shape) * where(masks)[..., None]
        cv2.imwrite(str(f), np.clip(img + noise, 0, 255).astype(np.uint8))
    return out


def test_the_psnr_diagnostics_point_at_the_object_and_the_band_with_the_error(setup, tmp_path):
    def band(masks):
        union = np.any(masks, 0)
        return union & ~cv2.erode(union.astype(np.uint8), np.ones((5, 5), np.uint8),
                                  borderType=cv2.BORDER_REPLICATE).astype(bool)

    edge = run(setup["plain"], _renoise(setup["clip"], tmp_path / "edge", band))["summary"]
    assert edge["psnr_edge"] < 25 < 40 < edge["psnr_interior"], edge
    second = run(setup["plain"], _renoise(setup["clip"], tmp_path / "second", lambda m: m[1] & ~m[0]))["summary"]
    assert second["psnr_object"]["002"] < 25 and second["psnr_object"]["001"] > 35, second


def test_withheld_frames_are_reported_apart(setup):
    res = run(setup["held"], setup["noisy"])
    assert res["holdout_frames"] == HOLDOUT
    assert list(res["splits"]) == ["holdout", "train"]
    hold, train = res["splits"]["holdout"], res["splits"]["train"]
    assert hold["frames"] == HOLDOUT and hold["count"] == 2
    assert train["frames"] == [0, 1, 3, 4] and train["count"] == 4
    assert [r["frame"] for r in res["per_frame"] if r["holdout"]] == HOLDOUT
    # Only the withheld frames were perturbed, so only their scores drop.
    assert train["psnr_masked"] > 40 and hold["psnr_masked"] < 25, (hold, train)
    assert train["ssim_masked"] > 0.99 and hold["ssim_masked"] < 0.95, (hold, train)
    assert train["iou"] == {"001": 1.0, "002": 1.0}  # masks are unchanged by the noise
    perfect = {r["frame"]: r for r in run(setup["held"], setup["clip"])["per_frame"]}
    for r in res["per_frame"]:
        if r["holdout"]:
            p = perfect[r["frame"]]
            assert p["psnr_masked"] > r["psnr_masked"] and p["ssim_masked"] > r["ssim_masked"]


def test_frame_selection(setup):
    hold = run(setup["held"], setup["noisy"], frames="holdout")
    assert hold["frames"] == HOLDOUT and list(hold["splits"]) == ["holdout"]
    train = run(setup["held"], setup["noisy"], frames="train")
    assert train["frames"] == [0, 1, 3, 4] and list(train["splits"]) == ["train"]
    some = run(setup["held"], setup["noisy"], frames=[0, 2])
    assert some["splits"]["holdout"]["frames"] == [2] and some["splits"]["train"]["frames"] == [0]
    assert run(setup["plain"], setup["clip"], frames="train")["frames"] == list(range(T))
    with pytest.raises(InputError, match="outside"):
        run(setup["plain"], setup["clip"], frames=[T])


def test_holdout_without_withheld_frames_is_refused(setup, capsys):
    with pytest.raises(InputError, match="no --holdout"):
        run(setup["plain"], setup["clip"], frames="holdout")
    code = main(["--bundle", str(setup["plain"]), "--data_dir", str(setup["clip"] / "JPEGImages"),
                 "--mask_dir", str(setup["clip"] / "Annotations"), "--frames", "holdout"])
    assert code == 2
    err = capsys.readouterr().err
    assert "had no --holdout" in err and "hint:" in err


def test_cli_writes_strict_json(setup, tmp_path, capsys):
    out = tmp_path / "eval.json"
    clip = setup["noisy"]
    code = main(["--bundle", str(setup["held"]), "--data_dir", str(clip / "JPEGImages"),
                 "--mask_dir", str(clip / "Annotations"), "--frames", "train", "--out", str(out)])
    assert code == 0
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(res) == {"bundle", "size", "frames", "holdout_frames", "summary", "splits", "per_frame"}
    assert res["frames"] == [0, 1, 3, 4] and list(res["splits"]) == ["train"]
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"summary": res["summary"], "splits": res["splits"]}
    assert not any(isinstance(v, float) and math.isnan(v) for v in res["summary"]["iou"].values())


def test_jitter_is_zero_for_uniform_motion_and_measures_a_wobble_in_pixels():
    """``jitter_px``: Gaussians moving at constant velocity under a static camera score 0; one frame shifted
    sideways by d scene units at depth z scores f·d/z px there and half that at its two neighbours; the first and
    last frames have no neighbours on both sides (NaN)."""
    from backend.evaluate import jitter_px
    from backend.model.camera import Cameras

    T, N, f, z = 7, 5, 120.0, 4.0
    K = torch.tensor([[f, 0, 32.0], [0, f, 24.0], [0, 0, 1]]).expand(T, 3, 3).clone()
    cams = Cameras(K=K, c2w=torch.eye(4).expand(T, 4, 4).clone(), width=64, height=48, near=0.01, far=100.0)
    rng = np.random.default_rng(0)
    start = np.concatenate([rng.normal(scale=0.3, size=(N, 2)), np.zeros((N, 1))], 1) + [0, 0, z]
    means = start[None] + np.arange(T)[:, None, None] * np.array([0.05, -0.02, 0.0])
    j = jitter_px(means, cams)
    assert math.isnan(j[0]) and math.isnan(j[-1])
    assert np.allclose(j[1:-1], 0, atol=1e-9)
    means[3, :, 0] += 0.01
    j = jitter_px(means, cams)
    assert j[3] == pytest.approx(f * 0.01 / z, rel=1e-9)
    assert j[2] == pytest.approx(f * 0.01 / z / 2, rel=1e-9) and j[4] == pytest.approx(j[2], rel=1e-9)
    assert j[1] == pytest.approx(0, abs=1e-9) and j[5] == pytest.approx(0, abs=1e-9)
