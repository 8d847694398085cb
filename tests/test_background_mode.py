"""Real cameras and background mode, piece by piece (CPU, no full run): the moving-camera sample
clip, the background's lift and fit, the bundle's background entry, the alignment maths, the
user focal length and the refusals before any heavy work."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from backend.config import get_preset, with_overrides
from backend.errors import InputError
from backend.io.background import load_background_image
from backend.io.megasam import load_megasam
from backend.model.background import BackgroundGaussians, fill_depth, lift_background, sampling_stride
from backend.model.camera import Cameras
from backend.model.gaussians import GaussianBatch
from backend.model.scene import render_scene
from backend.optim.background import (BackgroundTargets, background_masks, fit_background, render_background,
                                      score_background)
from backend.pipeline import RunRequest, cameras_and_depths, prepare
from conftest import load_script
from genmojo_blender.core import alignment as al
from genmojo_blender.core import bundle as fmt
from genmojo_blender.core.import_plan import plan_import
from test_pipeline import backend, clip_args

msc = load_script("make_synthetic_clip")


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("pan") / "clip"
    gt = msc.make_clip(out, width=64, height=48, frames=6, objects=2, seed=0, camera_motion="pan", camera_pan=0.2)
    return out, gt


def _rot(axis: int, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    R = np.eye(3)
    R[i, i] = R[j, j] = c
    R[i, j], R[j, i] = -s, s
    return R


# ------------------------------------------------------------------------------ moving-camera clip


def test_pan_clip_is_consistent_with_its_cameras(pan_clip):
    out, gt = pan_clip
    cams = load_megasam(out / "megasam.npz", 6, 64, 48)
    c2w = np.array(gt["camera"]["c2w_per_frame"])
    np.testing.assert_allclose(cams.c2w, c2w, atol=1e-6)
    assert not np.allclose(c2w[0], np.eye(4))  # the world is not the first camera
    assert np.abs(c2w[-1, :3, 3] - c2w[0, :3, 3]).max() > 0.1  # and the camera moves
    np.testing.assert_allclose(cams.K[0], np.array(gt["camera"]["K"]), rtol=1e-6)
    for o in gt["objects"]:  # each object's world centre projects onto its image centre in every frame
        for t in range(6):
            uv, z = al.project(cams.K[t], c2w[t], np.array(o["world_position"][t]))
            np.testing.assert_allclose(uv, o["center_px"][t], atol=1e-3)
            assert z == pytest.approx(o["depth"][t], abs=1e-4)
            mask = cv2.imread(str(out / "Annotations" / o["id"] / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
            assert np.allclose(cams.depths[t][mask], o["depth"][t], rtol=2e-3)  # float16 depth
    bg_mask = cv2.imread(str(out / "Annotations" / "000" / "00000.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert np.allclose(cams.depths[0][bg_mask], 20.0)
    # the clean background equals frame 0 wherever frame 0 shows only background
    clean = cv2.imread(str(out / "background.png"))
    frame0 = cv2.imread(str(out / "JPEGImages" / "00000.png"))
    inner = cv2.erode(bg_mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.array_equal(clean[inner], frame0[inner])
    assert not np.array_equal(clean[~bg_mask], frame0[~bg_mask])  # and shows no object


def test_pan_clip_background_moves_with_the_camera(pan_clip):
    """A background texel seen in frame 0 appears where the camera motion puts it in the last frame."""
    out, gt = pan_clip
    K = np.array(gt["camera"]["K"])
    shift = np.array(gt["camera"]["translation"][-1][:2]) * K[0, 0] / gt["camera"]["background_depth"]
    assert np.abs(shift).max() > 0.2  # a visible pan (in pixels)
    last = cv2.imread(str(out / "JPEGImages" / "00005.png")).astype(float)
    clean = cv2.imread(str(out / "background.png")).astype(float)
    mask = cv2.imread(str(out / "Annotations" / "000" / "00005.png"), cv2.IMREAD_GRAYSCALE) > 0
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    mask[:3], mask[-3:], mask[:, :3], mask[:, -3:] = False, False, False, False
    ys, xs = np.nonzero(mask)
    # frame t's pixel (x, y) shows frame 0's (x + shift_x, y + shift_y)
    M = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    moved = cv2.warpAffine(clean, M, (64, 48), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    wrong = cv2.warpAffine(clean, np.float32([[1, 0, -shift[0]], [0, 1, -shift[1]]]), (64, 48),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    err = np.abs(moved[ys, xs] - last[ys, xs]).mean()
    assert err < 1.5 < np.abs(wrong[ys, xs] - last[ys, xs]).mean()


def test_static_clip_writes_no_camera_files(tmp_path):
    gt = msc.make_clip(tmp_path / "c", width=48, height=48, frames=3, objects=1)
    assert "megasam" not in gt["paths"] and not (tmp_path / "c" / "megasam.npz").exists()
    assert "c2w_per_frame" not in gt["camera"]
    with pytest.raises(ValueError, match="camera_motion"):
        msc.make_clip(tmp_path / "d", camera_motion="orbit")


# ------------------------------------------------------------------------------ lift and fit


def test_fill_depth_fills_holes_from_the_surroundings():
    d = np.full((20, 30), 10.0, np.float32)
    known = np.ones((20, 30), bool)
    known[5:15, 10:20] = False
    d[~known] = 1.0  # the object in front: must not survive
    out = fill_depth(d, known, 3)
    assert np.allclose(out[known], 10.0) and np.allclose(out[~known], 10.0, rtol=0.05)
    assert np.array_equal(fill_depth(d, np.ones_like(known), 3), d)
    with pytest.raises(ValueError):
        fill_depth(d, np.zeros_like(known), 3)


@pytest.mark.parametrize("w,h,budget", [(64, 48, 10_000), (64, 48, 700), (1920, 1080, 200_000), (33, 17, 1)])
def test_sampling_stride_respects_the_budget(w, h, budget):
    s = sampling_stride(w, h, budget)
    assert math.ceil(w / s) * math.ceil(h / s) <= budget
    assert s == 1 or math.ceil(w / (s - 1)) * math.ceil(h / (s - 1)) > budget


@pytest.mark.parametrize("budget", [10_000, 300])
def test_lifted_background_projects_back_onto_its_pixels(budget):
    """Every lifted Gaussian sits on the ray of its pixel (block) centre at that pixel's depth."""
    rng = np.random.default_rng(0)
    H, W = 24, 32
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(4, 9, (H, W)).astype(np.float32)
    K = np.array([[40.0, 0, 15.0], [0, 41.0, 13.0], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, :3] = _rot(1, 25) @ _rot(0, -10)
    c2w[:3, 3] = [0.3, -1.0, 2.0]
    lifted = lift_background(image, depth, K, c2w, max_gaussians=budget, scale_factor=0.7)
    s = lifted.stride
    assert lifted.num_gaussians <= budget and (s == 1) == (budget >= H * W)
    uv, z = al.project(K, c2w, lifted.means.astype(np.float64))
    cx = np.minimum(np.arange(0, W, s) + s / 2, (np.arange(0, W, s) + np.minimum(np.arange(0, W, s) + s, W)) / 2)
    cy = np.minimum(np.arange(0, H, s) + s / 2, (np.arange(0, H, s) + np.minimum(np.arange(0, H, s) + s, H)) / 2)
    gx, gy = np.meshgrid(cx, cy)
    np.testing.assert_allclose(uv, np.stack([gx.ravel(), gy.ravel()], 1), atol=1e-3)
    ix, iy = np.floor(gx.ravel()).astype(int), np.floor(gy.ravel()).astype(int)
    np.testing.assert_allclose(z, depth[iy, ix], rtol=1e-5)
    if s == 1:
        np.testing.assert_allclose(lifted.colors, image.reshape(-1, 3) / 255.0, atol=1e-6)
    np.testing.assert_allclose(np.exp(lifted.log_scales[:, 0]), 0.7 * s * z / 40.0, rtol=1e-5)


def _two_cameras(W, H):
    K = torch.tensor([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    c2w = torch.eye(4)[None].repeat(2, 1, 1)
    c2w[1, 0, 3] = 0.3  # the second camera 0.3 to the right
    return Cameras(K=K[None].repeat(2, 1, 1), c2w=c2w, width=W, height=H, near=0.01, far=100.0)


def test_fit_recovers_a_flat_background_through_moving_cameras():
    """A textured plane seen by two cameras: lifted from a blurred, darkened image of frame 0, the fit
    reproduces both frames (it learns from the real cameras, not from frame 0 alone)."""
    W, H = 32, 24
    cams = _two_cameras(W, H)
    yy, xx = np.mgrid[0:H, 0:W]
    truth_img = np.stack([(xx * 8) % 255, (yy * 10) % 255, ((xx + yy) * 5) % 255], -1).astype(np.uint8)
    depth = np.full((H, W), 6.0, np.float32)
    truth = BackgroundGaussians(lift_background(truth_img, depth, cams.K[0].numpy(), cams.c2w[0].numpy(),
                                                max_gaussians=10_000, scale_factor=0.7), 0.99)
    with torch.no_grad():
        frames = render_background(truth.batch(2), cams, torch.arange(2), torch.zeros(2, 3)).image.clamp(0, 1)
    masks = torch.ones(2, H, W, dtype=torch.bool)
    masks[:, :, -4:] = False  # the second frame sees beyond frame 0's right edge there
    start = (cv2.GaussianBlur(truth_img, (5, 5), 2) * 0.6).astype(np.uint8)
    model = BackgroundGaussians(lift_background(start, depth, cams.K[0].numpy(), cams.c2w[0].numpy(),
                                                max_gaussians=10_000, scale_factor=0.7), 0.9)
    cfg = with_overrides(get_preset("cpu-tiny"), background={"iterations": 60, "frames_per_step": 2}).background
    targets = BackgroundTargets(frames=frames, masks=masks, depth=torch.full((2, H, W), 6.0), train=torch.arange(2))

    def score():
        return score_background(model.batch(1), cams, frames, masks, [0, 1])

    before = score()
    losses = fit_background(model, targets, cams, cfg, torch.Generator().manual_seed(0), scene_depth=6.0)
    after = score()
    assert set(losses) == {"rgb", "alpha", "depth", "total"}
    assert after.psnr > before.psnr + 6 and after.psnr > 25, (before, after)
    assert after.coverage > 0.95


def test_background_masks_prefer_folder_000_and_erode():
    objects = np.zeros((1, 2, 10, 10), bool)
    objects[0, :, 3:6, 3:6] = True
    derived = background_masks(None, objects, 0)
    assert np.array_equal(derived, ~objects[0])
    eroded = background_masks(None, objects, 1)
    assert not eroded[0, 2:7, 2:7].any() and eroded[0, 0].all()  # the image border is not eaten
    given = np.zeros((2, 10, 10), bool)
    given[:, :2] = True
    assert np.array_equal(background_masks(given, objects, 0), given)


def test_joint_render_composites_background_behind_objects():
    W, H = 16, 12
    cams = _two_cameras(W, H)
    def card(z, color, n=1):
        return GaussianBatch(means=torch.tensor([[[0.0, 0.0, z]]]).repeat(1, n, 1),
                             quats=torch.tensor([[[1.0, 0, 0, 0]]]), log_scales=torch.full((1, n, 3), math.log(0.5)),
                             colors=torch.tensor([[color]]), opacities=torch.tensor([[0.99]]))
    obj, bg = card(3.0, [1.0, 0, 0]), card(8.0, [0, 0, 1.0])
    vm, K = cams.viewmats(torch.tensor([0])), cams.K[:1]
    r = render_scene([obj], vm, K, W, H, torch.zeros(1, 3), near=0.01, far=100, static=bg)
    centre = r.image[0, H // 2, W // 2]
    assert centre[0] > 0.9 and centre[2] < 0.1  # the nearer object wins
    assert r.instance.shape[-1] == 1 and r.instance[0, H // 2, W // 2, 0] > 0.9
    alone = render_scene([], vm, K, W, H, torch.zeros(1, 3), near=0.01, far=100, static=bg)
    assert alone.instance.shape[-1] == 0 and alone.image[0, H // 2, W // 2, 2] > 0.9
    assert alone.depth[0, H // 2, W // 2] == pytest.approx(8.0, rel=1e-3)


# ------------------------------------------------------------------------------ bundle


def _static(n, seed=0):
    rng = np.random.default_rng(seed)
    return fmt.StaticGaussians(means=(rng.normal(size=(n, 3)) + [0, 0, 10]).astype(np.float32),
                               quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
                               log_scales=np.full((n, 3), -2.0, np.float32),
                               colors=rng.uniform(size=(n, 3)).astype(np.float32),
                               opacities=rng.uniform(0.5, 1, size=n).astype(np.float32))


def _bundle_with_background(tmp_path, n=40):
    from backend.io.bundle_writer import BakedBackground
    from bundle_factory import make_bundle

    plain = make_bundle(tmp_path, save_name="plain")
    b = fmt.open_bundle(plain)
    m = b.manifest
    from backend.io.bundle_writer import BakedObject, CanonicalArrays, write_bundle
    objs = [BakedObject(id=o.id, name=o.name, color=o.color, frames=b.load_frames(o), visible=o.visible,
                        canonical=CanonicalArrays(**{k: getattr(b.load_frames(o), k)[0] for k in fmt.FRAME_ARRAYS}))
            for o in m.objects]
    g = _static(n)
    path = write_bundle(tmp_path, "bg", clip=m.clip, camera=b.load_camera(), camera_info=m.camera, objects=objs,
                        run=m.run, background=BakedBackground(gaussians=g, reference_frame=0, source="test image",
                                                              mask="folder 000", final_losses={"rgb": 0.01}))
    return plain, path, g


def test_bundle_background_round_trip_and_old_bundles(tmp_path):
    plain, path, g = _bundle_with_background(tmp_path)
    b = fmt.open_bundle(path)
    assert b.manifest.background.num_gaussians == 40 and b.manifest.background.mask == "folder 000"
    assert b.manifest.schema_version == 1
    back = b.load_background()
    for k in fmt.BACKGROUND_ARRAYS:
        np.testing.assert_array_equal(getattr(back, k), getattr(g, k))
    assert (path / "background" / "background.ply").stat().st_size > 0
    plan = plan_import(path)
    assert plan.background is not None and plan.background.num_points == 40
    np.testing.assert_allclose(plan.background.scale, np.exp(-2.0), rtol=1e-6)
    # a bundle without a background (as every earlier bundle) reads as before
    old = fmt.open_bundle(plain)
    assert "background" not in json.loads((plain / "manifest.json").read_text())
    assert old.manifest.background is None and old.load_background() is None
    assert plan_import(plain).background is None


def test_bundle_background_is_validated(tmp_path):
    _, path, _ = _bundle_with_background(tmp_path)
    np.savez(path / "background" / "gaussians.npz", **{k: getattr(_static(39), k) for k in fmt.BACKGROUND_ARRAYS})
    with pytest.raises(fmt.BundleError, match="means has shape"):
        fmt.open_bundle(path).load_background()
    data = json.loads((path / "manifest.json").read_text())
    data["background"]["gaussians"] = "../elsewhere.npz"
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(fmt.BundleError, match="must not leave"):
        fmt.open_bundle(path)
    data["background"] = {"gaussians": "background/gaussians.npz", "ply": "background/background.ply",
                          "num_gaussians": 40, "reference_frame": 99}
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(fmt.BundleError, match="reference_frame"):
        fmt.open_bundle(path)


# ------------------------------------------------------------------------------ alignment maths


def test_dilate_is_a_disk_and_stops_at_the_border():
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    d = al.dilate(m, 2.0)
    ys, xs = np.nonzero(d)
    assert d.sum() == 13 and ((ys - 4) ** 2 + (xs - 4) ** 2 <= 4).all()
    corner = np.zeros((5, 5), bool)
    corner[0, 0] = True
    assert al.dilate(corner, 1.0).sum() == 3
    assert np.array_equal(al.dilate(m, 0), m)


def test_project_and_blender_view_conventions():
    K = np.array([[50.0, 0, 31.0], [0, 50.0, 22.0], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, :3] = _rot(1, 30)
    c2w[:3, 3] = [1.0, 2.0, -3.0]
    cam_pts = np.array([[0.0, 0.0, 5.0], [1.0, -0.5, 4.0], [0.2, 0.1, -2.0]])
    world = cam_pts @ c2w[:3, :3].T + c2w[:3, 3]
    uv, z = al.project(K, c2w, world)
    np.testing.assert_allclose(uv[0], [31.0, 22.0])
    np.testing.assert_allclose(uv[1], [31 + 50 * 0.25, 22 - 50 * 0.125])
    np.testing.assert_allclose(z, [5, 4, -2])
    assert np.isnan(uv[2]).all()
    view = np.array([[0.0, 1.0, 3.0], [0.5, 0.5, 1.0], [1.0, 0.0, -1.0]])  # top-left, centre, behind
    px, d = al.from_normalized_view(view, 64, 48)
    np.testing.assert_allclose(px[:2], [[0, 0], [32, 24]])
    assert np.isnan(px[2]).all() and d[0] == 3


def test_mask_alignment_counts_only_shown_points():
    masks = np.zeros((2, 10, 10), bool)
    masks[:, 2:5, 2:5] = True
    uv = np.array([[[3.5, 3.5], [6.9, 3.5], [7.5, 3.5], [np.nan, np.nan]],  # in, within 2 px, 3 px out, behind
                   [[3.5, 3.5], [9.5, 9.5], [3.0, 3.0], [-1.0, 3.0]]])
    shown = np.array([[True, True, True, True], [True, False, True, True]])
    res = al.mask_alignment({"001": uv}, {"001": shown}, {"001": masks}, dilate_px=2.0)
    assert (res.inside, res.counted) == (4, 7)
    assert res.per_frame_inside == [2, 2] and res.per_frame_counted == [4, 3]
    assert res.to_dict()["per_object"]["001"]["fraction"] == pytest.approx(4 / 7)
    with pytest.raises(ValueError, match="do not fit"):
        al.mask_alignment({"001": uv}, {"001": shown[:, :2]}, {"001": masks})


# ------------------------------------------------------------------------------ pipeline: inputs and refusals


def _request(clip, tmp_path, **kw):
    return RunRequest(data_dir=clip / "JPEGImages", mask_dir=clip / "Annotations", out_dir=tmp_path / "out",
                      save_name="run", device="cpu", **kw)


def test_user_focal_length_sets_the_static_camera(sample_clip, tmp_path):
    cfg = with_overrides(get_preset("cpu-tiny"), camera={"focal_px": 80.0})
    prep = prepare(_request(sample_clip, tmp_path), cfg)
    cams, _, _ = cameras_and_depths(prep, cfg)
    w, _ = prep.clip.work_size
    f = 80.0 * w / prep.clip.width
    assert torch.allclose(cams.K[:, 0, 0], torch.tensor(f)) and torch.allclose(cams.K[:, 1, 1], torch.tensor(f))
    assert "focal length 80 px" in cams.source
    track, _ = cams.to_bundle(prep.clip.width, prep.clip.height)
    np.testing.assert_allclose(track.K[:, 0, 0], 80.0, rtol=1e-6)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(InputError, match="positive number of pixels"):
            prepare(_request(sample_clip, tmp_path), with_overrides(cfg, camera={"focal_px": bad}))


def test_background_mode_inputs_are_loaded(pan_clip, tmp_path):
    clip, _ = pan_clip
    prep = prepare(_request(clip, tmp_path, cam_path=clip / "megasam.npz", bg_path=clip / "background.png"),
                   get_preset("cpu-tiny"))
    bi = prep.background
    assert bi.image.shape == (48, 64, 3) and bi.masks.shape == (6, 48, 64)
    assert "folder 000" in bi.mask_source
    assert not (bi.depth_known & prep.fit_masks[:, 0].any(0)).any()


@pytest.mark.parametrize("extra, message", [
    (["--bg_path", "{clip}/background.png"], "background mode needs MegaSAM's cameras"),
    (["--focal_px", "90", "--cam_path", "{clip}/megasam.npz"], "both give the camera's focal length"),
    (["--cam_path", "{clip}/megasam.npz", "--bg_path", "{clip}/missing.png"], "background image not found"),
    (["--cam_path", "{clip}/megasam.npz", "--bg_path", "{clip}/wide.png"], "another aspect ratio"),
    (["--cam_path", "{clip}/megasam.npz", "--bg_path", "{clip}/JPEGImages"], "background image not found"),
])
def test_bad_background_mode_input_is_refused_before_any_work(pan_clip, tmp_path, extra, message):
    clip, _ = pan_clip
    cv2.imwrite(str(clip / "wide.png"), np.zeros((48, 90, 3), np.uint8))
    code, events, err = backend(*clip_args(clip, tmp_path / "out"), "--preset", "cpu-tiny",
                                *[e.format(clip=clip) for e in extra])
    assert code == 2, err
    failed = events[-1]
    assert failed.type == "failed" and message in failed.get("error")
    assert not any(e.type == "stage" and e.get("stage") == "init" for e in events)


def test_background_image_is_resampled_to_the_fitting_size(tmp_path):
    img = np.zeros((96, 128, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "bg.png"), img)
    out = load_background_image(tmp_path / "bg.png", (64, 48), (32, 24))
    assert out.shape == (24, 32, 3) and (out[..., 0] == 255).all() and (out[..., 2] == 0).all()  # RGB
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        load_background_image(tmp_path / "bad.png", (64, 48), (32, 24))


def test_blender_request_passes_the_focal_length_and_checks_background_mode(tmp_path):
    from genmojo_blender.core import backend_process as bp

    (tmp_path / "d").mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "bg.png").write_bytes(b"x")
    (tmp_path / "c.npz").write_bytes(b"x")
    base = dict(data_dir=str(tmp_path / "d"), mask_dir=str(tmp_path / "m"), out_dir=str(tmp_path / "o"), save_name="s")
    argv = bp.build_argv("/py", bp.RunRequest(**base, focal_px=1400.5), module="backend")
    assert argv[argv.index("--focal_px") + 1] == "1400.5"
    assert "--focal_px" not in bp.build_argv("/py", bp.RunRequest(**base), module="backend")
    assert bp.validate_request(bp.RunRequest(**base, focal_px=1400.5)) == []
    problems = bp.validate_request(bp.RunRequest(**base, bg_path=str(tmp_path / "bg.png")))
    assert problems == ["A background image needs the camera file (MegaSAM npz): its depth places the background"]
    assert bp.validate_request(bp.RunRequest(**base, bg_path=str(tmp_path / "bg.png"),
                                             cam_path=str(tmp_path / "c.npz"))) == []
    assert any("not both" in p for p in bp.validate_request(bp.RunRequest(**base, focal_px=10.0,
                                                                           cam_path=str(tmp_path / "c.npz"))))
    assert any("must be positive" in p for p in bp.validate_request(bp.RunRequest(**base, focal_px=-1.0)))
