"""The camera solved from the background (backend/priors/camera_solve.py) on a clip with a known camera.

The clip: 12 frames at 160x120 of textured planar cards 3-9 units in front of the first camera and a
wall behind them at 14 (OpenCV projection of each plane as a homography, far to near, 4x supersampled),
seen by a camera that slides sideways, moves forward and turns while it rises and sinks again (a
curved path, so a similarity alignment of the centres is well posed), plus a moving noise card that is masked as an object (features are only
extracted away from it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from backend.config import CameraSolveConfig  # noqa: E402
from backend.errors import InputError  # noqa: E402
from backend.priors import camera_solve as cs  # noqa: E402

W, H, T = 160, 120, 12
FOCAL = 140.0


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def true_c2w() -> np.ndarray:
    c2w = np.repeat(np.eye(4)[None], T, 0)
    for t in range(T):
        c2w[t, :3, :3] = _rot_y(np.deg2rad(-1.0 * t))
        c2w[t, :3, 3] = [0.25 * t, -0.4 * np.sin(np.pi * t / (T - 1)), 0.05 * t]
    return c2w


def _texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side, 3) uint8 noise summed over several scales: corners and blobs at every size, for SIFT."""
    tex = np.zeros((side, side, 3), np.float32)
    for cells in (4, 8, 16, 32, 64):
        coarse = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        tex += cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return (tex * 255).astype(np.uint8)


def _cards(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Textured planar cards (origin, x edge, y edge in world units), far to near: a back wall and
    cards scattered 3-9 units in front of the first camera, each turned a little."""
    cards = [(np.array([-14.0, -11.0, 14.0]), np.array([30.0, 0, 0]), np.array([0, 22.0, 0]))]
    for z in (9.0, 7.5, 6.0, 5.0, 4.0, 3.2):
        size = rng.uniform(1.2, 2.2) * z / 5
        centre = np.array([rng.uniform(-0.6, 1.0) * z * 0.6 + 1.0, rng.uniform(-0.5, 0.5) * z * 0.5, z])
        yaw, pitch = rng.uniform(-0.5, 0.5, 2)
        ax = np.array([np.cos(yaw), 0.0, np.sin(yaw)]) * size
        ay = np.array([0.0, np.cos(pitch), np.sin(pitch)]) * size
        cards.append((centre - ax / 2 - ay / 2, ax, ay))
    return cards


def render_clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T,H,W,3) uint8, object masks (1,T,H,W) bool, the true c2w (T,4,4)."""
    rng = np.random.default_rng(seed)
    ss, side = 4, 256  # supersampling; texture resolution
    K = np.array([[FOCAL * ss, 0, W * ss / 2], [0, FOCAL * ss, H * ss / 2], [0, 0, 1.0]])
    cards = [(card, _texture(rng, side)) for card in _cards(rng)]
    to_texture = np.array([[1 / side, 0, 0], [0, 1 / side, 0], [0, 0, 1.0]])
    c2w = true_c2w()
    frames = np.zeros((T, H, W, 3), np.uint8)
    masks = np.zeros((1, T, H, W), bool)
    for t in range(T):
        w2c = np.linalg.inv(c2w[t])
        img = np.zeros((H * ss, W * ss, 3), np.uint8)
        for (origin, ax, ay), tex in cards:
            # texture pixel (u, v) -> world origin + u/side ax + v/side ay -> image: one homography
            plane = np.stack([ax, ay, origin], 1)
            Hm = K @ (w2c[:3, :3] @ plane + np.outer(w2c[:3, 3], [0, 0, 1])) @ to_texture
            Hm = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]]) @ Hm  # K's pixel centres are at +0.5
            warped = cv2.warpPerspective(tex, Hm, (W * ss, H * ss), flags=cv2.INTER_LINEAR)
            inside = cv2.warpPerspective(np.full((side, side), 255, np.uint8), Hm, (W * ss, H * ss)) > 127
            img[inside] = warped[inside]
        frames[t] = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
        x0 = 20 + 8 * t
        frames[t, 40:80, x0:x0 + 30] = rng.integers(0, 256, (40, 30, 3))
        masks[0, t, 40:80, x0:x0 + 30] = True
    return frames, masks, c2w


@pytest.fixture(scope="module")
def clip():
    return render_clip()


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising |dst - (s R src + t)|² over point sets (N,3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean())
    return s, R, mu_d - s * R @ mu_s


def trajectory_errors(solved: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(largest rotation error in degrees, RMS centre error / baseline) after a similarity alignment."""
    s, R, t = umeyama(solved[:, :3, 3], truth[:, :3, 3])
    centres = solved[:, :3, 3] @ (s * R).T + t
    baseline = np.linalg.norm(truth[-1, :3, 3] - truth[0, :3, 3])
    rms = float(np.sqrt(((centres - truth[:, :3, 3]) ** 2).sum(1).mean()))
    rel = R @ solved[:, :3, :3]  # aligned camera rotations
    cos = (np.einsum("tij,tij->t", rel, truth[:, :3, :3]) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max()), rms / baseline


@pytest.fixture(scope="module")
def solved(clip, tmp_path_factory):
    frames, masks, _ = clip
    cache = tmp_path_factory.mktemp("cache")
    warnings: list[str] = []
    cams, hit = cs.solve_cameras(frames, masks, None, CameraSolveConfig(num_threads=2), scene_depth=4.0,
                                 cache_dir=cache, warn=warnings.append)
    return cams, hit, cache, warnings


def test_solve_recovers_the_known_trajectory(clip, solved):
    _, _, truth = clip
    cams, hit, _, warnings = solved
    assert not hit and warnings == []
    assert cams.registered.all()
    rot_deg, centre_rel = trajectory_errors(cams.c2w, truth)
    assert rot_deg < 2.0
    assert centre_rel < 0.05
    # the world starts at frame 0's camera and is scaled to the requested scene depth
    np.testing.assert_allclose(cams.c2w[0], np.eye(4), atol=1e-9)
    assert cams.scene_depth == 4.0 and cams.max_depth > 4.0
    # one shared pinhole camera, its principal point at the centre
    assert np.allclose(cams.K, cams.K[0]) and cams.K.shape == (T, 3, 3)
    np.testing.assert_allclose(cams.K[0, :2, 2], [W / 2, H / 2])
    assert 0.7 * FOCAL < cams.K[0, 0, 0] < 1.3 * FOCAL
    # per-frame quality: sub-pixel errors on rendered discs, and many points per frame
    assert np.isfinite(cams.reproj_error_px).all() and (cams.reproj_error_px < 1.0).all()
    assert (cams.num_points >= 30).all()
    assert "12/12 frames registered" in cams.describe()


def test_feature_masks_exclude_the_grown_objects(clip):
    frames, masks, _ = clip
    allowed = cs.feature_masks(masks, None, 4)
    assert not allowed[0, 40:80, 20:50].any()
    assert not allowed[0, 37, 30] and allowed[0, 30, 30]  # grown by 4 px, not more
    background = np.ones((T, H, W), bool)
    background[:, :10] = False
    assert not cs.feature_masks(masks, background, 0)[:, :10].any()


def test_cache_is_read_back_and_an_unreadable_entry_is_recomputed(clip, solved):
    frames, masks, _ = clip
    first, _, cache, _ = solved
    cfg = CameraSolveConfig(num_threads=2)
    allowed = cs.feature_masks(masks, None, cfg.mask_grow_px)
    calls = []

    def solver(*args, **kwargs):
        calls.append(1)
        return cs.run_colmap(*args, **kwargs)

    raw, hit = cs.cached_raw_solve(frames, allowed, cfg, cache, solver=solver)
    assert hit and calls == []
    again = cs.complete_solve(raw, cfg, 4.0, warn=lambda m: None)
    np.testing.assert_allclose(again.c2w, first.c2w)
    entries = list(Path(cache).glob("solve-*.npz"))
    assert len(entries) == 1
    entries[0].write_bytes(b"not an npz")
    warnings: list[str] = []
    raw2, hit2 = cs.cached_raw_solve(frames, allowed, cfg, cache, warn=warnings.append, solver=solver)
    assert not hit2 and calls == [1]
    assert any("unreadable camera-solve cache" in w for w in warnings)
    with np.load(entries[0]) as z:  # rewritten, readable again
        assert z["registered"].all()
    whole = entries[0].read_bytes()
    entries[0].write_bytes(whole[:len(whole) // 2])  # cut short, as by a full disk: a damaged zip
    warnings.clear()
    raw3, hit3 = cs.cached_raw_solve(frames, allowed, cfg, cache, warn=warnings.append, solver=solver)
    assert not hit3 and calls == [1, 1] and any("unreadable camera-solve cache" in w for w in warnings)
    assert entries[0].read_bytes() != whole[:len(whole) // 2]
    # other settings are another entry
    other = dataclasses.replace(cfg, overlap=3)
    assert cs.solve_cache_key(frames, allowed, other, None, "x") != cs.solve_cache_key(frames, allowed, cfg, None, "x")


def linear_c2w() -> np.ndarray:
    """A path straight in position turning at a constant rate: interpolation between two of its poses is exact."""
    c2w = np.repeat(np.eye(4)[None], T, 0)
    for t in range(T):
        c2w[t, :3, :3] = _rot_y(np.deg2rad(-2.0 * t))
        c2w[t, :3, 3] = [0.5 + 0.1 * t, 0.02 * t, 0.03 * t]
    return c2w


def _raw_with(registered: np.ndarray) -> cs.RawSolve:
    truth = linear_c2w()
    n = len(registered)
    return cs.RawSolve(K=np.diag([100.0, 100.0, 1.0]), distortion=np.zeros(0), registered=registered,
                       w2c=np.linalg.inv(truth[:n]), reproj_error_px=np.where(registered, 0.5, np.nan),
                       num_points=np.where(registered, 50, 0), point_depth=np.where(registered, 8.0, np.nan),
                       max_depth=np.where(registered, 12.0, np.nan), camera_model="SIMPLE_PINHOLE")


def test_unregistered_frames_are_interpolated_with_a_warning():
    registered = np.ones(T, bool)
    registered[[4, 5, 11]] = False
    raw = _raw_with(registered)
    warnings: list[str] = []
    cams = cs.complete_solve(raw, CameraSolveConfig(), 4.0, warn=warnings.append)
    assert len(warnings) == 1 and "4, 5, 11" in warnings[0] and "interpolated" in warnings[0]
    assert cams.interpolated == [4, 5, 11]
    truth = linear_c2w()
    truth = np.linalg.inv(truth[0])[None] @ truth
    truth[:, :3, 3] *= 4.0 / 8.0
    # moved to frame 0's camera and scaled by scene depth / median point depth = 4 / 8
    np.testing.assert_allclose(cams.c2w[[4, 5]], truth[[4, 5]], atol=1e-9)
    np.testing.assert_allclose(cams.c2w[11], cams.c2w[10])  # the end holds the last registered pose
    assert np.isnan(cams.reproj_error_px[[4, 5, 11]]).all()
    assert "interpolated frames 4, 5, 11" in cams.describe()


def test_too_many_unregistered_frames_stop_the_run():
    registered = np.zeros(T, bool)
    registered[:8] = True  # 4 of 12 missing: more than 25 %
    with pytest.raises(InputError, match="registered 8 of 12 frames") as e:
        cs.complete_solve(_raw_with(registered), CameraSolveConfig(), 4.0, warn=lambda m: None)
    assert "--cam_path" in e.value.hint
    cs.complete_solve(_raw_with(registered), CameraSolveConfig(max_unregistered_fraction=0.4), 4.0,
                      warn=lambda m: None)


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="camera_model"):
        cs.check_config(CameraSolveConfig(camera_model="OPENCV_FISHEYE"))
    with pytest.raises(InputError, match="max_unregistered_fraction"):
        cs.check_config(CameraSolveConfig(max_unregistered_fraction=1.0))


def _write_clip(folder: Path, frames: np.ndarray, masks: np.ndarray, scale: int = 2) -> None:
    """The clip in the project's input layout, upscaled ``scale`` times (the fit then works at 160x120)."""
    (folder / "JPEGImages").mkdir(parents=True)
    (folder / "Annotations" / "001").mkdir(parents=True)
    for t in range(len(frames)):
        big = cv2.resize(frames[t], (W * scale, H * scale), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / "JPEGImages" / f"{t:05d}.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        m = cv2.resize(masks[0, t].astype(np.uint8) * 255, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / "Annotations" / "001" / f"{t:05d}.png"), m)


def test_pipeline_fits_through_the_solved_cameras(clip, tmp_path):
    from backend import pipeline
    from backend.config import get_preset, with_overrides

    frames, masks, truth = clip
    _write_clip(tmp_path / "clip", frames, masks)
    cfg = with_overrides(get_preset("cpu-tiny"), input={"max_side": W}, camera_solve={"num_threads": 2})
    req = pipeline.RunRequest(data_dir=tmp_path / "clip" / "JPEGImages", mask_dir=tmp_path / "clip" / "Annotations",
                              out_dir=tmp_path / "out", save_name="r", device="cpu", camera="solve",
                              disable_guidance=True)
    prep = pipeline.prepare(req, cfg)
    assert prep.clip.work_size == (W, H) and prep.footage is not None
    assert any(n.startswith("camera: solved (COLMAP") for n in prep.notes)
    assert list((tmp_path / "out" / pipeline.CAMERA_CACHE).glob("solve-*.npz"))
    cams, depths, source = pipeline.cameras_and_depths(prep, cfg, req)
    assert not cams.static and cams.source.startswith("solved (COLMAP")
    rot_deg, centre_rel = trajectory_errors(cams.c2w.double().numpy(), truth)
    assert rot_deg < 2.0 and centre_rel < 0.05
    assert depths.shape == (1, T) and "heuristic" in source
    track, info = cams.to_bundle(prep.clip.width, prep.clip.height)
    assert info.solve is not None and info.solve.method == "colmap" and all(info.solve.registered)
    # errors in pixels of the original (2x) frames
    np.testing.assert_allclose(info.solve.error_px, 2 * prep.footage.reproj_error_px)
    np.testing.assert_allclose(track.K[0, 0, 0], 2 * prep.footage.K[0, 0, 0])
    again = pipeline.prepare(req, cfg)  # the second run reads the cache
    assert any("(read from the cache)" in n for n in again.notes)


@pytest.mark.parametrize("kwargs, message", [
    ({"camera": "solve", "cam_path": Path("cams.npz")}, "--camera solve and --cam_path both give the camera"),
    ({"camera": "megasam"}, "--camera megasam needs MegaSAM's npz"),
    ({"camera": "blender"}, "--camera blender needs the camera file"),
    ({"camera": "virtual", "camera_file": Path("c.npz")}, "only read with --camera blender"),
])
def test_camera_flags_are_checked_against_each_other(kwargs, message):
    from backend import pipeline
    from backend.config import get_preset

    req = pipeline.RunRequest(data_dir=Path("d"), mask_dir=Path("m"), out_dir=Path("o"), save_name="r", **kwargs)
    with pytest.raises(InputError, match=message):
        pipeline.camera_mode(req, get_preset("cpu-tiny"))
