"""scripts/genmojo_headless.py with the bpy module: import-only, a full run against the fake backend,
failure exit codes, and argument handling (both ``ARGS`` and Blender's ``-- ARGS`` forms)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_factory import make_bundle
from test_blender_import import ROOT, run_bpy
from test_core_backend_process import fake_env, write_fake_backend

pytestmark = pytest.mark.blender

SCRIPT = ROOT / "scripts" / "genmojo_headless.py"


def headless(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=180)


def glb_json(path: Path) -> dict:
    data = path.read_bytes()
    n = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + n])


def blend_contents(path: Path) -> dict:
    return run_bpy(f"""
    bpy.ops.wm.open_mainfile(filepath={str(path)!r})
    s = bpy.context.scene
    emit(objects=sorted(o.name for o in bpy.data.objects), frames=[s.frame_start, s.frame_end],
         camera=s.camera.name if s.camera else None,
         keys={{o.name: len(o.data.shape_keys.key_blocks) for o in bpy.data.objects if o.type == "MESH"}},
         reps={{o.name: o.get("genmojo_representation") for o in bpy.data.objects if o.get("genmojo_object_id")}},
         faces={{o.name: len(o.data.polygons) for o in bpy.data.objects if o.get("genmojo_object_id")}})
    """)


def test_import_only_saves_blend_and_glb(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=3, preview=False)
    blend, glb = tmp_path / "o" / "shot.blend", tmp_path / "o" / "shot.glb"
    # Blender-style invocation: the script's arguments come after "--"
    cp = headless("--", "--import_only", str(b), "--blend", str(blend), "--glb", str(glb))
    assert cp.returncode == 0, cp.stderr
    doc = glb_json(glb)
    assert all(p["mode"] == 0 and "COLOR_0" in p["attributes"] and len(p["targets"]) == 3
               for m in doc["meshes"] for p in m["primitives"])
    got = blend_contents(blend)
    assert got["objects"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert got["frames"] == [1, 3] and got["camera"] == "shot_camera"
    assert got["keys"] == {"shot_object_001": 4, "shot_object_002": 4}
    assert got["reps"] == {"shot_object_001": "POINTS", "shot_object_002": "POINTS"}
    # a second run to the same .glb is refused before any work, the file untouched; the flag allows it
    before = glb.stat().st_mtime_ns
    cp = headless("--import_only", str(b), "--glb", str(glb))
    assert cp.returncode == 2 and f"--glb {glb} already exists" in cp.stderr and "--overwrite_exports" in cp.stderr
    assert glb.stat().st_mtime_ns == before
    cp = headless("--import_only", str(b), "--glb", str(glb), "--fbx", str(tmp_path / "o" / "shot.fbx"),
                  "--overwrite_exports")
    assert cp.returncode == 0, cp.stderr
    assert glb.stat().st_mtime_ns != before and (tmp_path / "o" / "shot.fbx").is_file()
    cp = headless("--import_only", str(b), "--fbx", str(tmp_path / "o" / "shot.fbx"))
    assert cp.returncode == 2 and "already exists" in cp.stderr


def test_import_only_with_another_representation(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=2, preview=False)
    blend = tmp_path / "splats.blend"
    cp = headless("--import_only", str(b), "--representation", "SPLATS", "--blend", str(blend))
    assert cp.returncode == 0, cp.stderr
    assert blend_contents(blend)["reps"] == {"shot_object_001": "SPLATS", "shot_object_002": "SPLATS"}


def test_full_run_through_the_operator_with_a_fake_backend(tmp_path):
    for d in ("clip", "masks"):
        (tmp_path / d).mkdir()
    argv_file = tmp_path / "argv.json"
    fake_dir = write_fake_backend(tmp_path / "fake")
    blend = tmp_path / "shot.blend"
    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--save_name", "shot", "--preset", "cpu-tiny",
                  "--device", "cpu", "--fps", "12", "--backend_path", str(fake_dir), "--blend", str(blend),
                  env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--preset") + 1] == "cpu-tiny" and argv[argv.index("--device") + 1] == "cpu"
    assert "--disable_guidance" in argv and argv[argv.index("--fps") + 1] == "12"
    assert "[GenMOJO] done" in cp.stdout and "[backend] fake backend starting" in cp.stderr
    got = blend_contents(blend)
    assert got["objects"] == ["shot_camera", "shot_object_001", "shot_object_002", "shot_root"]
    assert got["frames"] == [1, 2]


def test_guidance_flag_is_passed_through(tmp_path):
    for d in ("clip", "masks"):
        (tmp_path / d).mkdir()
    argv_file = tmp_path / "argv.json"
    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--guidance",
                  "--backend_path", str(write_fake_backend(tmp_path / "fake")),
                  env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert cp.returncode == 0, cp.stderr
    assert "--disable_guidance" not in json.loads(argv_file.read_text())


def test_guidance_model_depth_and_representation_pass_through(tmp_path):
    for d in ("clip", "masks", "depth maps"):
        (tmp_path / d).mkdir()
    argv_file = tmp_path / "argv.json"
    blend = tmp_path / "mesh.blend"
    # a hub id implies --guidance; the import representation applies to the run's result too
    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--save_name", "shot", "--preset", "cpu-tiny",
                  "--guidance_model", "ashawkey/zero123-xl-diffusers", "--guidance_variant", "zero123-xl",
                  "--depth_dir", str(tmp_path / "depth maps"), "--depth_is_disparity",
                  "--representation", "mesh", "--surface_resolution", "16", "--surface_threshold", "0.3",
                  "--backend_path", str(write_fake_backend(tmp_path / "fake")), "--blend", str(blend),
                  env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads(argv_file.read_text())
    assert argv == ["--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                    "--save_name", "shot", "--out_dir", str(tmp_path / "out"), "--preset", "cpu-tiny",
                    "--device", "auto", "--guidance_model", "ashawkey/zero123-xl-diffusers",
                    "--guidance_variant", "zero123-xl", "--depth_dir", str(tmp_path / "depth maps"),
                    "--depth_is_disparity", "--fps", "24"]
    got = blend_contents(blend)
    assert got["reps"] == {"shot_object_001": "MESH", "shot_object_002": "MESH"}
    assert all(n > 0 for n in got["faces"].values())

    # a local depth model folder, guidance left off
    model = tmp_path / "depth-anything"
    model.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        (model / f).write_text("{}")
    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--save_name", "shot2", "--depth_model", str(model),
                  "--backend_path", str(write_fake_backend(tmp_path / "fake")),
                  env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--device") + 2:] == ["--disable_guidance", "--depth_model", str(model), "--fps", "24"]


def test_backend_failure_exits_with_its_status_and_message(tmp_path):
    for d in ("clip", "masks"):
        (tmp_path / d).mkdir()
    blend = tmp_path / "never.blend"
    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--backend_path", str(write_fake_backend(tmp_path / "f")),
                  "--blend", str(blend), env=fake_env("fail"))
    assert cp.returncode == 2
    assert "mask folder has no masks" in cp.stderr and "put one PNG per frame in it" in cp.stderr
    assert not blend.exists()

    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--backend_path", str(write_fake_backend(tmp_path / "f")),
                  env=fake_env("crash"))
    assert cp.returncode == 1
    assert "CUDA error: out of memory" in cp.stderr


def test_bad_arguments_and_bad_bundles_exit_2(tmp_path):
    cp = headless("--data_dir", str(tmp_path))
    assert cp.returncode == 2 and "--mask_dir" in cp.stderr
    cp = headless("--import_only", str(tmp_path / "missing"))
    assert cp.returncode == 2 and "not a GenMOJO result folder" in cp.stderr
    cp = headless("--data_dir", str(tmp_path / "nope"), "--mask_dir", str(tmp_path), "--out_dir", str(tmp_path))
    assert cp.returncode == 2 and "Clip not found" in cp.stderr
    inputs = ("--data_dir", str(tmp_path), "--mask_dir", str(tmp_path), "--out_dir", str(tmp_path / "o"))
    for args, text in ((("--disable_guidance", "--guidance_model", "a/b"), "conflicts with"),
                       (("--depth_dir", str(tmp_path), "--depth_model", str(tmp_path)), "not allowed with"),
                       (("--depth_is_disparity",), "--depth_is_disparity needs --depth_dir"),
                       (("--representation", "voxels"), "invalid choice"),
                       (("--surface_resolution", "4"), "--surface_resolution must be")):
        cp = headless(*inputs, *args)
        assert cp.returncode == 2 and text in cp.stderr, (args, cp.stderr)
    # folders that do not exist are named before the backend starts
    cp = headless(*inputs, "--guidance_model", str(tmp_path / "no model"), "--depth_dir", str(tmp_path / "no d"))
    assert cp.returncode == 2
    assert f"Guidance model folder not found: {tmp_path / 'no model'}" in cp.stderr
    assert f"Depth maps folder not found: {tmp_path / 'no d'}" in cp.stderr


def test_import_only_with_the_cache_and_splat_exports(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=2, objects=1, gaussians=20, preview=False)
    o = tmp_path / "o"
    flags = ["--usd", str(o / "shot.usdc"), "--abc", str(o / "shot.abc"), "--ply_dir", str(o / "ply"),
             "--ply_merged", "--gltf_splats", str(o / "glb" / "shot.glb"), "--usd_splats", str(o / "shot.usda")]
    cp = headless("--import_only", str(b), *flags)
    assert cp.returncode == 0, cp.stderr
    for rel in ("shot.usdc", "shot.abc", "shot.usda", "ply/shot_object_001/shot_object_001_0001.ply",
                "ply/shot_object_001/shot_object_001_0002.ply", "ply/all_objects/all_objects_0002.ply",
                "glb/shot_0001.glb", "glb/shot_0002.glb"):
        assert (o / rel).is_file() and (o / rel).stat().st_size > 0, rel
    before = (o / "shot.abc").stat().st_mtime_ns
    # a single-file target in the way is refused while the arguments are read (before any work) ...
    cp = headless("--import_only", str(b), "--abc", str(o / "shot.abc"))
    assert cp.returncode == 2 and "already exists" in cp.stderr and "--overwrite_exports" in cp.stderr
    # ... a sequence in the way when its file names are known; neither touches the files
    cp = headless("--import_only", str(b), "--ply_dir", str(o / "ply"))
    assert cp.returncode == 1 and "already exist" in cp.stderr and "Overwrite" in cp.stderr
    assert (o / "shot.abc").stat().st_mtime_ns == before
    cp = headless("--import_only", str(b), "--abc", str(o / "shot.abc"), "--overwrite_exports")
    assert cp.returncode == 0, cp.stderr
    cp = headless("--import_only", str(b), "--usd_splats", str(o / "x.usd"))
    assert cp.returncode == 2 and "must end in .usda" in cp.stderr


def _fake_python(folder: Path, cuda: bool) -> Path:
    """A backend interpreter that answers the extension's CUDA probe itself (``cuda``) and runs
    everything else with this test's Python."""
    folder.mkdir(parents=True, exist_ok=True)
    py = folder / "python"
    answer = json.dumps({"torch": "9.9-fake", "cuda": cuda, "devices": ["Fake GPU"] if cuda else []})
    py.write_text("#!/bin/sh\n"
                  f"case \"$2\" in *torch.cuda.is_available*) echo '{answer}'; exit 0;; esac\n"
                  f"exec {sys.executable} \"$@\"\n")
    py.chmod(0o755)
    return py


@pytest.mark.parametrize("cuda, chosen", [(False, "cpu-tiny"), (True, "lite")])
def test_the_default_preset_is_auto_chosen_by_the_backends_cuda(tmp_path, cuda, chosen):
    for d in ("clip", "masks"):
        (tmp_path / d).mkdir()
    argv_file = tmp_path / "argv.json"
    cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                  "--out_dir", str(tmp_path / "out"), "--save_name", "shot",
                  "--backend_python", str(_fake_python(tmp_path / "py", cuda)),
                  "--backend_path", str(write_fake_backend(tmp_path / "fake")),
                  env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--preset") + 1] == chosen
    why = "with CUDA (Fake GPU)" if cuda else "without CUDA (CPU only)"
    assert f"[GenMOJO] Preset Auto: {chosen} (the backend's PyTorch 9.9-fake {why})" in cp.stdout, cp.stdout


def test_an_explicit_device_or_preset_decides_without_the_probe(tmp_path):
    for d in ("clip", "masks"):
        (tmp_path / d).mkdir()
    argv_file = tmp_path / "argv.json"
    common = ("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
              "--out_dir", str(tmp_path / "out"), "--backend_python", str(_fake_python(tmp_path / "py", True)),
              "--backend_path", str(write_fake_backend(tmp_path / "fake")))
    env = fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2")
    cp = headless(*common, "--save_name", "a", "--device", "cpu", env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--preset") + 1] == "cpu-tiny"
    assert "Preset Auto: cpu-tiny (the device is set to cpu)" in cp.stdout
    cp = headless(*common, "--save_name", "b", "--preset", "full", env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--preset") + 1] == "full" and "Preset Auto" not in cp.stdout


def test_render_setup_floor_and_real_height_after_the_import(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=4, objects=2, gaussians=200, preview=False)
    blend = tmp_path / "ready.blend"
    cp = headless("--import_only", str(b), "--render_setup", "--floor", "--real_height", "shot_object_001=1.8",
                  "--blend", str(blend))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    order = [cp.stdout.index(f"[GenMOJO] applied {what}") for what in
             ("the render set-up", "the floor", "the real height of shot_object_001")]
    assert order == sorted(order)
    got = run_bpy(f"""
    enable()
    from genmojo_blender.blender import floor_scale, importer
    from genmojo_blender.core import scene_scale as ss
    bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
    scene = bpy.context.scene
    rig = floor_scale.rig_of(importer.scene_imports(scene)[0])
    contacts = ss.contact_points([floor_scale.object_frames(o)[:2] for o in rig.objects]).T[2]
    ground = bpy.data.objects["shot_shadow_catcher"]
    emit(engine=scene.render.engine, catcher=ground.is_shadow_catcher, ground_z=ground.matrix_world.translation.z,
         height=floor_scale.measured_height(bpy.data.objects["shot_object_001"]),
         floor=[float(np.median(contacts)), float(np.abs(contacts).max())])
    """)
    assert got["engine"] == "CYCLES" and got["catcher"]
    assert abs(got["height"] - 1.8) < 1e-3
    # the floor, and the shadow catcher laid on it, at Z = 0
    assert abs(got["floor"][0]) < 0.05 * 1.8 and abs(got["ground_z"]) < 0.05 * 1.8


def test_bad_render_flags_are_refused(tmp_path):
    b = make_bundle(tmp_path, save_name="shot", frames=2, preview=False)
    blend = tmp_path / "never.blend"
    cp = headless("--import_only", str(b), "--real_height", "shot_object_009=1.8", "--blend", str(blend))
    assert cp.returncode == 2 and "the result has no object 'shot_object_009'" in cp.stderr
    assert "shot_object_001, shot_object_002" in cp.stderr and not blend.exists()
    # a malformed value is refused while the arguments are read: the backend never starts
    for d in ("clip", "masks"):
        (tmp_path / d).mkdir()
    argv_file = tmp_path / "argv.json"
    for value, text in (("1.8", "give OBJECT=METRES"), ("shot_object_001=tall", "'tall' is not a number of metres"),
                        ("shot_object_001=0", "at least 0.001"), ("shot_object_001=inf", "finite number")):
        cp = headless("--data_dir", str(tmp_path / "clip"), "--mask_dir", str(tmp_path / "masks"),
                      "--out_dir", str(tmp_path / "out"), "--real_height", value,
                      "--backend_path", str(write_fake_backend(tmp_path / "fake")),
                      env=fake_env("ok", FAKE_ARGV_FILE=str(argv_file), FAKE_FRAMES="2"))
        assert cp.returncode == 2 and text in cp.stderr, (value, cp.stderr)
        assert not argv_file.exists() and not (tmp_path / "out").exists()
