"""A solved camera across the boundaries: Blender's camera solve to a camera file (core/camera.py,
core/camera_file.py), the backend's reader (backend/io/camera_file.py), the bundle's optional
``camera.solve`` (core/bundle.py) and what the Result panel says about it (core/solve_report.py)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.config import CameraSolveConfig
from backend.errors import InputError
from backend.io.camera_file import load_blender_cameras
from bundle_factory import make_bundle
from genmojo_blender.core import backend_process as bp
from genmojo_blender.core import bundle as fmt
from genmojo_blender.core import camera as cm
from genmojo_blender.core import solve_report
from genmojo_blender.core.camera_file import (MAX_CAMERA_FRAMES, MAX_SOURCE_CHARS, CameraFile, CameraFileError,
                                              read_camera_file, write_camera_file)

W, H, T = 320, 180, 6


def _blender_camera(t: int) -> np.ndarray:
    """A Blender camera matrix (looks down its -Z, +Y up) in a Z-up world, turning and moving."""
    a, b = 0.3 + 0.05 * t, 1.2 - 0.02 * t  # heading about Z, tilt about X
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    M = np.eye(4)
    M[:3, :3] = Rz @ Rx
    M[:3, 3] = [0.4 * t, -6.0 + 0.1 * t, 1.6]
    return M


def blender_pixels(M: np.ndarray, focal_px: float, principal_bl: tuple[float, float], points: np.ndarray):
    """Pixels (top-left origin, y down) of Blender-world points seen by a Blender camera ``M`` with the
    tracking camera's focal length and principal point (bottom-left origin, y up)."""
    local = (points - M[:3, 3]) @ M[:3, :3]
    x, y, z = local.T
    u = principal_bl[0] + focal_px * x / -z
    v_up = principal_bl[1] + focal_px * y / -z
    return np.stack([u, H - v_up], 1)


def test_blender_solve_projects_like_the_exported_opencv_camera():
    rng = np.random.default_rng(0)
    focal, principal = 410.0, (166.0, 84.0)
    K = cm.tracking_intrinsics(focal, principal, W, H)
    for t in range(T):
        M = _blender_camera(t)
        # points in front of the camera: along its -Z, spread sideways
        local = np.stack([rng.uniform(-2, 2, 20), rng.uniform(-1, 1, 20), -rng.uniform(3, 9, 20)], 1)
        world = local @ M[:3, :3].T + M[:3, 3]
        c2w = cm.blender_camera_to_opencv_c2w(M)[0]
        # the bundle's world is OpenCV's: Blender's points go there through the importer's root rotation
        cv_points = world @ np.linalg.inv(cm.OPENCV_WORLD_TO_BLENDER)[:3, :3].T
        uv, depth = cm.project_opencv(K, c2w, cv_points)
        np.testing.assert_allclose(uv, blender_pixels(M, focal, principal, world), atol=1e-9)
        np.testing.assert_allclose(depth, -local[:, 2], atol=1e-9)
        # and the importer's placement gives Blender's matrix back
        np.testing.assert_allclose(cm.OPENCV_WORLD_TO_BLENDER @ c2w @ cm.OPENCV_TO_BLENDER_CAMERA, M, atol=1e-12)


def test_tracking_intrinsics_refuse_what_the_bundle_cannot_hold():
    with pytest.raises(ValueError, match="pixel aspect"):
        cm.tracking_intrinsics(400.0, (160, 90), W, H, pixel_aspect=1.1)
    with pytest.raises(ValueError, match="focal length"):
        cm.tracking_intrinsics(0.0, (160, 90), W, H)


def _tracking(skip: tuple[int, ...] = ()) -> dict[int, cm.TrackingFrame]:
    frames = {}
    for t in range(T):
        if t in skip:
            continue
        M = _blender_camera(t)
        bundles = (np.array([[0.0, 0.0, -4.0], [0.5, 0.2, -6.0], [-0.5, 0.1, -5.0]]) @ M[:3, :3].T) + M[:3, 3]
        frames[t] = cm.TrackingFrame(matrix=M, error_px=0.2 + 0.1 * t, bundles=bundles)
    return frames


def test_camera_arrays_from_tracking_fill_the_frames_the_solve_skipped():
    arrays = cm.camera_arrays_from_tracking(_tracking(skip=(2, 5)), T)
    assert arrays["registered"].tolist() == [True, True, False, True, True, False]
    assert np.isnan(arrays["error_px"][[2, 5]]).all() and arrays["error_px"][3] == pytest.approx(0.5)
    assert arrays["points"].tolist() == [3, 3, 0, 3, 3, 0]
    assert arrays["point_depth"][0] == pytest.approx(5.0)
    expect = cm.blender_camera_to_opencv_c2w(np.stack([_blender_camera(t) for t in range(T)]))
    np.testing.assert_allclose(arrays["c2w"][[0, 1, 3, 4]], expect[[0, 1, 3, 4]], atol=1e-12)
    # frame 2 lies between 1 and 3: halfway in position; frame 5 holds frame 4's pose
    np.testing.assert_allclose(arrays["c2w"][2, :3, 3], (expect[1, :3, 3] + expect[3, :3, 3]) / 2, atol=1e-12)
    np.testing.assert_allclose(arrays["c2w"][5], arrays["c2w"][4])
    with pytest.raises(ValueError, match="no camera on frames"):
        cm.camera_arrays_from_tracking({9: _tracking()[0]}, T)


def _camera_file(skip=()) -> CameraFile:
    K = cm.tracking_intrinsics(410.0, (166.0, 84.0), W, H)
    return CameraFile(K=np.repeat(K[None], T, 0), width=W, height=H, source="blender camera solve of shot.mov",
                      **cm.camera_arrays_from_tracking(_tracking(skip), T))


def test_camera_file_round_trip_and_refusals(tmp_path):
    path = write_camera_file(tmp_path / "cam.npz", _camera_file(skip=(5,)))
    back = read_camera_file(path)
    np.testing.assert_allclose(back.c2w, _camera_file(skip=(5,)).c2w)
    assert back.registered.tolist() == [True] * 5 + [False] and back.source.endswith("shot.mov")
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed into place
    with pytest.raises(CameraFileError, match="camera file not found"):
        read_camera_file(tmp_path / "missing.npz")
    np.savez(tmp_path / "megasam.npz", depths=np.ones((T, 4, 4)), intrinsic=np.eye(3), cam_c2w=np.eye(4)[None])
    with pytest.raises(CameraFileError, match="--cam_path"):
        read_camera_file(tmp_path / "megasam.npz")
    bad = _camera_file()
    bad.c2w[1, :3, :3] *= 2.0
    with pytest.raises(CameraFileError, match="not rigid"):
        write_camera_file(tmp_path / "bad.npz", bad)
    assert not (tmp_path / "bad.npz").exists()


def _camera_arrays(folder: Path) -> dict:
    """The arrays write_camera_file stores, to damage one at a time."""
    path = write_camera_file(folder / "arrays.npz", _camera_file())
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _npy_member(shape: tuple, dtype: str, data: bytes) -> bytes:
    """A .npy whose header claims ``shape`` and ``dtype``, followed by ``data`` (any length)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name + ".npy", raw)
    return path


def test_damaged_camera_files_are_refused_before_their_data_is_read(tmp_path):
    """The camera file goes through bounded_io like the bundle: truncated, oversized claims, object and
    other foreign dtypes are refused naming the file and the array."""
    good = write_camera_file(tmp_path / "good.npz", _camera_file())
    raw = good.read_bytes()
    for cut, data in (("half", raw[:len(raw) // 2]), ("end", raw[:-40]), ("empty", b"")):
        (tmp_path / f"{cut}.npz").write_bytes(data)
        with pytest.raises(CameraFileError) as e:
            read_camera_file(tmp_path / f"{cut}.npz")
        assert str(e.value).startswith(f"{tmp_path / cut}.npz: ")
        assert ("unreadable npz" in str(e.value)) if cut != "empty" else "empty (0 bytes)" in str(e.value)
    arrays = _camera_arrays(tmp_path)

    def members(**changed) -> dict[str, bytes]:
        out = {}
        for k, v in {**arrays, **changed}.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(v), allow_pickle=True)
            out[k] = buf.getvalue()
        return out

    # a header that claims a billion frames over a few bytes of data: refused from the header alone
    huge = _zip(tmp_path / "huge.npz", {**members(), "K": _npy_member((10 ** 9, 3, 3), "<f8", b"\0" * 72)})
    with pytest.raises(CameraFileError, match=r"K has shape \(1000000000, 3, 3\): 1000000000 along T, more than the "
                                              f"{MAX_CAMERA_FRAMES}"):
        read_camera_file(huge)
    # a claim within the cap whose data is missing: the bytes are counted, not trusted
    short = _zip(tmp_path / "short.npz", {**members(), "c2w": _npy_member((T, 4, 4), "<f8", b"\0" * 64)})
    with pytest.raises(CameraFileError, match=f"unreadable npz \\(c2w: 64 of {T * 16 * 8} data bytes\\)"):
        read_camera_file(short)
    cases = {
        "object": (dict(K=np.array([None] * (T * 9), object).reshape(T, 3, 3)), "K has dtype '|O'; expected float"),
        "integer flags": (dict(registered=np.ones(T, np.int64)), "registered has dtype '<i8'; expected boolean"),
        "text poses": (dict(c2w=np.full((T, 4, 4), "1")), "c2w has dtype '<U1'; expected float"),
        "frame counts": (dict(c2w=arrays["c2w"][:-1]), f"c2w has shape ({T - 1}, 4, 4), expected ({T}, 4, 4)"),
        "long label": (dict(source=np.array("x" * (MAX_SOURCE_CHARS + 1))), f"at most {MAX_SOURCE_CHARS} characters"),
        "numeric format": (dict(format=np.array(7)), "format has dtype '<i8'"),
    }
    for case, (changed, message) in cases.items():
        path = _zip(tmp_path / f"{case}.npz", members(**changed))
        with pytest.raises(CameraFileError) as e:
            read_camera_file(path)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value), (case, str(e.value))
    assert read_camera_file(_zip(tmp_path / "rezipped.npz", members())).num_frames == T  # the same arrays read


def test_backend_reads_the_camera_file_at_the_fitting_size(tmp_path):
    path = write_camera_file(tmp_path / "cam.npz", _camera_file(skip=(5,)))
    warnings: list[str] = []
    cams = load_blender_cameras(path, T, (W, H), (160, 90), CameraSolveConfig(), 4.0, warn=warnings.append)
    np.testing.assert_allclose(cams.K[0], [[205.0, 0, 83.0], [0, 205.0, 90 - 42.0], [0, 0, 1]])
    assert cams.method == "blender" and cams.interpolated == [5]
    assert len(warnings) == 1 and "did not register frames 5" in warnings[0]
    assert cams.scene_depth == pytest.approx(5.0)  # the bundles' median distance, in Blender's units
    info = cams.solve_info()
    assert info.error_px[5] is None and info.error_px[0] == pytest.approx(0.2) and info.points[0] == 3
    with pytest.raises(InputError, match="6 cameras for a clip of 7 frames"):
        load_blender_cameras(path, 7, (W, H), (160, 90), CameraSolveConfig(), 4.0)
    with pytest.raises(InputError, match="is for 320x180 images, the clip is 640x480"):
        load_blender_cameras(path, T, (640, 480), (160, 120), CameraSolveConfig(), 4.0)
    with pytest.raises(InputError, match="registered 5 of 6"):
        load_blender_cameras(path, T, (W, H), (160, 90), CameraSolveConfig(max_unregistered_fraction=0.1), 4.0)


def _solve_info(frames: int) -> fmt.CameraSolveInfo:
    errors = [0.5, None, 1.5, 0.25] + [0.3] * (frames - 4)
    return fmt.CameraSolveInfo(method="colmap", registered=[e is not None for e in errors], error_px=errors,
                               points=[40, 0, 35, 50] + [30] * (frames - 4))


def test_bundle_carries_the_solve_and_reads_older_bundles(tmp_path):
    root = make_bundle(tmp_path, frames=4, preview=False)
    old = fmt.open_bundle(root)
    assert old.manifest.camera.solve is None and "solve" not in json.loads(old.manifest.to_json())["camera"]
    data = json.loads((root / "manifest.json").read_text())
    data["camera"]["solve"] = json.loads(json.dumps(_solve_info(4).__dict__))
    (root / "manifest.json").write_text(json.dumps(data))
    solve = fmt.open_bundle(root).manifest.camera.solve
    assert solve == _solve_info(4)
    assert json.loads(fmt.open_bundle(root).manifest.to_json())["camera"]["solve"]["error_px"][1] is None
    data["camera"]["solve"]["error_px"] = [0.5, -1.0, 1.5, 0.25]
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(fmt.BundleError, match="camera.solve.error_px"):
        fmt.open_bundle(root)
    data["camera"]["solve"]["error_px"] = [0.5, None, 1.5]
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(fmt.BundleError, match="expected 4 entries"):
        fmt.open_bundle(root)


def test_solve_report_names_the_worst_and_the_interpolated_frames():
    info = _solve_info(6)
    s = info.summary(worst=2)
    assert (s.min_px, s.max_px, s.worst_frames, s.interpolated) == (0.25, 1.5, [2, 0], [1])
    assert s.mean_px == pytest.approx((0.5 + 1.5 + 0.25 + 0.6) / 5)
    lines = solve_report.summary_lines(info, first_frame=1, worst=2)
    assert lines[0].startswith("Camera solve (COLMAP): 0.25 / 0.57 / 1.50 px")
    assert lines[1] == "Worst frames: 3, 1" and lines[2] == "Interpolated (not solved): 2"
    frames, errors = solve_report.error_keys(info, first_frame=1)
    assert frames == [1.0, 3.0, 4.0, 5.0, 6.0] and errors[:3] == [0.5, 1.5, 0.25]


def test_run_request_passes_the_camera_source(tmp_path):
    cam = tmp_path / "cam.npz"
    req = bp.RunRequest(data_dir=str(tmp_path), mask_dir=str(tmp_path), out_dir=str(tmp_path), save_name="r",
                        camera="blender", camera_file=str(cam))
    assert any("Export the camera solve first" in p for p in bp.validate_request(req))
    cam.write_bytes(b"x")
    argv = bp.backend_arguments(bp.build_argv("python", req))
    assert argv[argv.index("--camera") + 1] == "blender" and argv[argv.index("--camera_file") + 1] == str(cam)
    solve = bp.RunRequest(data_dir="d", mask_dir="m", out_dir="o", save_name="r", camera="solve")
    assert "--camera_file" not in bp.build_argv("python", solve)
    assert "--camera" not in bp.build_argv("python", bp.RunRequest(data_dir="d", mask_dir="m", out_dir="o",
                                                                   save_name="r"))
    both = bp.RunRequest(data_dir="d", mask_dir="m", out_dir="o", save_name="r", camera="solve", cam_path=str(cam))
    assert any("only used with the camera source Auto" in p for p in bp.validate_request(both))


def _fake_clip(skip=(), distortion=0.0):
    """A stand-in for a bpy MovieClip with a camera solve (the attributes export_camera_solve reads):
    clip frames are 1-based; one track is muted on frame 2, one has no bundle."""
    from types import SimpleNamespace as NS

    cams = [NS(frame=t + 1, matrix=[list(r) for r in _blender_camera(t)], average_error=0.2 + 0.1 * t)
            for t in range(T) if t not in skip]
    M0 = _blender_camera(0)
    tracks = []
    for i, local in enumerate(([0.0, 0.0, -4.0], [0.5, 0.2, -6.0], [-0.5, 0.1, -5.0])):
        bundle = np.array(local) @ M0[:3, :3].T + M0[:3, 3]
        markers = [NS(frame=f, mute=(i == 0 and f == 2)) for f in range(1, T + 1)]
        tracks.append(NS(has_bundle=True, bundle=tuple(bundle), markers=markers))
    tracks.append(NS(has_bundle=False, bundle=(0, 0, 0), markers=[NS(frame=1, mute=False)]))
    camera = NS(focal_length_pixels=410.0, principal_point_pixels=(166.0, 84.0), pixel_aspect=1.0,
                k1=distortion, k2=0.0, k3=0.0)
    return NS(name="shot", filepath="//footage/shot.mov", size=(W, H), frame_duration=T,
              tracking=NS(reconstruction=NS(is_valid=bool(cams), cameras=cams), tracks=tracks, camera=camera))


def test_export_camera_solve_reads_the_tracking_data(tmp_path):
    from genmojo_blender.blender.camera_solve_export import SolveExportError, export_camera_solve

    warnings: list[str] = []
    path, data = export_camera_solve(_fake_clip(skip=(4,), distortion=0.01), tmp_path / "cam.npz", warnings)
    assert any("k1" in w for w in warnings) and any("1 of 6 frames" in w for w in warnings)
    back = read_camera_file(path)
    assert back.registered.tolist() == [True, True, True, True, False, True]
    assert back.points.tolist() == [3, 2, 3, 3, 0, 3]  # the muted marker on clip frame 2 is frame 1
    assert back.error_px[1] == pytest.approx(0.3) and back.source == "blender camera solve of shot.mov"
    assert back.point_depth[0] == pytest.approx(5.0)
    np.testing.assert_allclose(back.c2w[3], cm.blender_camera_to_opencv_c2w(_blender_camera(3))[0], atol=1e-12)
    np.testing.assert_allclose(back.K[0], cm.tracking_intrinsics(410.0, (166.0, 84.0), W, H))
    with pytest.raises(SolveExportError, match="has no camera solve"):
        export_camera_solve(_fake_clip(skip=tuple(range(T))), tmp_path / "none.npz")


def test_bounded_reader_needs_a_cap_for_every_named_length(tmp_path):
    from genmojo_blender.core import bounded_io

    path = write_camera_file(tmp_path / "cam.npz", _camera_file())
    with pytest.raises(ValueError, match="no max_lengths entry for the named length 'T'"):
        bounded_io.read_npz(path, {"K": bounded_io.ArraySpec(("T", 3, 3), "f")})
    got = bounded_io.read_npz(path, {"K": bounded_io.ArraySpec(("T", 3, 3), "f"), "c2w": (T, 4, 4)},
                              max_lengths={"T": T})
    assert got["K"].shape == (T, 3, 3) and got["c2w"].dtype == np.float64
    with pytest.raises(bounded_io.Refused, match=f"{T} along T, more than the {T - 1}"):
        bounded_io.read_npz(path, {"K": bounded_io.ArraySpec(("T", 3, 3), "f")}, max_lengths={"T": T - 1})
