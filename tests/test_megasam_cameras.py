"""--cam_path: MegaSAM cameras are validated, rescaled, and drive the fit in their own world."""

import json

import numpy as np
import pytest

from backend.errors import InputError
from backend.io.megasam import load_megasam
from genmojo_blender.core.bundle import open_bundle
from test_pipeline import backend, clip_args


def _rot_y(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def make_megasam(clip, path, *, scale=2, pose=None, **overrides):
    """A MegaSAM-format npz from the sample clip's ground truth, at ``scale`` times lower resolution."""
    gt = json.loads((clip / "ground_truth.json").read_text())
    import cv2

    T, W, H = gt["frames"], gt["width"], gt["height"]
    depth = np.full((T, H, W), 20.0, np.float32)
    for o in gt["objects"]:
        for t in range(T):
            m = cv2.imread(str(clip / "Annotations" / o["id"] / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE) > 127
            depth[t][m] = o["depth"][t]
    small = np.stack([cv2.resize(d, (W // scale, H // scale), interpolation=cv2.INTER_NEAREST) for d in depth])
    K = np.array(gt["camera"]["K"], float)
    K[:2] /= scale
    c2w = np.repeat(np.eye(4)[None], T, 0) if pose is None else np.repeat(pose[None], T, 0)
    arrays = dict(images=np.zeros((T, H // scale, W // scale, 3), np.uint8), depths=small.astype(np.float16),
                  intrinsic=K.astype(np.float32), cam_c2w=c2w.astype(np.float32))
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return gt


def test_intrinsics_are_rescaled_to_the_clip(sample_clip, tmp_path):
    gt = make_megasam(sample_clip, tmp_path / "cams.npz", scale=2)
    cams = load_megasam(tmp_path / "cams.npz", 8, 64, 64)
    np.testing.assert_allclose(cams.K[0], np.array(gt["camera"]["K"]), rtol=1e-5)
    assert cams.depths.shape == (8, 64, 64) and cams.c2w.shape == (8, 4, 4)


@pytest.mark.parametrize("overrides, message", [
    ({"cam_c2w": None}, r"missing arrays \['cam_c2w'\]"),
    ({"cam_c2w": np.repeat(np.eye(4)[None], 5, 0)}, "5 camera poses and 8 depth maps for a clip of 8"),
    ({"intrinsic": np.full((3, 3), np.nan)}, "intrinsic contains NaN"),
    ({"cam_c2w": np.repeat((np.eye(4) * 2)[None], 8, 0)}, "not rigid"),
    ({"intrinsic": np.eye(4)}, r"intrinsic has shape \(4, 4\)"),
])
def test_bad_camera_files_are_refused(sample_clip, tmp_path, overrides, message):
    make_megasam(sample_clip, tmp_path / "cams.npz", **overrides)
    with pytest.raises(InputError, match=message):
        load_megasam(tmp_path / "cams.npz", 8, 64, 64)


def test_not_an_npz(tmp_path):
    (tmp_path / "cams.npz").write_text("hello")
    with pytest.raises(InputError, match="not a readable npz"):
        load_megasam(tmp_path / "cams.npz", 8, 64, 64)


def test_fit_in_megasam_world_recovers_object_depths(sample_clip, tmp_path):
    """With a rotated, shifted world, objects still sit at the true depth in front of each camera."""
    pose = np.eye(4)
    pose[:3, :3] = _rot_y(30)
    pose[:3, 3] = [1.0, -0.5, 2.0]
    gt = make_megasam(sample_clip, tmp_path / "cams.npz", pose=pose)
    code, events, err = backend(*clip_args(sample_clip, tmp_path / "out"), "--preset", "cpu-tiny", "--iters", 30,
                                "--cam_path", tmp_path / "cams.npz")
    assert code == 0, err
    b = open_bundle(events[-1].get("bundle"))
    assert b.manifest.camera.source == "megasam" and "megasam" in b.manifest.run.depth_source
    cam = b.load_camera()
    np.testing.assert_allclose(cam.c2w[0], pose, atol=1e-6)
    for obj, truth in zip(b.manifest.objects, gt["objects"]):
        fr = b.load_frames(obj)
        for t in range(8):
            w2c = np.linalg.inv(cam.c2w[t])
            z = (fr.means[t] @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
            assert abs(np.median(z) / truth["depth"][t] - 1) < 0.15, (obj.id, t)
