"""Scene settings (saved with the .blend) and transient run state (on the WindowManager, not saved).

``Scene.genmojo`` holds what to run: inputs, output, preset, device and options; ``Scene.
genmojo_results`` the results imported into the scene and how (so a reopened file's Result panel
works). ``WindowManager.
genmojo_run`` mirrors the backend's progress for the panel and the status bar, plus the last error
and the last result, so nothing about a run in flight is ever written into the user's file.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)
from bpy.types import PropertyGroup

from . import preferences
from .core import backend_process as bp
from .core.clip_source import resolve_clip
from .core.protocol import RunState
from .core.run_progress import RunProgress

# Saved files store an enum's number, so each item keeps the number it had before Auto was added.
PRESET_ITEMS = (
    ("auto", "Auto", "Lite when the backend's PyTorch has CUDA, CPU Tiny when it has not (found out when the "
     "run starts, or now with Check Backend); a Device of CPU or CUDA decides it too", "NONE", 3),
    ("cpu-tiny", "CPU Tiny", "A few iterations at low resolution: checks the set-up on any machine", "NONE", 0),
    ("lite", "Lite", "Shorter optimisation for previews and small GPUs", "NONE", 1),
    ("full", "Full", "The full GenMOJO schedule (needs a CUDA GPU)", "NONE", 2),
)
# The Mesh surface settings, shared by the panel's settings and the import operator.
SURFACE_RESOLUTION = dict(name="Surface Resolution", default=48, min=8, max=256,
                          description="Voxels along the longest side of an object when building Mesh surfaces")
SURFACE_THRESHOLD = dict(name="Surface Threshold", default=0.5, min=0.001, max=10.0, precision=3,
                         description="Opacity level of the Gaussians' density where the Mesh surface lies "
                                     "(lower: fatter)")

# Re-import behaviour, shared by the scene settings (runs, the panel) and the import operator.
KEEP_EDITS = dict(name="Keep Edits", default=True,
                  description=("When the same result was imported before: keep what you changed there (root "
                               "transform, object names, materials, visibility, representations, the frame). "
                               "Off: reset the result to a fresh import"))

REPRESENTATION_ITEMS = (
    ("POINTS", "Points", "One vertex per Gaussian, drawn as coloured points (light, exports as points)",
     "POINTCLOUD_DATA", 0),
    ("SPLATS", "Splats", "One vertex per Gaussian, drawn as translucent coloured ellipsoids in EEVEE and Cycles",
     "SHADING_RENDERED", 1),
    ("MESH", "Mesh", "A closed surface around the Gaussians whose vertices follow their motion",
     "MESH_DATA", 2),
)
GUIDANCE_VARIANT_ITEMS = (
    ("auto", "Auto", "Stable Zero123 when the model's name contains 'stable', otherwise Zero123-XL"),
    ("zero123-xl", "Zero123-XL", "Camera embedding of Zero123 / Zero123-XL"),
    ("stable-zero123", "Stable Zero123", "Camera embedding of Stable Zero123"),
)
DEVICE_ITEMS = (
    ("auto", "Auto", "CUDA when available, otherwise CPU"),
    ("cpu", "CPU", "Force the CPU (slow, for tests)"),
    ("cuda", "CUDA", "Require an NVIDIA GPU"),
)


class GENMOJO_PG_settings(PropertyGroup):
    """What to reconstruct and how: stored per scene."""

    clip_path: StringProperty(
        name="Clip", subtype="FILE_PATH",
        description=("The footage: a folder of numbered images (or any one of its images, which stands "
                     "for the whole numbered sequence) or a movie file"))
    mask_dir: StringProperty(
        name="Masks", subtype="DIR_PATH",
        description="Folder of per-object masks (one sub-folder or colour per object, one mask per frame)")
    output_dir: StringProperty(
        name="Output", subtype="DIR_PATH",
        description="Folder that receives the result (empty: the default output folder of the preferences)")
    result_name: StringProperty(
        name="Result Name", default="result", maxlen=128,
        description="Name of the result folder inside the output folder, and of the imported collection")
    preset: EnumProperty(name="Preset", items=PRESET_ITEMS, default="auto",
                         description="Quality/speed trade-off of the optimisation")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto",
                         description="Where the backend runs")
    use_guidance: BoolProperty(
        name="Generative Guidance", default=False,
        description=("Use the generative prior (a Zero123 model) for unseen parts of objects. Off by "
                     "default: the model is not shipped with the extension"))
    guidance_model: StringProperty(
        name="Guidance Model", subtype="DIR_PATH",
        description=("The Zero123 model: a local folder in the diffusers layout, or a Hugging Face hub id "
                     "such as ashawkey/zero123-xl-diffusers (looked up in the local cache, then downloaded). "
                     "Empty: the backend's default model"))
    guidance_variant: EnumProperty(
        name="Variant", items=GUIDANCE_VARIANT_ITEMS, default="auto",
        description="Camera embedding of the guidance model")
    depth_dir: StringProperty(
        name="Depth Maps", subtype="DIR_PATH",
        description=("Optional folder of per-frame depth maps named like the frames (16-bit PNG/TIFF, .npy "
                     "or .exr; their scale does not matter), used for the objects' depths"))
    depth_is_disparity: BoolProperty(
        name="Maps Hold Disparity", default=False,
        description="The depth maps hold disparity (inverse depth), e.g. from Depth Anything")
    depth_model: StringProperty(
        name="Depth Model", subtype="DIR_PATH",
        description=("Optional local folder of a transformers depth-estimation model (saved with "
                     "save_pretrained, e.g. Depth Anything V2 Small), run on every frame. Use either this "
                     "or Depth Maps"))
    camera_path: StringProperty(
        name="Camera (MegaSAM)", subtype="FILE_PATH",
        description="Optional MegaSAM .npz with per-frame intrinsics and camera poses")
    camera_source: EnumProperty(
        name="Camera Source", default="AUTO",
        items=(("AUTO", "Auto", "The MegaSAM file if one is given, else a static camera"),
               ("VIRTUAL", "Static", "A static virtual camera (Focal Length, or a 49.1 degree field of view)"),
               ("SOLVE", "Solve from Footage", "Solve the camera from the footage's background with COLMAP "
                "(outside the object masks); the per-frame solve error comes with the result"),
               ("BLENDER", "Blender Camera Solve", "The active Movie Clip's solved camera, exported to the "
                "Camera Solve File with Export Camera Solve")),
        description="Where the backend's camera comes from")
    camera_solve_file: StringProperty(
        name="Camera Solve File", subtype="FILE_PATH",
        description="The camera file written by Export Camera Solve (Blender's own camera solve, npz)")
    background_path: StringProperty(
        name="Background", subtype="FILE_PATH",
        description=("Optional inpainted background: the clip's first frame with the objects painted out "
                     "(background mode; needs the camera file). It is imported as a static point cloud"))
    focal_px: FloatProperty(
        name="Focal Length (px)", default=0.0, min=0.0, max=1.0e6, precision=1,
        description=("Without a camera file: the static camera's focal length in pixels of the frames "
                     "(0: a 49.1 degree vertical field of view)"))
    fps: FloatProperty(
        name="Frame Rate", default=24.0, min=1.0, max=1000.0, precision=3,
        description="Frame rate of an image-sequence clip (movie files carry their own)")
    overwrite: BoolProperty(
        name="Overwrite", default=False,
        description="Replace an existing result of the same name")
    resume: BoolProperty(
        name="Resume", default=False,
        description="Continue an interrupted or cancelled run of this result from its last checkpoint")
    overrides: StringProperty(
        name="Config Overrides",
        description=("Backend settings as section.field=value, separated by spaces or semicolons, e.g. "
                     "sds.compile=none (no Triton or compiler on this machine) or kernels=torch; the backend "
                     "refuses unknown names before any work"))
    import_when_done: BoolProperty(
        name="Import When Done", default=True,
        description="Import the result into this scene as soon as the backend finishes")
    point_display: BoolProperty(
        name="Display Modifier", default=True,
        description=("Draw Points and Splats objects with their Geometry Nodes modifier (off: bare "
                     "vertices, invisible in Object Mode)"))
    representation: EnumProperty(
        name="Import As", items=REPRESENTATION_ITEMS, default="POINTS",
        description="How each object is brought in (change it per object afterwards in the Result panel)")
    mask_source: EnumProperty(
        name="Mask Source", default="FOLDER",
        items=(("FOLDER", "Folder", "A folder with one sub-folder of PNG masks per object (001, 002, ...)"),
               ("MASK", "Movie Clip Masks", "Blender Mask datablocks drawn in the Movie Clip editor: "
                "each mask layer is one object, rasterised to PNGs before the run")),
        description="Where the per-object masks come from")
    mask: PointerProperty(
        name="Mask", type=bpy.types.Mask,
        description="Mask datablock whose layers are the objects (one layer per object, in order)")
    surface_resolution: IntProperty(**SURFACE_RESOLUTION)
    surface_threshold: FloatProperty(**SURFACE_THRESHOLD)
    keep_edits: BoolProperty(**KEEP_EDITS)


class GENMOJO_PG_result(PropertyGroup):
    """One result imported into the scene, saved with the .blend so a reopened file's Result panel
    lists it: where its bundle is, its collection, and the options it was imported with (which a
    re-import from the panel uses again). Per-object state lives on the objects themselves (custom
    properties ``genmojo_object_id``, ``genmojo_name``, ``genmojo_representation``)."""

    bundle_root: StringProperty(name="Result Folder", subtype="DIR_PATH")
    collection: PointerProperty(name="Collection", type=bpy.types.Collection)
    representation: EnumProperty(name="Import As", items=REPRESENTATION_ITEMS, default="POINTS")
    object_representations: StringProperty(name="Per Object")
    surface_resolution: IntProperty(**SURFACE_RESOLUTION)
    surface_threshold: FloatProperty(**SURFACE_THRESHOLD)
    point_display: BoolProperty(name="Display Modifier", default=True)
    set_scene: BoolProperty(name="Match Scene to Clip", default=True)
    load_plate: BoolProperty(name="Footage as Background", default=True)


class GENMOJO_PG_run(PropertyGroup):
    """Live state of the current or last backend run (transient, for the UI)."""

    running: BoolProperty(name="Running", default=False)
    cancelling: BoolProperty(name="Cancelling", default=False)
    fraction: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(name="Stage")
    stage_index: IntProperty(name="Stage Index", default=0)
    stage_count: IntProperty(name="Stages", default=0)
    step: IntProperty(name="Step", default=0)
    total: IntProperty(name="Total", default=0)
    eta_s: FloatProperty(name="ETA (s)", default=-1.0)
    status: StringProperty(name="Status")
    error: StringProperty(name="Last Error")
    hint: StringProperty(name="Hint")
    log_tail: StringProperty(name="Backend Output", description="Last lines the backend wrote to stderr")
    result_path: StringProperty(name="Last Result", subtype="DIR_PATH")
    exit_status: IntProperty(name="Exit Status", default=0)
    preset_note: StringProperty(name="Preset", description="Which preset Auto stood for in the last run, and why")

    def reset_for_run(self) -> None:
        self.running, self.cancelling = True, False
        self.fraction, self.stage, self.stage_index, self.stage_count = 0.0, "", 0, 0
        self.step, self.total, self.eta_s = 0, 0, -1.0
        self.status, self.error, self.hint, self.log_tail = "Starting the backend", "", "", ""
        self.exit_status = 0

    def show_state(self, state: RunState, progress: RunProgress | None = None) -> None:
        """Copy the folded protocol state into the UI properties; with ``progress`` the bar and the
        ETA are the whole run's, weighted by the stages' planned work (``core/run_progress.py``)."""
        self.fraction = progress.fraction if progress is not None else state.fraction
        self.stage = state.stage
        self.stage_index = state.stage_index
        self.stage_count = len(state.stages)
        self.step, self.total = state.step, state.total
        eta = progress.eta_s if progress is not None else state.eta_s
        self.eta_s = -1.0 if eta is None else float(eta)
        self.status = bp.describe_progress(state, progress)

    def show_failure(self, error: str, hint: str = "", tail: list[str] | None = None,
                     exit_status: int = bp.EXIT_INTERNAL) -> None:
        self.running = self.cancelling = False
        self.error, self.hint = error, hint
        self.log_tail = "\n".join(tail or [])
        self.exit_status = exit_status
        self.status = "Failed"


def output_dir(settings: GENMOJO_PG_settings, context=None) -> str:
    """The scene's output folder, else the preferences' default, else beside the .blend file."""
    if settings.output_dir:
        return os.path.normpath(bpy.path.abspath(settings.output_dir))
    default = preferences.default_output_dir(context)
    if default:
        return os.path.normpath(default)
    if bpy.data.filepath:
        return os.path.normpath(bpy.path.abspath("//genmojo"))
    return ""


def import_options(settings: GENMOJO_PG_settings) -> dict:
    """The scene's import options as keyword arguments of ``session.import_into_scene``."""
    return dict(representation=settings.representation, surface_resolution=settings.surface_resolution,
                surface_threshold=settings.surface_threshold, keep_edits=settings.keep_edits)


def abs_folder(path: str) -> str:
    """An optional folder setting as an absolute path ("" stays ""): ``//`` is relative to the .blend
    file, ``~`` is expanded, a trailing separator dropped."""
    path = path.strip()
    return os.path.abspath(os.path.expanduser(bpy.path.abspath(path))) if path else ""


def guidance_model_spec(spec: str) -> str:
    """The guidance model as the backend gets it: a hub id unchanged, a folder as an absolute path
    (``//`` relative to the .blend file, ``~`` expanded, other relative paths from the current folder)."""
    spec = spec.strip()
    if not spec or bp.is_hub_id(spec):
        return spec
    return abs_folder(spec)


def make_request(settings: GENMOJO_PG_settings, context=None) -> bp.RunRequest:
    """Turn the scene settings into an absolute-path RunRequest for the backend."""
    def ab(p: str) -> str:
        return os.path.normpath(bpy.path.abspath(p)) if p else ""


    clip = resolve_clip(ab(settings.clip_path))  # one frame file stands for its folder's sequence
    is_sequence = clip.is_sequence
    return bp.RunRequest(data_dir=clip.path, mask_dir=ab(settings.mask_dir),
                         out_dir=output_dir(settings, context), save_name=settings.result_name.strip(),
                         preset=settings.preset, device=settings.device,
                         guidance=settings.use_guidance, cam_path=ab(settings.camera_path),
                         bg_path=ab(settings.background_path), focal_px=float(settings.focal_px),
                         camera=settings.camera_source.lower(), camera_file=ab(settings.camera_solve_file),
                         fps=float(settings.fps) if is_sequence else 0.0,
                         overwrite=settings.overwrite, resume=settings.resume,
                         guidance_model=guidance_model_spec(settings.guidance_model),
                         guidance_variant=settings.guidance_variant,
                         depth_dir=abs_folder(settings.depth_dir), depth_is_disparity=settings.depth_is_disparity,
                         depth_model=abs_folder(settings.depth_model),
                         overrides=tuple(bp.split_overrides(settings.overrides)))


CLASSES = (GENMOJO_PG_settings, GENMOJO_PG_result, GENMOJO_PG_run)


def register_properties() -> None:
    bpy.types.Scene.genmojo = PointerProperty(type=GENMOJO_PG_settings, name="GenMOJO")
    bpy.types.Scene.genmojo_results = CollectionProperty(type=GENMOJO_PG_result, name="GenMOJO Results")
    bpy.types.WindowManager.genmojo_run = PointerProperty(type=GENMOJO_PG_run, name="GenMOJO Run")


def unregister_properties() -> None:
    del bpy.types.WindowManager.genmojo_run
    del bpy.types.Scene.genmojo_results
    del bpy.types.Scene.genmojo
