"""The backend as users run it: the command line, its events, its result and its refusals (CPU)."""

import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from genmojo_blender.core.bundle import open_bundle
from genmojo_blender.core.protocol import decode_event

FLAGS = ["--data_dir", "--mask_dir", "--save_name", "--out_dir", "--lite", "--disable_guidance", "--cam_path",
         "--bg_path", "--device", "--preset", "--overwrite", "--fps", "--iters"]


def backend(*args, timeout=600):
    """Run ``python -m backend`` and return (exit code, decoded events, stderr)."""
    p = subprocess.run([sys.executable, "-m", "backend", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, [decode_event(line) for line in p.stdout.splitlines()], p.stderr


def clip_args(clip, out, name="run"):
    return ["--data_dir", clip / "JPEGImages", "--mask_dir", clip / "Annotations", "--out_dir", out,
            "--save_name", name]


def test_help_documents_every_flag():
    p = subprocess.run([sys.executable, "-m", "backend", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0
    for flag in FLAGS:
        assert flag in p.stdout


@pytest.fixture(scope="module")
def tiny_run(sample_clip_master, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code, events, err = backend(*clip_args(sample_clip_master, out), "--preset", "cpu-tiny", "--device", "cpu",
                                "--iters", 60)
    return code, events, err, out


def test_tiny_pipeline_emits_protocol_and_writes_a_bundle(tiny_run):
    code, events, err, out = tiny_run
    assert code == 0, err
    types = [e.type for e in events]
    assert types[0] == "start" and types[-1] == "done"
    stages = [e.get("stage") for e in events if e.type == "stage" and e.get("status") == "begin"]
    assert stages == events[0].get("stages") == ["validate", "init", "objects", "fit", "bake", "write"]
    progress = [e for e in events if e.type == "progress" and e.get("stage") == "fit"]
    assert progress and progress[-1].get("step") == progress[-1].get("total") == 60
    assert all(set(e.get("losses")) >= {"rgb", "alpha", "flow", "rigidity", "total"} for e in progress)
    assert "instance" in progress[-1].get("losses")  # on in the last quarter
    b = open_bundle(events[-1].get("bundle"))
    m = b.manifest
    assert [o.id for o in m.objects] == ["001", "002", "003"] and m.clip.frame_count == 8
    assert m.run.optimizer == "genmojo" and m.run.iterations == 60 and m.run.guidance == "disabled"
    for name in ("input_view", "rotating", "trajectories", "trajectories_data"):
        assert (b.root / m.previews[name]).stat().st_size > 0
    assert "fit at 64x64" in err  # human logs on stderr, never on stdout


def test_fit_reduces_the_loss(tiny_run):
    """Reconstruction errors fall in both stages (losses are ramped by step/total: undo it to compare)."""
    code, events, _, _ = tiny_run
    for k in range(3):  # stage 1, each object's own 60 steps
        obj = [e for e in events if e.type == "progress" and e.get("stage") == "objects"
               and k * 60 < e.get("step") <= (k + 1) * 60]
        assert obj[-1].get("step") == (k + 1) * 60  # each object's last step is always reported
        err = [e.get("losses")["rgb"] * 60 / (e.get("step") - k * 60) for e in obj]
        assert err[-1] < 0.9 * err[0]
    fit = [e for e in events if e.type == "progress" and e.get("stage") == "fit"]
    rgb = [e.get("losses")["rgb"] * e.get("total") / e.get("step") for e in fit]
    assert len(rgb) >= 20 and np.mean(rgb[-10:]) < 0.8 * np.mean(rgb[:10])


def assert_objects_follow_masks(bundle_path, clip):
    """Each object's baked Gaussians, projected through the bundle camera, sit on its mask per frame."""
    import cv2

    b = open_bundle(bundle_path)
    cam = b.load_camera()
    for obj in b.manifest.objects:
        fr = b.load_frames(obj)
        for t, name in enumerate(b.manifest.clip.frame_names):
            mask = cv2.imread(str(clip / "Annotations" / obj.id / name), cv2.IMREAD_GRAYSCALE) > 127
            w2c = np.linalg.inv(cam.c2w[t])
            pc = fr.means[t] @ w2c[:3, :3].T + w2c[:3, 3]
            uv = pc[:, :2] / pc[:, 2:] * np.diag(cam.K[t])[:2] + cam.K[t][:2, 2]
            centre = np.average(uv, axis=0, weights=fr.opacities[t])
            ys, xs = np.nonzero(mask)
            # the opacity-weighted centre of the object's Gaussians is near its mask's centre (px);
            # occlusion hides parts of the mask, so the tolerance is a fraction of the object's size
            size = max(np.ptp(xs), np.ptp(ys)) + 1
            assert np.hypot(*(centre - [xs.mean() + 0.5, ys.mean() + 0.5])) < 0.35 * size, (obj.id, t)
            h, w = mask.shape
            inside = mask[np.clip(uv[:, 1].astype(int), 0, h - 1), np.clip(uv[:, 0].astype(int), 0, w - 1)]
            if obj.id == "003":  # the front-most object is never occluded: most of its opacity lands on its mask
                assert np.average(inside, weights=fr.opacities[t]) > 0.5, t


def test_objects_follow_their_masks(tiny_run, sample_clip_master):
    code, events, _, _ = tiny_run
    assert_objects_follow_masks(events[-1].get("bundle"), sample_clip_master)


def _no_heavy_stage(events):
    return not any(e.type == "stage" and e.get("stage") == "fit" for e in events)


@pytest.mark.parametrize("extra, message", [
    (["--preset", "lite"], "score-distillation guidance"),
    (["--preset", "cpu-tiny", "--save_name", "a/b"], "not a plain folder name"),
    (["--preset", "cpu-tiny", "--cam_path", "cams.npz"], "cams.npz: camera file not found"),
    (["--preset", "cpu-tiny", "--bg_path", "bg.png"], "--bg_path bg.png: background mode"),
    (["--preset", "cpu-tiny", "--progress_every_s", "-1"], "--progress_every_s must be 0 or more"),
    (["--preset", "cpu-tiny", "--set", "stage2.scale_init=bbox"], "stage2.scale_init 'bbox' is unknown"),
    (["--preset", "cpu-tiny", "--set", "stage2.lr_scale=-0.001"], "stage2.lr_scale -0.001"),
    pytest.param(["--preset", "cpu-tiny", "--device", "cuda"], "--device cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_refusals_come_before_any_work(sample_clip, tmp_path, extra, message):
    code, events, err = backend(*clip_args(sample_clip, tmp_path / "out"), *extra)
    assert code == 2
    failed = events[-1]
    assert failed.type == "failed" and failed.get("kind") == "input" and failed.get("hint")
    assert message in failed.get("error")
    assert _no_heavy_stage(events)


def test_conflicting_preset_flags_are_refused(sample_clip, tmp_path):
    code, _, err = backend(*clip_args(sample_clip, tmp_path / "out"), "--preset", "full", "--lite")
    assert code == 2 and "--lite conflicts with --preset full" in err


def test_bad_masks_fail_with_the_file_named(sample_clip, tmp_path):
    (sample_clip / "Annotations/002/00003.png").unlink()
    code, events, _ = backend(*clip_args(sample_clip, tmp_path / "out"), "--preset", "cpu-tiny")
    assert code == 2 and "Annotations/002" in events[-1].get("error") and _no_heavy_stage(events)
    assert not (tmp_path / "out" / "run").exists()


def test_existing_result_needs_overwrite(sample_clip, tmp_path):
    target = tmp_path / "out" / "run"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("artist's notes")
    code, events, _ = backend(*clip_args(sample_clip, tmp_path / "out"), "--preset", "cpu-tiny")
    assert code == 2 and "--overwrite" in events[-1].get("hint")
    assert (target / "keep.txt").read_text() == "artist's notes"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_ends_at_the_next_steps_and_keeps_a_checkpoint(sample_clip, tmp_path, sig):
    """A stop request is honoured at a step boundary: the run ends a few steps after the signal (not at
    the end of its 100 000 iterations), says where, and keeps its checkpoint. Counted in steps, not
    seconds, so a loaded machine cannot fail it."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "backend", *map(str, clip_args(sample_clip, out)), "--preset",
                          "cpu-tiny", "--iters", "100000"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        for line in p.stdout:
            ev = decode_event(line)
            if ev.type == "progress" and ev.get("stage") == "fit":
                break
        signalled_at = int(ev.get("step"))
        p.send_signal(sig)
        rest = p.stdout.read()
        code = p.wait(timeout=60)  # a run that ignored the signal would go on for its 100 000 iterations
    finally:
        if p.poll() is None:
            p.kill()
    assert code == 130
    last = decode_event(rest.strip().splitlines()[-1])
    assert last.type == "failed" and last.get("kind") == "cancelled" and "--resume" in last.get("hint")
    stopped_at = int(re.search(r"stopped at step (\d+) of 100000", last.get("error")).group(1))
    assert signalled_at <= stopped_at <= signalled_at + 50
    assert not (out / "run").exists() and not [q for q in out.iterdir() if "partial" in q.name]
    assert (out / ".run.checkpoint" / "state.pt").is_file()  # the work done so far is kept


def test_config_presets_are_complete_and_printable():
    from backend.config import PRESETS

    for name, cfg in PRESETS.items():
        d = json.loads(cfg.to_json())
        assert d["preset"] == name
        assert set(d) >= {"input", "camera", "init", "fit", "losses", "guidance", "seed"}
        assert cfg.fit.iterations(52) >= cfg.fit.min_iterations
    assert PRESETS["lite"].fit.iterations(52) == 30 * 52 and PRESETS["full"].fit.iterations(52) == 40 * 52


def test_evaluation_of_the_tiny_run(tiny_run, sample_clip_master):
    """The imported result reproduces the masks: per-object IoU and masked PSNR of the bundle's render."""
    from backend.evaluate import evaluate_bundle

    code, events, _, _ = tiny_run
    res = evaluate_bundle(events[-1].get("bundle"), sample_clip_master / "JPEGImages",
                          sample_clip_master / "Annotations")
    assert len(res["per_frame"]) == 8
    # a 60-step CPU fit (the GPU figures are in docs/results.md). Silhouettes on their masks: with the spec's
    # balancing (stage2.spill_weighted=false) this run's renders spill 24-26 % (area ratio 1.19-1.21, IoU
    # 0.77-0.79); spill-weighted, 6-10 % (0.98-1.05, IoU 0.85-0.87). The masked PSNR, which a spilled render's
    # cover of the mask's edge raises, was 16.1 dB then and 15.4 dB now
    s = res["summary"]
    assert all(v > 0.8 for v in s["iou"].values()), s
    assert all(v < 1.12 for v in s["area_ratio"].values()), s
    assert s["psnr_masked"] > 14.5, s


def test_object_entering_late_and_no_background_folder(sample_clip, tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(sample_clip / f"Annotations/002/{i:05d}.png"), np.zeros((64, 64), np.uint8))
    for p in (sample_clip / "Annotations/000").iterdir():
        p.unlink()
    (sample_clip / "Annotations/000").rmdir()
    code, events, err = backend(*clip_args(sample_clip, tmp_path), "--preset", "cpu-tiny", "--iters", 10)
    assert code == 0, err
    m = open_bundle(events[-1].get("bundle")).manifest
    assert m.objects[1].visible == [False] * 3 + [True] * 5 and all(m.objects[0].visible)


def test_unwritable_output_folder_is_refused(sample_clip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, events, _ = backend(*clip_args(sample_clip, blocker / "out"), "--preset", "cpu-tiny")
    assert code == 2 and "cannot create the output folder" in events[-1].get("error")
    assert blocker.read_text() == "not a folder"


def test_set_overrides_one_typed_config_value_and_refuses_typos():
    from backend.config import get_preset, parse_assignment

    cfg = get_preset("lite")
    c2 = parse_assignment(cfg, "stage2.w_rigid=20000")
    assert c2.stage2.w_rigid == 20000.0 and isinstance(c2.stage2.w_rigid, float)
    assert parse_assignment(cfg, "stage2.parity_instance_object0=true").stage2.parity_instance_object0 is True
    assert parse_assignment(cfg, "deformation.grid_resolutions=[32,64]").deformation.grid_resolutions == (32, 64)
    assert parse_assignment(cfg, "seed=3").seed == 3 and parse_assignment(cfg, "method=skeleton").method == "skeleton"
    assert cfg.stage2.w_rigid == 50000.0  # presets are never modified
    for bad, msg in (("stage2.w_rigd=1", "no field 'w_rigd'"), ("stag2.w_rigid=1", "no config section"),
                     ("stage2.knn=1.5", "expected int"), ("stage2.ramp=1", "expected bool"),
                     ("stage2=1", "is a section"), ("stage2.knn", "section.field=value")):
        with pytest.raises(ValueError, match=msg):
            parse_assignment(cfg, bad)


def test_set_flag_reaches_the_printed_config(sample_clip, tmp_path):
    code, _, err = backend(*clip_args(sample_clip, tmp_path / "o"), "--preset", "cpu-tiny", "--set",
                           "stage2.w_rigid=123", "--set", "nonsense.x=1", "--print_config")
    assert code == 2 and "no config section 'nonsense'" in err
