"""Preview videos computed from baked arrays: input view, rotating view, trajectories, and the bundle."""

import json

import numpy as np
import pytest
import torch

from backend.io.bundle_writer import BakedObject, CanonicalArrays, write_bundle
from backend.model.camera import static_cameras
from backend.previews import (Tracks, input_view, orbit_camera, orbit_schedule, query_lattice, rotating_view,
                              scene_pivot, trajectories, trajectory_video)
from genmojo_blender.core import bundle as fmt

T, W, H = 6, 64, 48
CPU = torch.device("cpu")
# far object: blue disc at z=4 moving +x; near object: red disc at z=2.5 moving −x, in front of
# the far one by the last frame (disjoint in the first)
FAR = dict(n=250, z=4.0, x0=-0.6, vx=0.1, radius=0.9, color=(0.0, 0.0, 1.0))
NEAR = dict(n=180, z=2.5, x0=0.65, vx=-0.1, radius=0.35, color=(1.0, 0.0, 0.0))


def _disc(n, z, x0, vx, radius, color, seed):
    rng = np.random.default_rng(seed)
    r = radius * np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0, 2 * np.pi, size=n)
    base = np.stack([x0 + r * np.cos(a), r * np.sin(a), z + rng.normal(size=n) * 0.005], 1).astype(np.float32)
    shift = np.arange(T, dtype=np.float32)[:, None, None] * np.array([vx, 0, 0], np.float32)
    quats = np.zeros((T, n, 4), np.float32)
    quats[..., 0] = 1
    return fmt.ObjectFrames(means=base[None] + shift, quats=quats,
                            log_scales=np.full((T, n, 3), np.log(0.05 * z / 4), np.float32),
                            colors=np.broadcast_to(np.array(color, np.float32), (T, n, 3)).copy(),
                            opacities=np.full((T, n), 0.9, np.float32))


@pytest.fixture(scope="module")
def scene():
    objects = [_disc(**FAR, seed=1), _disc(**NEAR, seed=2)]
    cams = static_cameras(T, W, H, 49.1, 0.01, 100)
    return objects, cams


@pytest.fixture(scope="module")
def tracks(scene):
    objects, cams = scene
    return trajectories(objects, cams, CPU, grid=24, trace=3)


@pytest.fixture(scope="module")
def plate_and_view(scene):
    objects, cams = scene
    plate = np.random.default_rng(0).integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)
    return plate, input_view(objects, cams, plate, CPU)


@pytest.fixture(scope="module")
def rotating(scene):
    objects, cams = scene
    return rotating_view(objects, cams, CPU, passes=2, azimuth_deg=10, elevation_deg=20, pullback=1.25)


def _first_frames(objects, cams, n):
    """The scene cut to its first n frames (cheaper renders for checks that need no motion)."""
    cut = [fmt.ObjectFrames(*(getattr(o, k)[:n] for k in ("means", "quats", "log_scales", "colors", "opacities")))
           for o in objects]
    return cut, static_cameras(n, W, H, 49.1, 0.01, 100)


def _project(points, cams):
    K = cams.K[0].double().numpy()
    return np.stack([K[0, 0] * points[..., 0] / points[..., 2] + K[0, 2],
                     K[1, 1] * points[..., 1] / points[..., 2] + K[1, 2]], -1)


def _centroid(img, channel):
    """Mean pixel position of the pixels dominated by one primary colour (0 red, 2 blue)."""
    f = img.astype(float) / 255
    others = [c for c in range(3) if c != channel]
    ys, xs = np.nonzero((f[..., channel] > 0.6) & (f[..., others] < 0.4).all(-1))
    assert len(xs) > 5
    return xs.mean(), ys.mean()


def test_input_view_is_the_plate_beside_the_composite(scene, plate_and_view):
    objects, cams = scene
    plate, out = plate_and_view
    assert out.shape == (T, H, 2 * W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :W], plate)
    right = out[:, :, W:]
    np.testing.assert_array_equal(right[:, 0, 0], plate[:, 0, 0])  # nothing rendered in the corner
    # the far (blue) disc's centre at frame 0 is covered by the render
    u, v = _project(np.array([FAR["x0"], 0, FAR["z"]]), cams)
    px = right[0, int(v), int(u)]
    assert px[2] > 200 and px[0] < 60 and px[1] < 60


def test_orbit_schedule_bounces_and_returns():
    az, el = orbit_schedule(12, 2, 10.0, 20.0)
    np.testing.assert_allclose(az, [0, 10 / 3, 20 / 3, 10, 20 / 3, 10 / 3, 0, -10 / 3, -20 / 3, -10, -20 / 3, -10 / 3],
                               atol=1e-9)
    np.testing.assert_allclose(el, [0, 10 / 3, 20 / 3, 10, 40 / 3, 50 / 3, 20, 50 / 3, 40 / 3, 10, 20 / 3, 10 / 3],
                               atol=1e-9)


def test_orbit_camera_pulls_back_and_keeps_the_pivot_fixed_in_the_image():
    rng = np.random.default_rng(3)
    c2w = np.eye(4)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    c2w[:3, :3] = q * np.sign(np.linalg.det(q))
    c2w[:3, 3] = rng.normal(size=3)
    pivot = c2w[:3, 3] + c2w[:3, :3] @ np.array([0.3, -0.2, 4.0])  # in front of the camera
    base = orbit_camera(c2w, pivot, 1.25, 0, 0)
    np.testing.assert_allclose(base[:3, :3], c2w[:3, :3], atol=1e-12)  # same orientation, moved back
    assert np.linalg.norm(base[:3, 3] - pivot) == pytest.approx(1.25 * np.linalg.norm(c2w[:3, 3] - pivot))
    back = np.linalg.inv(c2w[:3, :3]) @ (base[:3, 3] - c2w[:3, 3])
    np.testing.assert_allclose(back[:2], 0, atol=1e-9)
    assert back[2] < 0  # along the viewing axis, backwards

    def in_camera(m):
        return np.linalg.inv(m)[:3] @ np.append(pivot, 1)

    for az, el in [(10, 0), (-10, 0), (0, 20), (7, 13)]:
        np.testing.assert_allclose(in_camera(orbit_camera(c2w, pivot, 1.25, az, el)), in_camera(base), atol=1e-9)
    # positive azimuth moves the camera to its right, positive elevation up (−y in OpenCV)
    right, up = c2w[:3, 0], -c2w[:3, 1]
    assert (orbit_camera(c2w, pivot, 1.25, 10, 0)[:3, 3] - base[:3, 3]) @ right > 0.1
    assert (orbit_camera(c2w, pivot, 1.25, 0, 20)[:3, 3] - base[:3, 3]) @ up > 0.1


def test_rotating_view_swings_about_the_pivot(scene, rotating):
    objects, cams = scene
    out = rotating
    assert out.shape == (2 * T, H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, 0], [255, 255, 255])  # white background
    # with no pullback and no swing it is the input view over white; the real first view differs
    few, few_cams = _first_frames(objects, cams, 2)
    same = rotating_view(few, few_cams, CPU, passes=1, azimuth_deg=0, elevation_deg=0, pullback=1.0)
    white = input_view(few, few_cams, np.full((2, H, W, 3), 255, np.uint8), CPU)[:, :, W:]
    assert np.abs(same.astype(int) - white).max() <= 1
    assert np.abs(out[0].astype(int) - white[0]).mean() > 2
    # views 3 and 9 show frame 3 at azimuth +10 and −10: the near (red) disc, in front of the pivot,
    # shifts left when the camera swings right, much more than the far (blue) disc at the pivot's depth
    pivot = scene_pivot(objects)
    assert pivot[2] == pytest.approx(FAR["z"], abs=0.05)
    red_r, blue_r = _centroid(out[3], 0), _centroid(out[3], 2)
    red_l, blue_l = _centroid(out[9], 0), _centroid(out[9], 2)
    assert red_r[0] < red_l[0] - 2
    assert abs(blue_r[0] - blue_l[0]) < 0.5 * abs(red_r[0] - red_l[0])
    # view 6 shows frame 0 from 20° above: the near disc drops in the image relative to view 0
    assert _centroid(out[6], 0)[1] > _centroid(out[0], 0)[1] + 1


def test_tracks_follow_the_projected_gaussians(scene, tracks):
    objects, cams = scene
    M = tracks.num_tracks
    assert tracks.points.shape == (T, M, 2) and tracks.visible.shape == (T, M)
    assert set(np.unique(tracks.object_index)) == {0, 1} and (tracks.query_frame == 0).all()
    for k, o in enumerate(objects):
        sel = tracks.object_index == k
        g = tracks.gaussian_index[sel]
        assert g.max() < o.num_gaussians and len(np.unique(g)) == len(g)  # one track per Gaussian
        np.testing.assert_allclose(tracks.points[:, sel], _project(o.means[:, g].astype(float), cams), atol=1e-3)
        # the queried Gaussians belong to where object k is in the query frame, near lattice points
        q = tracks.points[0, sel]
        centre = _project(np.array([FAR["x0"] if k == 0 else NEAR["x0"], 0, o.means[0, 0, 2]]), cams)
        radius_px = cams.K[0, 0, 0].item() * (FAR if k == 0 else NEAR)["radius"] / o.means[0, 0, 2]
        assert (np.linalg.norm(q - centre, axis=1) < radius_px + 1).all()
        lattice = query_lattice(W, H, 24)
        assert (np.linalg.norm(q[:, None] - lattice[None], axis=-1).min(1) <= 4.0).all()
        assert tracks.visible[0, sel].mean() > 0.9
    # linear motion: the far disc's tracks move by f·vx/z pixels per frame
    far = tracks.object_index == 0
    step = np.diff(tracks.points[:, far, 0], axis=0)
    np.testing.assert_allclose(step, cams.K[0, 0, 0].item() * FAR["vx"] / FAR["z"], rtol=0.05)


def test_tracks_hidden_behind_the_near_object_are_not_visible(scene, tracks):
    objects, cams = scene
    f = cams.K[0, 0, 0].item()
    near_c = _project(np.array([NEAR["x0"] + 5 * NEAR["vx"], 0, NEAR["z"]]), cams)
    near_r = f * NEAR["radius"] / NEAR["z"]
    far = tracks.object_index == 0
    d = np.linalg.norm(tracks.points[5] - near_c, axis=1)
    hidden = far & (d < 0.6 * near_r)
    clear = far & (d > near_r + 2)
    assert hidden.sum() >= 3 and clear.sum() >= 3
    assert tracks.visible[0, hidden].all()  # seen when queried
    assert not tracks.visible[5, hidden].any()
    assert tracks.visible[5, clear].mean() > 0.9


def test_trajectory_video_draws_only_near_visible_tracks(tracks):
    trace = 3
    frames = np.full((T, H, W, 3), 128, np.uint8)
    out = trajectory_video(tracks, frames, trace=trace)
    assert out.shape == frames.shape and out.dtype == np.uint8
    changed = (out != frames).any(-1)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    for t in range(T):
        now = tracks.visible[t]
        assert now.any()
        cur = tracks.points[t, now]
        assert changed[t, cur[:, 1].astype(int), cur[:, 0].astype(int)].all()
        # every drawn pixel lies within a few pixels (dot radius 2 + antialiasing) of a visible
        # position, in the window, of a track visible now
        pts = [tracks.points[s, now & tracks.visible[s]] for s in range(max(0, t - trace), t + 1)]
        # densify the trails (segments between consecutive frames)
        seg = [a + (b - a) * w for s in range(max(0, t - trace), t)
               for a, b in [(tracks.points[s, now & tracks.visible[s] & tracks.visible[s + 1]],
                             tracks.points[s + 1, now & tracks.visible[s] & tracks.visible[s + 1]])]
               for w in np.linspace(0, 1, 9)]
        allp = np.concatenate(pts + seg)
        dist = np.sqrt((xx[..., None] - allp[:, 0]) ** 2 + (yy[..., None] - allp[:, 1]) ** 2).min(-1)
        assert changed[t].any() and not changed[t][dist > 5].any()
        assert (~changed[t]).sum() > 0


def test_tracks_npz_round_trip(tmp_path, tracks):
    tracks.save_npz(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(Tracks.KEYS)
        assert z["points"].dtype == np.float32 and z["visible"].dtype == bool
    back = Tracks.load_npz(tmp_path / "t.npz")
    for k in Tracks.KEYS:
        np.testing.assert_array_equal(getattr(back, k), getattr(tracks, k))


def test_write_bundle_writes_every_preview(tmp_path, scene, tracks, plate_and_view, rotating):
    objects, cams = scene
    plate, view = plate_and_view
    previews = {"input_view": view, "rotating": rotating,
                "trajectories": trajectory_video(tracks, np.ascontiguousarray(view[:, :, W:]), trace=3)}
    baked = [BakedObject(id=f"{k + 1:03d}", name=f"object_{k + 1:03d}", color=(0.5, 0.5, 0.5), frames=o,
                         visible=[True] * T,
                         canonical=CanonicalArrays(means=o.means[0], quats=o.quats[0], log_scales=o.log_scales[0],
                                                   colors=o.colors[0], opacities=o.opacities[0]))
             for k, o in enumerate(objects)]
    clip = fmt.ClipInfo(width=W, height=H, fps=12.0, frame_names=[f"{i:05d}.png" for i in range(T)],
                        frame_numbers=list(range(T)), source=str(tmp_path / "frames"))
    track, info = cams.to_bundle(W, H)
    run = fmt.RunInfo(optimizer="test", preset="test", device="cpu", iterations=0, guidance="disabled",
                      depth_source="none", duration_s=0.0)
    with pytest.raises(ValueError, match="trajectories_data"):
        write_bundle(tmp_path, "bad", clip=clip, camera=track, camera_info=info, objects=baked, run=run,
                     previews={"trajectories_data": plate})
    assert list(tmp_path.iterdir()) == []
    path = write_bundle(tmp_path, "shot", clip=clip, camera=track, camera_info=info, objects=baked, run=run,
                        previews=previews, tracks=tracks)
    b = fmt.open_bundle(path)
    assert b.manifest.previews == {"input_view": "preview/input_view.mp4", "rotating": "preview/rotating.mp4",
                                   "trajectories": "preview/trajectories.mp4",
                                   "trajectories_data": "preview/trajectories.npz"}
    assert json.loads((path / "manifest.json").read_text())["previews"] == b.manifest.previews
    import cv2

    for name, frames in previews.items():
        cap = cv2.VideoCapture(str(b.path(b.manifest.previews[name])))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
        assert n == len(frames) and size == (frames.shape[2], frames.shape[1])
    back = Tracks.load_npz(b.path(b.manifest.previews["trajectories_data"]))
    np.testing.assert_array_equal(back.gaussian_index, tracks.gaussian_index)
