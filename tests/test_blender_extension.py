"""Packaging and registration: the manifest validates, the built zip installs into a clean Blender
user folder and registers everything, and enabling/disabling leaves nothing behind."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_blender_import import ROOT, run_bpy

pytestmark = pytest.mark.blender


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_extension", ROOT / "scripts" / "build_extension.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build_extension = _load_build_script()


def _validate(folder: Path) -> subprocess.CompletedProcess:
    cli, tags = build_extension.find_blender_ext()
    return subprocess.run([sys.executable, str(cli), "validate", "--valid-tags", str(tags), str(folder)],
                          capture_output=True, text=True)


def test_manifest_validates_with_blenders_tag_list(tmp_path):
    staged = build_extension.stage(tmp_path)
    assert (staged / "__init__.py").is_file() and (staged / "blender_manifest.toml").is_file()
    cp = _validate(staged)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    m = build_extension.read_manifest()
    assert m["id"] == "genmojo" and m["schema_version"] == "1.0.0"
    assert tuple(int(x) for x in m["blender_version_min"].split(".")) >= (4, 4, 0)
    assert "files" in m["permissions"]


@pytest.mark.parametrize("bad", [
    ('tagline = "Turn a video and object masks into animated Gaussian objects"',
     'tagline = "Turn a video and object masks into animated Gaussian objects."'),
    ('tags = ["Import-Export", "Animation", "Camera"]', 'tags = ["Import-Export", "Gaussians"]'),
])
def test_validator_rejects_a_broken_manifest(tmp_path, bad):
    """The validation above is meaningful: the same check fails on small manifest mistakes."""
    staged = build_extension.stage(tmp_path)
    text = (staged / "blender_manifest.toml").read_text()
    assert bad[0] in text
    (staged / "blender_manifest.toml").write_text(text.replace(bad[0], bad[1]))
    assert _validate(staged).returncode != 0


def test_zip_installs_into_a_clean_user_folder_and_registers(tmp_path):
    cli, tags = build_extension.find_blender_ext()
    zip_path = build_extension.build(tmp_path / "dist", cli, tags)
    m = build_extension.read_manifest()
    assert zip_path.name == f"genmojo-{m['version']}.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "core/bundle.py" in names and not any("__pycache__" in n for n in names)

    from bundle_factory import make_bundle
    bundle = make_bundle(tmp_path / "results", save_name="shot", frames=3, objects=2, gaussians=30,
                         preview=False)
    env = dict(os.environ)
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "user")
    env["HOME"] = str(tmp_path / "home")
    out = run_bpy(f"""
    import sys
    sys.path[:] = [p for p in sys.path if p not in ({str(ROOT)!r}, {str(ROOT / 'tests')!r})]
    res = bpy.ops.extensions.package_install_files(repo="user_default", filepath={str(zip_path)!r},
                                                   enable_on_install=True)
    prefs = bpy.context.preferences.addons.get("bl_ext.user_default.genmojo")
    import bl_ext.user_default.genmojo as pkg
    ops = [name for name in ("run_backend", "cancel_backend", "import_result", "export_glb",
                             "export_fbx", "check_backend") if hasattr(bpy.ops.genmojo, name)
           and bpy.ops.genmojo.__getattr__(name).idname() in dir(bpy.types)]
    imported = sorted(bpy.ops.genmojo.import_result(filepath={str(bundle / 'manifest.json')!r},
                                                    object_representations="002=SPLATS"))
    reps = {{o.name: o.get("genmojo_representation") for o in bpy.data.objects if o.get("genmojo_object_id")}}
    emit(result=sorted(res), enabled=prefs is not None, imported=imported, reps=reps,
         has_prefs=prefs is not None and hasattr(prefs.preferences, "backend_python"),
         ops=ops, panel=hasattr(bpy.types, "GENMOJO_PT_main"),
         scene_props=hasattr(bpy.types.Scene, "genmojo"), wm_props=hasattr(bpy.types.WindowManager, "genmojo_run"),
         pkg_file=pkg.__file__, user=bpy.utils.resource_path("USER"),
         loaded_from_repo="genmojo_blender" in sys.modules)
    """, env=env)
    assert out["result"] == ["FINISHED"]
    assert out["enabled"] and out["has_prefs"]
    assert out["ops"] == ["run_backend", "cancel_backend", "import_result", "export_glb", "export_fbx",
                          "check_backend"]
    assert out["panel"] and out["scene_props"] and out["wm_props"]
    assert out["pkg_file"].startswith(str(tmp_path / "user"))
    assert not out["loaded_from_repo"]
    # an operator of the installed package does real work
    assert out["imported"] == ["FINISHED"]
    assert out["reps"] == {"shot_object_001": "POINTS", "shot_object_002": "SPLATS"}


def test_enable_disable_cycle_leaves_nothing_registered():
    out = run_bpy("""
    import addon_utils
    enable()
    during = [hasattr(bpy.types, n) for n in ("GENMOJO_OT_run_backend", "GENMOJO_PT_main", "GENMOJO_OT_import_result")]
    menu_items = len(bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize())
    addon_utils.disable("genmojo_blender", default_set=True)
    after = [hasattr(bpy.types, n) for n in ("GENMOJO_OT_run_backend", "GENMOJO_PT_main", "GENMOJO_OT_import_result")]
    props = [hasattr(bpy.types.Scene, "genmojo"), hasattr(bpy.types.WindowManager, "genmojo_run")]
    menu_after = len(bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize())
    enable()
    emit(during=during, after=after, props=props, menu_delta=menu_items - menu_after,
         again=hasattr(bpy.types.Scene, "genmojo"))
    """)
    assert out["during"] == [True, True, True]
    assert out["after"] == [False, False, False]
    assert out["props"] == [False, False]
    assert out["menu_delta"] == 1
    assert out["again"]


def test_scene_settings_register_guidance_and_depth_fields():
    out = run_bpy("""
    enable()
    rna = bpy.types.Scene.bl_rna.properties["genmojo"].fixed_type.properties
    fields = {}
    for name in ("guidance_model", "guidance_variant", "depth_dir", "depth_is_disparity", "depth_model"):
        p = rna[name]
        fields[name] = dict(type=p.type, subtype=p.subtype,
                            default=getattr(p, "default", None) if p.type != "ENUM" else p.default,
                            items=[i.identifier for i in p.enum_items] if p.type == "ENUM" else None)
    emit(fields=fields)
    """)
    f = out["fields"]
    assert f["guidance_model"] == dict(type="STRING", subtype="DIR_PATH", default="", items=None)
    assert f["guidance_variant"] == dict(type="ENUM", subtype="NONE", default="auto",
                                         items=["auto", "zero123-xl", "stable-zero123"])
    assert f["depth_dir"] == dict(type="STRING", subtype="DIR_PATH", default="", items=None)
    assert f["depth_is_disparity"] == dict(type="BOOLEAN", subtype="NONE", default=False, items=None)
    assert f["depth_model"] == dict(type="STRING", subtype="DIR_PATH", default="", items=None)


def test_run_operator_explains_what_is_missing(tmp_path):
    clip = tmp_path / "clip"
    masks = tmp_path / "masks"
    clip.mkdir()
    masks.mkdir()
    out = run_bpy(f"""
    enable()
    s = bpy.context.scene.genmojo
    op = bpy.ops.genmojo.run_backend
    polls = [op.poll()]
    s.clip_path = {str(clip)!r}
    polls.append(op.poll())
    s.mask_dir = {str(masks)!r}
    s.output_dir = {str(tmp_path / 'out')!r}
    errors = []
    try:
        op()
    except RuntimeError as e:
        errors.append(str(e))
    state = bpy.context.window_manager.genmojo_run
    emit(polls=polls, errors=errors, state_error=state.error, exit_status=state.exit_status,
         running=state.running, cancel_poll=bpy.ops.genmojo.cancel_backend.poll(),
         check_poll=bpy.ops.genmojo.check_backend.poll())
    """)
    assert out["polls"] == [False, False]
    assert len(out["errors"]) == 1 and "No backend Python interpreter is set" in out["errors"][0]
    assert "No backend Python" in out["state_error"]
    assert out["exit_status"] == 2 and not out["running"]
    assert not out["cancel_poll"] and not out["check_poll"]


def test_build_script_cli_writes_dist_zip(tmp_path):
    cp = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--output-dir",
                         str(tmp_path)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    zips = list(tmp_path.glob("genmojo-*.zip"))
    assert len(zips) == 1 and zipfile.is_zipfile(zips[0])
    shutil.rmtree(tmp_path)
