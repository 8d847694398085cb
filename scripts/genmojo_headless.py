"""Run GenMOJO and import the result without a user interface, e.g. on a render node.

Two ways to call it (arguments after ``--`` are used when present)::

    blender -b --factory-startup --python scripts/genmojo_headless.py -- ARGS
    python scripts/genmojo_headless.py ARGS            # with the bpy module installed

ARGS::

    --data_dir CLIP --mask_dir MASKS --out_dir OUT --save_name NAME
    [--preset auto|cpu-tiny|lite|full] [--device auto|cpu|cuda] [--disable_guidance | --guidance]
    [--guidance_model FOLDER_OR_HUB_ID] [--guidance_variant auto|zero123-xl|stable-zero123]
    [--cam_path NPZ [--bg_path IMG]] [--focal_px F] [--fps F] [--overwrite] [--resume]
    [--depth_dir DIR [--depth_is_disparity] | --depth_model DIR]
    [--representation points|splats|mesh] [--surface_resolution N] [--surface_threshold T]
    [--backend_python PATH] [--backend_path DIR]
    [--blend OUT.blend] [--glb OUT.glb] [--fbx OUT.fbx] [--usd OUT.usdc] [--abc OUT.abc]
    [--ply_dir DIR [--ply_space blender|bundle] [--ply_merged]] [--gltf_splats NAME.glb]
    [--usd_splats NAME.usda] [--overwrite_exports]
    [--render_setup] [--floor] [--real_height OBJECT=METRES]
    [--import_only BUNDLE]

The extension is loaded from this repository (not from an installed copy) and enabled like an add-on,
the scene starts empty (factory settings), the backend runs through the same ``genmojo.run_backend``
operator as in the UI (blocking in background mode), and the result is imported, made ready to render
(``--render_setup``, ``--floor``, ``--real_height``, in that order, through the Result panel's own
operators), saved and exported.
``--preset auto`` (the default) is decided as in the sidebar, by the extension's own rule
(``core/machine.py``): ``lite`` where the backend's PyTorch has CUDA, ``cpu-tiny`` where it has not,
``--device cpu``/``cuda`` deciding it without asking; the chosen preset and why are printed.
``--backend_python`` defaults to this interpreter when bpy runs as a Python module, and is required
inside the Blender binary (whose Python has no PyTorch). ``--backend_path`` defaults to this
repository when it contains the ``backend`` package.

Exit status: 0 success, 2 bad arguments or input, 1 backend/internal failure, 130 cancelled.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON_MODULE = "genmojo_blender"


def script_args(argv: list[str]) -> list[str]:
    """The script's own arguments: everything after ``--`` if present (Blender), else argv[1:]."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


# the smallest height --real_height takes, as genmojo.set_scale's Real Height
MIN_REAL_HEIGHT_M = 0.001


def real_height(text: str) -> tuple[str, float]:
    """``OBJECT=METRES`` as (object name, metres); argparse turns the ValueError into exit 2."""
    name, sep, value = text.rpartition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give OBJECT=METRES, e.g. shot_object_001=1.75")
    try:
        metres = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number of metres") from None
    if not math.isfinite(metres) or metres < MIN_REAL_HEIGHT_M:
        raise argparse.ArgumentTypeError(f"{text!r}: the height must be a finite number of metres, at least "
                                         f"{MIN_REAL_HEIGHT_M:g}")
    return name.strip(), metres


def parse_args(args: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="genmojo_headless",
                                 description="Run the GenMOJO backend and import its result into Blender")
    ap.add_argument("--data_dir", help="clip: image-sequence folder or movie file")
    ap.add_argument("--mask_dir", help="folder of per-object masks")
    ap.add_argument("--out_dir", help="folder that receives the result")
    ap.add_argument("--save_name", default="result", help="result folder name (default: result)")
    ap.add_argument("--preset", default="auto", choices=("auto", "cpu-tiny", "lite", "full"),
                    help="auto (default): lite where the backend's PyTorch has CUDA, cpu-tiny where it has not "
                         "(--device cpu/cuda decides it too); the chosen preset and why are printed")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--disable_guidance", dest="guidance", action="store_false",
                   help="run without the generative prior (default)")
    g.add_argument("--guidance", dest="guidance", action="store_true",
                   help="use the generative prior")
    ap.set_defaults(guidance=None)
    ap.add_argument("--guidance_model", default="", metavar="FOLDER_OR_HUB_ID",
                    help="the Zero123 model: a local folder (diffusers layout) or a Hugging Face hub id; "
                         "implies --guidance (default: the backend's model)")
    ap.add_argument("--guidance_variant", default="auto", choices=("auto", "zero123-xl", "stable-zero123"),
                    help="camera embedding of the guidance model; a value other than auto implies --guidance")
    ap.add_argument("--cam_path", default="", help="MegaSAM .npz camera (optional)")
    ap.add_argument("--bg_path", default="",
                    help="background mode: the first frame with the objects painted out (needs --cam_path)")
    ap.add_argument("--focal_px", type=float, default=0.0,
                    help="without --cam_path: the static camera's focal length in pixels (0: 49.1 degree fov)")
    ap.add_argument("--fps", type=float, default=24.0, help="frame rate of an image-sequence clip")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run of this result from its checkpoint")
    d = ap.add_mutually_exclusive_group()
    d.add_argument("--depth_dir", default="", help="folder of per-frame depth maps named like the frames")
    d.add_argument("--depth_model", default="",
                   help="local folder of a transformers depth-estimation model, run on every frame")
    ap.add_argument("--depth_is_disparity", action="store_true",
                    help="the maps in --depth_dir hold disparity (inverse depth)")
    ap.add_argument("--representation", default="points", type=str.lower, choices=("points", "splats", "mesh"),
                    help="how objects are imported (default: points)")
    ap.add_argument("--surface_resolution", type=int, default=48,
                    help="voxels along an object's longest side for --representation mesh (default 48)")
    ap.add_argument("--surface_threshold", type=float, default=0.5,
                    help="opacity level of the mesh surface for --representation mesh (default 0.5)")
    ap.add_argument("--backend_python", default="", help="interpreter of the backend environment")
    ap.add_argument("--backend_path", default=None,
                    help="folder added to the backend's PYTHONPATH (default: this repository)")
    ap.add_argument("--blend", default="", help="save the scene to this .blend file")
    ap.add_argument("--glb", default="", help="export the scene to this .glb (or .gltf) file")
    ap.add_argument("--fbx", default="", help="export the scene to this .fbx file")
    ap.add_argument("--usd", default="", help="export a USD cache (.usd/.usda/.usdc): points as vertices per frame")
    ap.add_argument("--abc", default="", help="export an Alembic cache (.abc): points as vertices per frame")
    ap.add_argument("--ply_dir", default="",
                    help="export one 3DGS PLY per object and frame into this folder (<object>/<object>_0001.ply)")
    ap.add_argument("--ply_space", default="blender", type=str.lower, choices=("blender", "bundle"),
                    help="coordinates of --ply_dir: the Blender scene's (default) or the result's own world")
    ap.add_argument("--ply_merged", action="store_true",
                    help="with --ply_dir, also write every object in one file per frame (all_objects/)")
    ap.add_argument("--gltf_splats", default="", metavar="NAME.glb",
                    help="export KHR_gaussian_splatting glTF files, one per frame: NAME_0001.glb, ...")
    ap.add_argument("--usd_splats", default="", metavar="NAME.usda",
                    help="export the Gaussians as an animated USD splat layer (ParticleField3DGaussianSplat)")
    ap.add_argument("--overwrite_exports", action="store_true",
                    help="let the exports (--glb and --fbx too) replace existing files (by default they refuse)")
    ap.add_argument("--render_setup", action="store_true",
                    help="after the import, set the scene up to render over the footage (Cycles, shadow catcher, "
                         "holdouts, sun), as the Result panel's Set Up Render Scene")
    ap.add_argument("--floor", action="store_true",
                    help="after the import (and --render_setup), move the result so its fitted floor is at Z = 0")
    ap.add_argument("--real_height", default=None, metavar="OBJECT=METRES", type=real_height,
                    help="last, scale the result so that the imported object OBJECT (its Blender name, e.g. "
                         "shot_object_001) is METRES tall")
    ap.add_argument("--import_only", default="", metavar="BUNDLE",
                    help="skip the backend and import an existing result folder")
    ap.add_argument("--no_points", action="store_true", help="no point-display modifier on import")
    ns = ap.parse_args(args)
    wants_guidance = bool(ns.guidance_model) or ns.guidance_variant != "auto"
    if wants_guidance and ns.guidance is False:
        ap.error("--disable_guidance conflicts with --guidance_model/--guidance_variant")
    ns.guidance = bool(ns.guidance) or wants_guidance
    if ns.depth_is_disparity and not ns.depth_dir:
        ap.error("--depth_is_disparity needs --depth_dir")
    if not 8 <= ns.surface_resolution <= 256:
        ap.error("--surface_resolution must be between 8 and 256")
    if not 0.001 <= ns.surface_threshold <= 10.0:
        ap.error("--surface_threshold must be between 0.001 and 10")
    for flag, exts in (("glb", (".glb", ".gltf")), ("fbx", (".fbx",)), ("usd", (".usd", ".usda", ".usdc")),
                       ("abc", (".abc",)), ("usd_splats", (".usda",)), ("gltf_splats", (".glb",))):
        target = getattr(ns, flag)
        if target and not target.lower().endswith(exts):
            ap.error(f"--{flag} {target}: the name must end in {' or '.join(exts)}")
        # single-file exports are checked before any work; sequences when their names are known
        if target and flag != "gltf_splats" and os.path.exists(target) and not ns.overwrite_exports:
            ap.error(f"--{flag} {os.path.abspath(target)} already exists; choose another name or add "
                     "--overwrite_exports")
    if ns.ply_dir and os.path.isfile(ns.ply_dir):
        ap.error(f"--ply_dir {os.path.abspath(ns.ply_dir)} is a file; give a folder")
    if not ns.import_only:
        missing = [f"--{k}" for k in ("data_dir", "mask_dir", "out_dir") if not getattr(ns, k)]
        if missing:
            ap.error(f"{', '.join(missing)} required (or use --import_only BUNDLE)")
    return ns


def import_options(ns: argparse.Namespace) -> dict:
    """The import settings shared by the scene (run path) and ``genmojo.import_result`` (import only)."""
    return dict(representation=ns.representation.upper(), surface_resolution=ns.surface_resolution,
                surface_threshold=ns.surface_threshold)


def guidance_model_spec(spec: str) -> str:
    """A hub id unchanged; a folder made absolute here, before Blender sees it."""
    from genmojo_blender.core.backend_process import is_hub_id

    spec = spec.strip()
    return spec if not spec or is_hub_id(spec) else os.path.abspath(os.path.expanduser(spec))


def fail(message: str, status: int) -> int:
    print(f"[GenMOJO] error: {message}", file=sys.stderr, flush=True)
    return status


def enable_extension():
    """Load the extension from this repository and enable it like an add-on (preferences work)."""
    import addon_utils

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    errors = []
    mod = addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=errors.append)
    if mod is None or errors:
        raise RuntimeError(f"could not enable {ADDON_MODULE}: {errors[0] if errors else 'unknown error'}")
    return mod


def _cancel_on_sigterm() -> None:
    """Turn SIGTERM (a farm killing the job) into KeyboardInterrupt so the backend is cancelled too."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        pass


def run(ns: argparse.Namespace) -> int:
    import bpy

    module_mode = bpy.app.binary_path == ""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        enable_extension()
    except RuntimeError as e:
        return fail(str(e), 1)
    context = bpy.context
    state = context.window_manager.genmojo_run

    if ns.import_only:
        try:
            result = bpy.ops.genmojo.import_result(filepath=os.path.abspath(ns.import_only),
                                                   point_display=not ns.no_points, **import_options(ns))
        except RuntimeError:
            result = {"CANCELLED"}  # the operator's ERROR report; the message is in the run state
        if "FINISHED" not in result:
            return fail(state.error or "import failed", 2)
    else:
        python = ns.backend_python or (sys.executable if module_mode else "")
        if not python:
            return fail("--backend_python is required inside the Blender binary "
                        "(Blender's own Python has no PyTorch)", 2)
        backend_path = ns.backend_path
        if backend_path is None:
            backend_path = str(ROOT) if (ROOT / "backend" / "__init__.py").is_file() else ""
        s = context.scene.genmojo
        s.clip_path = os.path.abspath(ns.data_dir)
        s.mask_dir = os.path.abspath(ns.mask_dir)
        s.output_dir = os.path.abspath(ns.out_dir)
        s.result_name = ns.save_name
        s.preset, s.device, s.use_guidance = ns.preset, ns.device, ns.guidance
        s.camera_path = os.path.abspath(ns.cam_path) if ns.cam_path else ""
        s.background_path = os.path.abspath(ns.bg_path) if ns.bg_path else ""
        s.focal_px = ns.focal_px
        s.fps = ns.fps
        s.overwrite = ns.overwrite
        s.resume = ns.resume
        s.guidance_model = guidance_model_spec(ns.guidance_model)
        s.guidance_variant = ns.guidance_variant
        s.depth_dir = os.path.abspath(ns.depth_dir) if ns.depth_dir else ""
        s.depth_is_disparity = ns.depth_is_disparity
        s.depth_model = os.path.abspath(ns.depth_model) if ns.depth_model else ""
        s.import_when_done = True
        s.point_display = not ns.no_points
        for key, value in import_options(ns).items():
            setattr(s, key, value)
        _cancel_on_sigterm()
        try:
            result = bpy.ops.genmojo.run_backend(backend_python=python, backend_path=backend_path)
        except RuntimeError:
            result = {"CANCELLED"}  # the operator's ERROR report; details are in the run state
        if "FINISHED" not in result:
            msg = state.error or "the backend failed"
            if state.hint:
                msg += f" ({state.hint})"
            return fail(msg, state.exit_status or 1)

    status = make_ready(ns)
    if status:
        return status
    if ns.blend:
        path = os.path.abspath(ns.blend)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=path)
        print(f"[GenMOJO] saved {path}", flush=True)
    for flag, op in ((ns.glb, bpy.ops.genmojo.export_glb), (ns.fbx, bpy.ops.genmojo.export_fbx)):
        if flag:
            path = os.path.abspath(flag)
            try:
                op(filepath=path, overwrite=ns.overwrite_exports)
            except RuntimeError as e:
                return fail(f"export to {path} failed: {e}", 1)
            print(f"[GenMOJO] exported {path}", flush=True)
    return run_exports(ns)


def make_ready(ns: argparse.Namespace) -> int:
    """``--render_setup``, ``--floor`` and ``--real_height``, in that order, through the Result panel's
    operators (they act on the only result in the scene); 0, or the exit status of a refusal."""
    import bpy

    from genmojo_blender.blender import importer

    ops = bpy.ops.genmojo
    steps = []
    if ns.render_setup:
        steps.append(("the render set-up", ops.setup_render_scene, {}))
    if ns.floor:
        steps.append(("the floor", ops.set_floor, {}))
    if ns.real_height:
        name, metres = ns.real_height
        ob = bpy.data.objects.get(name)
        if ob is None or not ob.get(importer.OBJECT_ID_PROP):
            known = sorted(o.name for o in bpy.data.objects if o.get(importer.OBJECT_ID_PROP))
            return fail(f"--real_height {name}={metres:g}: the result has no object {name!r} "
                        f"(its objects: {', '.join(known) or 'none'})", 2)
        steps.append((f"the real height of {name}", ops.set_scale, dict(object_name=name, height=metres)))
    for what, op, options in steps:
        try:
            op(**options)
        except RuntimeError as e:
            return fail(f"{what} failed: {e}", 1)
        print(f"[GenMOJO] applied {what}", flush=True)
    return 0


def export_calls(ns: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(operator name, target, options) for each export flag given, in a fixed order."""
    keep = dict(overwrite=ns.overwrite_exports)
    calls = []
    if ns.usd:
        calls.append(("export_usd", ns.usd, dict(filepath=os.path.abspath(ns.usd), **keep)))
    if ns.abc:
        calls.append(("export_alembic", ns.abc, dict(filepath=os.path.abspath(ns.abc), **keep)))
    if ns.ply_dir:
        calls.append(("export_ply_sequence", ns.ply_dir,
                      dict(directory=os.path.abspath(ns.ply_dir), space=ns.ply_space.upper(),
                           merged=ns.ply_merged, **keep)))
    if ns.gltf_splats:
        calls.append(("export_gltf_splats", ns.gltf_splats, dict(filepath=os.path.abspath(ns.gltf_splats), **keep)))
    if ns.usd_splats:
        calls.append(("export_usd_splats", ns.usd_splats, dict(filepath=os.path.abspath(ns.usd_splats), **keep)))
    return calls


def run_exports(ns: argparse.Namespace) -> int:
    """The cache and splat exports; a refusal (a file in the way) or failure stops with status 1."""
    import bpy

    for name, target, options in export_calls(ns):
        try:
            getattr(bpy.ops.genmojo, name)(**options)
        except RuntimeError as e:
            return fail(f"export to {os.path.abspath(target)} failed: {e}", 1)
        print(f"[GenMOJO] exported {os.path.abspath(target)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(script_args(sys.argv if argv is None else argv))
    try:
        return run(ns)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
