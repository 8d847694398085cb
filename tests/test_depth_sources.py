"""Depth for the per-object depth factors: map folders (16-bit PNG, npy, EXR), a transformers depth model
(tiny, random, saved and loaded), MegaSAM-style metric maps, and the mask heuristic (CPU)."""

import os

import cv2
import numpy as np
import pytest
import torch

from backend.errors import InputError
from backend.priors import depth as D


def write_maps(folder, depths, ext, names=None, scale=1000.0):
    folder.mkdir(parents=True, exist_ok=True)
    for t, d in enumerate(depths):
        name = (names[t] if names else f"{t:05d}") + ext
        if ext == ".png":
            cv2.imwrite(str(folder / name), np.round(d * scale).astype(np.uint16))
        elif ext == ".npy":
            np.save(folder / name, d.astype(np.float32))
        elif ext == ".exr":
            os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
            assert cv2.imwrite(str(folder / name), d.astype(np.float32))
    return folder


def two_objects(T=4, h=24, w=32):
    """Masks of two objects side by side and a depth map where object 0 is at 2 m, object 1 at 5 m."""
    masks = np.zeros((2, T, h, w), bool)
    masks[0, :, 6:18, 2:12] = True
    masks[1, :, 6:18, 18:30] = True
    depth = np.full((T, h, w), 9.0, np.float32)
    depth[:, :, :15] = 2.0
    depth[:, :, 15:] = 5.0
    depth[:, :, 15:] += np.arange(T, dtype=np.float32)[:, None, None] * 0.5  # object 1 recedes
    return masks, depth


@pytest.mark.parametrize("ext", [".png", ".npy", ".exr"])
def test_depth_folder_is_read_matched_by_frame_number_and_resized(tmp_path, ext):
    _, depth = two_objects()
    names = ["frame_0010", "frame_0011", "frame_0013", "frame_0014"]  # a gap, numbers not from 0
    write_maps(tmp_path / "d", depth, ext, names)
    maps = D.load_depth_folder(tmp_path / "d", [10, 11, 13, 14], width=16, height=12)
    assert maps.depths.shape == (4, 12, 16) and not maps.metric
    assert ext in maps.source and str(tmp_path / "d") in maps.source
    scale = 1000.0 if ext == ".png" else 1.0
    np.testing.assert_allclose(maps.depths[:, 6, 2] / scale, 2.0, rtol=1e-6)
    np.testing.assert_allclose(maps.depths[3, 6, 14] / scale, 6.5, rtol=1e-6)


def test_disparity_maps_are_inverted_and_zero_is_unknown(tmp_path):
    disp = np.full((2, 8, 8), 0.5, np.float32)
    disp[:, :2] = 0.0
    write_maps(tmp_path / "d", disp, ".npy")
    maps = D.load_depth_folder(tmp_path / "d", [0, 1], 8, 8, disparity=True)
    assert np.allclose(maps.depths[:, 4:], 2.0) and (maps.depths[:, :2] == 0).all()
    assert maps.source.startswith("disparity")


def test_depth_folder_problems_name_the_file_or_frame(tmp_path):
    _, depth = two_objects(T=3)
    write_maps(tmp_path / "d", depth[:2], ".npy")
    with pytest.raises(InputError, match="no depth map for frame 2"):
        D.load_depth_folder(tmp_path / "d", [0, 1, 2], 8, 8)
    with pytest.raises(InputError, match="folder not found"):
        D.load_depth_folder(tmp_path / "nope", [0], 8, 8)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="00000.png: cannot be read"):
        D.load_depth_folder(tmp_path / "e", [0], 8, 8)
    write_maps(tmp_path / "z", np.zeros((1, 4, 4), np.float32), ".npy")
    with pytest.raises(InputError, match="no positive value"):
        D.load_depth_folder(tmp_path / "z", [0], 4, 4)


def test_object_depths_are_masked_medians_scaled_to_the_reference():
    masks, depth = two_objects()
    visible = masks.any((2, 3))
    kw = dict(bottoms=np.array([18, 18]), frames=np.arange(4), height=24, spread=0.35, margin=0.1, weight=10.0,
              min_pixels=20.0, ids=["001", "002"])
    relative = D.DepthMaps(depth * 7.0, metric=False, source="maps")
    d, source = D.object_depths(masks, visible, relative, reference=4.0, **kw)
    assert source == "maps" and d.shape == (2, 4)
    assert np.median(d) == pytest.approx(4.0)
    np.testing.assert_allclose(d[1] / d[0], [2.5, 2.75, 3.0, 3.25], rtol=1e-6)  # ratios survive the scaling
    metric = D.DepthMaps(depth, metric=True, source="megasam")
    d, _ = D.object_depths(masks, visible, metric, reference=4.0, **kw)
    np.testing.assert_allclose(d[0], 2.0) and np.testing.assert_allclose(d[1], [5.0, 5.5, 6.0, 6.5])


def test_hidden_frames_are_interpolated_and_unknown_objects_fall_back():
    masks, depth = two_objects()
    masks[0, 1:3] = False  # object 0 hidden in frames 1 and 2
    depth[3, :, :15] = 4.0
    depth[:, :, 15:] = 0.0  # nothing known about object 1
    visible = masks.any((2, 3))
    d, source = D.object_depths(masks, visible, D.DepthMaps(depth, True, "m"), reference=3.0,
                                bottoms=np.array([18, 18]), frames=np.arange(4), height=24, spread=0.35, margin=0.1,
                                weight=10.0, min_pixels=20.0)
    np.testing.assert_allclose(d[0], [2.0, 2 + 2 / 3, 2 + 4 / 3, 4.0])
    assert np.isfinite(d[1]).all() and "objects [1] from the heuristic" in source


def test_heuristic_ground_contact_orders_objects_without_occlusion():
    masks = np.zeros((2, 3, 40, 40), bool)
    masks[0, :, 5:15, 2:12] = True  # bottom at row 15: higher in the image, farther
    masks[1, :, 20:35, 25:35] = True  # bottom at row 35: nearer
    depths, C = D.heuristic_depths(masks, np.array([15, 35]), np.arange(3), 40, 4.0, 0.35, 0.1, 10.0, 20.0)
    assert depths[1] < depths[0] and (C == 0).all()
    assert np.exp(np.log(depths).mean()) == pytest.approx(4.0)
    assert np.log(depths[0] / depths[1]) == pytest.approx(0.35 * 20 / 40)


def test_heuristic_occlusion_overrides_ground_contact():
    """Object 0 slides over object 1 (covering it) although its ground contact says it is farther."""
    T, h, w = 6, 40, 60
    masks = np.zeros((2, T, h, w), bool)
    for t in range(T):
        masks[1, t, 10:30, 25:40] = True  # static, bottom at row 30
        x0 = 8 + 5 * t
        masks[0, t, 8:28, x0:x0 + 14] = True  # moving right, bottom at row 28 (higher: "farther")
        masks[1, t] &= ~masks[0, t]  # modal masks: what object 0 covers is not visible of object 1
    depths, C = D.heuristic_depths(masks, np.array([28, 30]), np.arange(T), h, 4.0, 0.35, 0.1, 10.0, 20.0)
    assert C[0, 1] > 0.5 and C[1, 0] == -C[0, 1]
    assert depths[0] < depths[1]
    d, source = D.object_depths(masks, masks.any((2, 3)), None, reference=4.0, bottoms=np.array([28, 30]),
                                frames=np.arange(T), height=h, spread=0.35, margin=0.1, weight=10.0, min_pixels=20.0,
                                ids=["001", "002"])
    assert d.shape == (2, T) and (d[:, :1] == d).all()  # constant over time
    assert source.startswith("heuristic") and "near to far: 001 < 002" in source


def test_heuristic_sees_an_object_pass_behind_another():
    """The same motion, but the moving object is the one hidden: it is placed behind."""
    T, h, w = 6, 40, 60
    masks = np.zeros((2, T, h, w), bool)
    for t in range(T):
        masks[1, t, 10:30, 25:40] = True
        x0 = 8 + 5 * t
        masks[0, t, 8:28, x0:x0 + 14] = True
        masks[0, t] &= ~masks[1, t]
    E = D.occlusion_evidence(masks, np.arange(T))
    assert E[1, 0] > 100 and E[0, 1] == 0
    depths, C = D.heuristic_depths(masks, np.array([28, 30]), np.arange(T), h, 4.0, 0.35, 0.1, 10.0, 20.0)
    assert depths[1] < depths[0] and C[1, 0] > 0.5


@pytest.fixture(scope="module")
def depth_model_dir(tmp_path_factory):
    """A tiny Depth-Anything-shaped model with random weights, saved with its image processor."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, fusion_hidden_size=8,
                                 neck_hidden_sizes=[8, 8], reassemble_factors=[2, 1], head_hidden_size=8, patch_size=14)
    folder = tmp_path_factory.mktemp("depth") / "tiny-depth"
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=False, ensure_multiple_of=14).save_pretrained(folder)
    return folder


def test_depth_model_runs_through_transformers(depth_model_dir):
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    frames = np.random.default_rng(0).integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
    maps = D.run_depth_model(depth_model_dir, frames, "cpu", batch=2, disparity_floor=1e-3)
    assert maps.depths.shape == (3, 20, 30) and np.isfinite(maps.depths).all() and (maps.depths > 0).all()
    assert str(depth_model_dir) in maps.source and "disparity, inverted" in maps.source
    # the same model run by hand: its output is disparity, inverted with the floor
    proc = AutoImageProcessor.from_pretrained(depth_model_dir)
    model = AutoModelForDepthEstimation.from_pretrained(depth_model_dir).eval()
    with torch.no_grad():
        pred = model(**proc(images=[frames[2]], return_tensors="pt")).predicted_depth
    pred = torch.nn.functional.interpolate(pred[:, None], (20, 30), mode="bilinear", align_corners=False)[0, 0]
    expect = 1 / torch.maximum(pred, 1e-3 * pred.max())
    np.testing.assert_allclose(maps.depths[2], expect.numpy(), rtol=1e-5)


def test_depth_model_folder_is_checked(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        D.check_depth_model(tmp_path / "none")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="preprocessor_config.json is missing"):
        D.check_depth_model(tmp_path / "m")


def test_pipeline_takes_depth_from_the_folder_and_records_it(sample_clip_master, tmp_path, depth_model_dir):
    """prepare reads and checks the maps (no optimisation); the depths follow them; the source is named."""
    from backend import pipeline
    from backend.config import get_preset

    cfg = get_preset("cpu-tiny")
    frames = sorted((sample_clip_master / "JPEGImages").iterdir())
    rng = np.random.default_rng(0)
    base = {}
    for i, f in enumerate(frames):
        d = np.full((64, 64), 3.0, np.float32) + rng.random((64, 64)).astype(np.float32) * 0.01
        np.save(tmp_path / f"{f.stem}.npy", d * (1 + 0.1 * i))
        base[i] = 1 + 0.1 * i
    req = pipeline.RunRequest(data_dir=sample_clip_master / "JPEGImages", mask_dir=sample_clip_master / "Annotations",
                              out_dir=tmp_path / "out", save_name="d", device="cpu", depth_dir=tmp_path)
    prep = pipeline.prepare(req, cfg)
    assert prep.depth_maps is not None and prep.guidance_folder is None
    _, depths, source = pipeline.cameras_and_depths(prep, cfg, req)
    assert source.startswith(f"depth maps from {tmp_path}")
    vis = np.array([tr.visible for tr in prep.tracks])
    ratio = depths[vis] / np.array([base[t] for t in np.nonzero(vis)[1]])
    assert ratio.std() / ratio.mean() < 0.01  # every object follows the maps' growth over time

    req2 = pipeline.RunRequest(data_dir=req.data_dir, mask_dir=req.mask_dir, out_dir=tmp_path / "out", save_name="m",
                               device="cpu", depth_model=depth_model_dir)
    prep2 = pipeline.prepare(req2, cfg)
    _, depths2, source2 = pipeline.cameras_and_depths(prep2, cfg, req2)
    assert source2.startswith(f"depth model {depth_model_dir}") and np.isfinite(depths2).all()
    assert np.median(depths2) == pytest.approx(cfg.camera.scene_depth)

    bad = pipeline.RunRequest(data_dir=req.data_dir, mask_dir=req.mask_dir, out_dir=tmp_path / "out", save_name="b",
                              device="cpu", depth_dir=tmp_path / "missing")
    with pytest.raises(InputError, match="--depth_dir .*missing: folder not found"):
        pipeline.prepare(bad, cfg)
