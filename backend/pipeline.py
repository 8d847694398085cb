"""The whole run, stage by stage: clip and masks → tracks → canonical Gaussians → fit → bake → bundle.

Each stage hands the next a typed value. All input checks happen in ``prepare`` before anything heavy
(model building, optimisation) starts, so bad input fails in seconds with a message naming the file.

Stages: ``validate`` (inputs), ``init`` (cameras, depths, optical flow), ``objects`` (stage 1: each
object's canonical Gaussians), ``fit`` (stage 2: all objects jointly over the clip), ``bake`` (plain
per-frame arrays and previews), ``write`` (the bundle). ``Config.method`` picks the GenMOJO method or
the rigid skeleton baseline; both go through the same stages.

Background mode (``--bg_path`` with ``--cam_path``): in ``init`` the inpainted background is lifted
into MegaSAM's world and fitted through the real cameras against the background pixels
(``model/background.py``, ``optim/background.py``); it is composited with the objects in the
previews and written as the bundle's ``background``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from genmojo_blender.core import bundle as fmt

from .bake import bake_objects
from .checkpoint import (check_method_payload, check_skeleton_payload, checkpoint_dir, fingerprint,
                         inspect_checkpoint, open_checkpoint, read_info, remove_checkpoint, restoring,
                         save_checkpoint, tidy_checkpoints, START_OVER)
from .config import MAX_FPS, STALE_CHECKPOINT_DAYS, Config, validate
from .errors import Cancelled, InputError
from .io.background import load_background_image
from .io.bundle_staging import recover_staging
from .io.bundle_writer import BakedBackground, write_bundle
from .io.camera_file import load_blender_cameras
from .io.clip import Clip, load_clip
from .io.megasam import MegasamCameras, load_megasam, object_depths_from_maps
from .kernels import resolve_kernels
from .model.background import BackgroundGaussians, fill_depth, lift_background
from .model.camera import Cameras, static_cameras
from .model.crops import crop_box, crop_object
from .model.gaussians import CanonicalGaussians
from .model.tracks import ObjectTrack, track_objects
from .optim.rng import draw_seed, seeded_global
from .optim.background import BackgroundTargets, background_masks, fit_background
from .optim.skeleton import FitTargets, build_scene, fit_scene, make_fit_state
from .optim.stage1 import ObjectCrop, fit_object
from .optim.stage2 import ClipTargets, build_method_scene, fit_stage2, make_stage2_state, object_reference
from .previews import input_view, rotating_view, trajectories, trajectory_video
from .priors import camera_solve
from .priors import depth as depth_prior
from .priors.flow import cached_flow
from .priors.zero123 import (Conditioning, Zero123Guidance, frame_crops, load_zero123, persistent_compile_cache,
                             resolve_model)
from .progress import Reporter
from .progress_plan import work_plan

STAGES = ["validate", "init", "objects", "fit", "bake", "write"]
FLOW_CACHE = ".genmojo-cache/flow"  # inside --out_dir, shared by the runs written there
CAMERA_CACHE = ".genmojo-cache/camera"  # the camera solve (--camera solve), beside the flow
# --camera: auto = megasam with --cam_path, else virtual; solve = COLMAP on the footage; blender = --camera_file
CAMERA_MODES = ("auto", "virtual", "megasam", "solve", "blender")
METHODS = ("genmojo", "skeleton")


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for (paths and switches); the numbers live in ``Config``."""

    data_dir: Path
    mask_dir: Path
    out_dir: Path
    save_name: str
    device: str = "auto"
    fps: float | None = None
    overwrite: bool = False
    disable_guidance: bool = False
    cam_path: Path | None = None
    bg_path: Path | None = None
    iterations: int | None = None  # overrides the joint fit's step count (smoke runs)
    holdout: int = 0  # withhold every N-th frame from the fit (0: none); see holdout_frames
    resume: bool = False
    command: list[str] = field(default_factory=list)
    depth_dir: Path | None = None  # per-frame depth maps (priors/depth.py)
    depth_model: Path | None = None  # a local transformers depth model
    depth_is_disparity: bool = False  # the maps in depth_dir hold disparity
    camera: str = "auto"  # one of CAMERA_MODES
    camera_file: Path | None = None  # --camera blender: the extension's export of Blender's camera solve


@dataclass(frozen=True)
class BackgroundInputs:
    """Background mode's checked inputs: the inpainted image (h,w,3) uint8 at the fitting size, the
    (T,h,w) bool pixels the background is fitted to (training frames only), the reference frame's
    pixels (h,w) bool whose MegaSAM depth is the background's own (away from every object), and
    where the mask came from."""

    image: np.ndarray
    masks: np.ndarray
    depth_known: np.ndarray
    mask_source: str


@dataclass
class Prepared:
    """Everything validated and loaded, ready for the heavy stages."""

    clip: Clip
    tracks: list[ObjectTrack]  # from the training frames' masks only
    device: torch.device
    target: Path
    train: np.ndarray  # frame indices the fit may see
    fit_masks: np.ndarray  # (K, T, h, w) the masks with withheld frames emptied
    megasam: MegasamCameras | None = None
    depth_maps: depth_prior.DepthMaps | None = None  # from --depth_dir, read and checked in prepare
    guidance_folder: Path | None = None  # the Zero123 model found for the run (None: no guidance)
    background: BackgroundInputs | None = None  # background mode (--bg_path), checked in prepare
    footage: camera_solve.SolvedCameras | None = None  # --camera solve / blender: the solved cameras
    notes: list[str] = field(default_factory=list)  # what prepare has to tell (the solve's warnings)
    iterations: int = 0  # the joint fit's step count (fit_iterations)
    fingerprint: dict = field(default_factory=dict)  # what the run's checkpoints record (run_fingerprint)
    resume_state: dict | None = None  # --resume: the checkpoint's payload, checked against this run

    @property
    def trained(self) -> np.ndarray:
        """(T,) bool: the frames the fit may see."""
        mask = np.zeros(self.clip.num_frames, bool)
        mask[self.train] = True
        return mask

    @property
    def held(self) -> list[int]:
        """The frames withheld by --holdout."""
        return np.flatnonzero(~self.trained).tolist()

    def clip_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (T,H,W,3) float in [0,1] and training masks (T,H,W,K) bool on the fit's device."""
        return (torch.from_numpy(self.clip.frames).to(self.device).float() / 255,
                torch.from_numpy(np.moveaxis(self.fit_masks, 0, -1)).to(self.device))


def holdout_frames(num_frames: int, every: int) -> list[int]:
    """The frames ``--holdout N`` withholds: the middle frame of each group of N (t % N == N // 2),
    so every withheld frame has training frames on both sides except possibly at the very end."""
    if every <= 1:
        return []
    return [t for t in range(num_frames) if t % every == every // 2]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU. CUDA needs gsplat; never falls back silently."""
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {name}: unknown device", "use auto, cpu or cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: PyTorch sees no CUDA GPU on this machine",
                             "use --device cpu, or install a CUDA build of PyTorch")
        try:
            import gsplat  # noqa: F401
        except ImportError as e:
            raise InputError(f"--device cuda needs gsplat, which is not installed ({e})",
                             "pip install gsplat==1.5.3 in the backend's Python, or use --device cpu") from e
    return torch.device(name)


def _check_output(out_dir: Path, save_name: str, overwrite: bool) -> Path:
    if not fmt.RESULT_NAME.match(save_name):
        raise InputError(f"--save_name {save_name!r}: not a plain folder name",
                         "use letters, digits, '.', '_' and '-' only (no slashes), starting with a letter or digit")
    target = out_dir / save_name
    if target.exists() and not overwrite:
        raise InputError(f"{target}: a result with this name already exists",
                         "choose another --save_name, or pass --overwrite to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output folder ({e.strerror})",
                         "choose a writable --out_dir") from e
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise InputError(f"{out_dir}: the output folder is not writable", "choose a writable --out_dir")
    return target


def check_run_numbers(fps: float | None, iterations: int | None, holdout: int) -> None:
    """InputError for ``--fps``, ``--iters`` or ``--holdout`` out of range (NaN, infinity and values of
    the wrong type included); the command line checks its flags with it, ``prepare`` a library caller's."""
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                            or not math.isfinite(fps) or not 0 < fps <= MAX_FPS):
        raise InputError(f"--fps {fps}: must be a frame rate in (0, {MAX_FPS:g}]",
                         "give the image sequence's frame rate, e.g. --fps 24")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int)
                                   or iterations < 1):
        raise InputError(f"--iters {iterations}: must be at least 1",
                         "leave --iters out to use the preset's number of steps")
    if holdout < 0 or holdout == 1:
        raise InputError(f"--holdout {holdout}: must be 0 (none) or at least 2", "--holdout 4 withholds every 4th frame")


def prepare(req: RunRequest, cfg: Config) -> Prepared:
    """Validate options, output and inputs; load the clip and track the objects. No optimisation."""
    validate(cfg)  # every field in its range (config.FIELD_CHECKS), whether from a preset or an override
    check_run_numbers(req.fps, req.iterations, req.holdout)
    if req.bg_path is not None and req.cam_path is None:
        raise InputError(f"--bg_path {req.bg_path}: background mode needs MegaSAM's cameras and depths (--cam_path)",
                         "the background is lifted with MegaSAM's metric depth and fitted through its cameras: "
                         "pass the clip's MegaSAM npz with --cam_path, or run without --bg_path")
    focal = cfg.camera.focal_px  # positive and finite when given (validate)
    if focal is not None and req.cam_path is not None:
        raise InputError(f"--focal_px {focal:g} and --cam_path both give the camera's focal length",
                         "MegaSAM's file has its own intrinsics: drop --focal_px")
    mode = camera_mode(req, cfg)
    device = resolve_device(req.device)
    if cfg.method == "genmojo":
        try:
            resolve_kernels(cfg.kernels, device)
        except ValueError as e:
            raise InputError(str(e), "--set kernels=auto picks the kernels this machine can run") from e
    target = _check_output(req.out_dir, req.save_name, req.overwrite)
    ckpt = checkpoint_dir(req.out_dir, req.save_name)
    ckpt_status, _, ckpt_problem = inspect_checkpoint(ckpt)
    if req.resume and ckpt_status == "none":
        raise InputError(f"{ckpt}: --resume was given but there is no checkpoint of '{req.save_name}' to resume",
                         "run without --resume to start from the beginning")
    if req.resume and ckpt_status == "damaged":
        raise InputError(f"{ckpt}: the checkpoint cannot be resumed: {ckpt_problem}", START_OVER)
    if not req.resume and not req.overwrite and ckpt_status != "none":
        raise InputError(f"{ckpt}: an interrupted run of '{req.save_name}' left a checkpoint",
                         "pass --resume to continue it, or --overwrite to discard it and start over")
    ic = cfg.input
    clip = load_clip(req.data_dir, req.mask_dir, max_side=ic.max_side, fps=req.fps, default_fps=ic.default_fps,
                     min_frames=ic.min_frames, max_frames=ic.max_frames)
    held = holdout_frames(clip.num_frames, req.holdout)
    train = np.array([t for t in range(clip.num_frames) if t not in set(held)])
    if len(train) < 2:
        raise InputError(f"--holdout {req.holdout} leaves {len(train)} training frame(s) of {clip.num_frames}",
                         "use a larger --holdout or a longer clip")
    fit_masks = clip.masks.copy()
    fit_masks[:, held] = False
    for k, oid in enumerate(clip.object_ids):
        if not fit_masks[k].any():
            raise InputError(f"{req.mask_dir / oid}: object {oid} is only visible in withheld frames",
                             "use a larger --holdout, or remove the object")
    tracks = track_objects(clip.object_ids, fit_masks)
    megasam = None
    w, h = clip.work_size
    if req.cam_path is not None:
        megasam = load_megasam(req.cam_path, clip.num_frames, w, h)
    if req.depth_dir is not None and req.depth_model is not None:
        raise InputError("--depth_dir and --depth_model both give the depth", "pass one of them")
    maps = None
    if req.depth_dir is not None:
        maps = depth_prior.load_depth_folder(req.depth_dir, clip.frame_numbers, w, h, req.depth_is_disparity)
    if req.depth_model is not None:
        depth_prior.check_depth_model(req.depth_model)
    background = _background_inputs(req, cfg, clip, fit_masks, train) if req.bg_path is not None else None
    iterations = fit_iterations(req, cfg, clip.num_frames)
    finger = run_fingerprint(req, cfg, iterations)
    resume_state = _resume_state(ckpt, finger, cfg, clip.num_objects, iterations) if req.resume else None
    # the guidance's weights are looked for last (a hub id may download), but before any optimisation
    folder = resolve_model(cfg.sds.model) if uses_guidance(req, cfg) else None
    notes: list[str] = []
    footage = footage_cameras(req, cfg, mode, clip, fit_masks, target, notes.append)
    return Prepared(clip=clip, tracks=tracks, device=device, target=target, train=train, fit_masks=fit_masks,
                    megasam=megasam, depth_maps=maps, guidance_folder=folder, background=background,
                    footage=footage, notes=notes, iterations=iterations, fingerprint=finger,
                    resume_state=resume_state)


def fit_iterations(req: RunRequest, cfg: Config, num_frames: int) -> int:
    """The joint fit's step count: ``--iters``, else the method's budget for the clip's length."""
    if req.iterations is not None:
        return req.iterations
    return (cfg.fit if cfg.method == "skeleton" else cfg.stage2).iterations(num_frames)


def run_fingerprint(req: RunRequest, cfg: Config, iterations: int) -> dict:
    """What a checkpoint of this run records and ``--resume`` compares (``checkpoint.fingerprint``): the
    bytes of every input file, the options that change the fit, the configuration and the budget."""
    inputs = {"--data_dir": req.data_dir, "--mask_dir": req.mask_dir, "--cam_path": req.cam_path,
              "--bg_path": req.bg_path, "--depth_dir": req.depth_dir, "--camera_file": req.camera_file}
    settings = {"holdout": req.holdout, "camera": req.camera, "fps": req.fps,
                "depth_model": str(Path(req.depth_model).resolve()) if req.depth_model is not None else None,
                "depth_is_disparity": req.depth_is_disparity, "disable_guidance": req.disable_guidance}
    return fingerprint(inputs, settings, cfg, iterations)


def _resume_state(folder: Path, finger: dict, cfg: Config, num_objects: int, iterations: int) -> dict:
    """The checkpoint ``--resume`` continues, read and checked against this run before any heavy work."""
    data = open_checkpoint(folder, finger)
    if cfg.method == "skeleton":
        check_skeleton_payload(folder, data, iterations)
    else:
        check_method_payload(folder, data, num_objects, iterations)
    return data


def camera_mode(req: RunRequest, cfg: Config) -> str:
    """The camera source ``--camera`` asks for (``auto`` resolved), its flags checked against each other."""
    if req.camera not in CAMERA_MODES:
        raise InputError(f"--camera {req.camera!r} is unknown", f"use one of {', '.join(CAMERA_MODES)}")
    mode = req.camera if req.camera != "auto" else ("megasam" if req.cam_path is not None else "virtual")
    if mode == "megasam" and req.cam_path is None:
        raise InputError("--camera megasam needs MegaSAM's npz", "pass it with --cam_path")
    if mode != "megasam" and req.cam_path is not None:
        raise InputError(f"--camera {mode} and --cam_path both give the camera",
                         "drop --cam_path, or use --camera megasam (the default with --cam_path)")
    if mode == "blender" and req.camera_file is None:
        raise InputError("--camera blender needs the camera file exported from Blender's camera solve",
                         "pass it with --camera_file (GenMOJO › Export camera solve in Blender writes it)")
    if mode != "blender" and req.camera_file is not None:
        raise InputError(f"--camera_file {req.camera_file} is only read with --camera blender",
                         "add --camera blender, or drop --camera_file")
    if mode == "blender" and cfg.camera.focal_px is not None:
        raise InputError(f"--focal_px {cfg.camera.focal_px:g} and --camera blender both give the focal length",
                         "the camera file has Blender's solved intrinsics: drop --focal_px")
    if mode == "solve":  # its settings were checked with the rest of the configuration (validate)
        camera_solve.import_pycolmap()
    return mode


def footage_cameras(req: RunRequest, cfg: Config, mode: str, clip: Clip, fit_masks: np.ndarray, target: Path,
                    note: Callable[[str], None]) -> camera_solve.SolvedCameras | None:
    """--camera solve: the cameras solved from the clip's background (cached in --out_dir); --camera
    blender: the camera file read and checked. None for the virtual and MegaSAM cameras. The solve sees
    every frame's masks (withheld frames' too: the camera is not what --holdout evaluates)."""
    w, h = clip.work_size
    if mode == "blender":
        return load_blender_cameras(req.camera_file, clip.num_frames, (clip.width, clip.height), (w, h),
                                    cfg.camera_solve, cfg.camera.scene_depth, warn=note)
    if mode != "solve":
        return None
    t0 = time.monotonic()
    focal = None if cfg.camera.focal_px is None else float(cfg.camera.focal_px) * w / clip.width
    solved, hit = camera_solve.solve_cameras(clip.frames, clip.masks, clip.background, cfg.camera_solve,
                                             cfg.camera.scene_depth, cache_dir=target.parent / CAMERA_CACHE,
                                             focal_px=focal, warn=note)
    took = " (read from the cache)" if hit else f" in {time.monotonic() - t0:.1f} s"
    note(f"camera: {solved.describe(pixel_scale=_to_original_pixels(solved, clip))}{took}")
    return solved


def _to_original_pixels(solved: camera_solve.SolvedCameras, clip: Clip) -> float:
    """The factor from a solve's reprojection errors to pixels of the original frames: COLMAP solves the
    frames at the fitting size; Blender's camera file is in the footage's own pixels."""
    return clip.width / clip.work_size[0] if solved.method == "colmap" else 1.0


def _background_inputs(req: RunRequest, cfg: Config, clip: Clip, fit_masks: np.ndarray,
                       train: np.ndarray) -> BackgroundInputs:
    """Background mode's inputs, checked before any heavy work (see ``BackgroundInputs``)."""
    bc = cfg.background
    T = clip.num_frames
    if not 0 <= bc.reference_frame < T:
        raise InputError(f"background.reference_frame {bc.reference_frame} is outside the clip's {T} frames",
                         "set it to the frame the inpainted image shows (--set background.reference_frame=N)")
    if bc.reference_frame not in set(train.tolist()):
        raise InputError(f"background.reference_frame {bc.reference_frame} is withheld by --holdout {req.holdout}",
                         "choose a training frame for the background, or another --holdout")
    image = load_background_image(req.bg_path, (clip.width, clip.height), clip.work_size)
    masks = background_masks(clip.background, fit_masks, bc.mask_erode_px)
    held = np.ones(T, bool)
    held[train] = False
    masks[held] = False
    if not masks.any():
        raise InputError(f"{req.mask_dir}: no training frame shows any background pixel",
                         "check the background masks in folder 000 (white = background), or run without --bg_path")
    r = bc.reference_frame
    grow = 2 * bc.depth_fill_grow_px + 1
    objects = cv2.dilate(fit_masks[:, r].any(0).astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
    known = ~objects if clip.background is None else clip.background[r] & ~objects
    if not known.any():
        raise InputError(f"{req.mask_dir}: frame {r} shows no background away from the objects, so MegaSAM's "
                         "depth cannot place the background", "set background.reference_frame to a frame "
                         "that shows some background, with an inpainted image of that frame")
    source = ("folder 000" if clip.background is not None else "pixels outside every object mask")
    return BackgroundInputs(image=image, masks=masks, depth_known=known,
                            mask_source=source + (f", eroded by {bc.mask_erode_px} px" if bc.mask_erode_px > 0 else ""))


BACKGROUND_SEED_OFFSET = 7919  # the background draws from its own stream, so a resumed run refits it identically


def make_background(req: RunRequest, prep: Prepared, cfg: Config, cameras: Cameras, reporter: Reporter,
                    should_stop: Callable[[], bool]) -> tuple[BackgroundGaussians, dict[str, float]]:
    """Background mode: lift the inpainted image into MegaSAM's world at the reference frame (its
    camera, its depth filled under the objects) and fit it through every training frame's camera."""
    bc, bi, ms = cfg.background, prep.background, prep.megasam
    assert bi is not None and ms is not None  # prepare guarantees both in background mode
    dev = prep.device
    r = bc.reference_frame
    t0 = time.monotonic()
    depth = fill_depth(ms.depths[r], bi.depth_known, bc.depth_fill_radius_px)
    lifted = lift_background(bi.image, depth, ms.K[r], ms.c2w[r], max_gaussians=bc.max_gaussians,
                             scale_factor=bc.scale_factor)
    model = BackgroundGaussians(lifted, bc.init_opacity).to(dev)
    train = [int(t) for t in prep.train if bi.masks[t].any()]
    frames = torch.from_numpy(prep.clip.frames).to(dev).float() / 255
    targets = BackgroundTargets(frames=frames, masks=torch.from_numpy(bi.masks).to(dev),
                                depth=torch.from_numpy(ms.depths).to(dev), train=torch.tensor(train, dtype=torch.long))
    gen = torch.Generator().manual_seed(cfg.seed + BACKGROUND_SEED_OFFSET)
    losses = fit_background(model, targets, cameras.to(dev), bc, gen, scene_depth=float(np.median(depth)),
                            on_step=lambda s, n, l: reporter.progress(s, n, l), should_stop=should_stop)
    reporter.log(f"background: {model.num_gaussians} Gaussians (every {lifted.stride} px) lifted from "
                 f"{req.bg_path} at frame {r} with MegaSAM depth, fitted for {bc.iterations} steps to "
                 f"{bi.mask_source} of {len(train)} frames in {time.monotonic() - t0:.1f} s; "
                 + ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))
    return model, losses


def uses_guidance(req: RunRequest, cfg: Config) -> bool:
    """Whether the run distils the Zero123 prior: on in the config, not disabled, and the method has it."""
    return cfg.guidance and not req.disable_guidance and cfg.method == "genmojo"


def cameras_and_depths(prep: Prepared, cfg: Config, req: RunRequest | None = None) -> tuple[Cameras, np.ndarray, str]:
    """The fit's cameras and each object's (K, T) camera distance per frame, with the depth's source.

    Depth comes from --depth_dir, --depth_model, MegaSAM or the mask heuristic (priors/depth.py)."""
    clip, tracks = prep.clip, prep.tracks
    w, h = clip.work_size
    visible = np.array([tr.visible for tr in tracks])
    if prep.megasam is not None:
        ms = prep.megasam
        cams = Cameras(K=torch.from_numpy(ms.K).float(), c2w=torch.from_numpy(ms.c2w).float(), width=w, height=h,
                       near=cfg.camera.near, far=max(cfg.camera.far, float(ms.depths.max()) * 2),
                       source="megasam")
        megasam_d = object_depths_from_maps(prep.fit_masks, ms.depths, visible)
        if prep.depth_maps is None and (req is None or req.depth_model is None):
            return cams, megasam_d, "megasam depths (masked median)"
        reference = float(np.median(megasam_d))
    elif prep.footage is not None:
        fc = prep.footage
        scale = _to_original_pixels(fc, clip)  # the manifest's errors are in pixels of the original frames
        cams = Cameras(K=torch.from_numpy(fc.K).float(), c2w=torch.from_numpy(fc.c2w).float(), width=w, height=h,
                       near=cfg.camera.near, far=max(cfg.camera.far, fc.max_depth * 2),
                       source=fc.describe(pixel_scale=scale), solve=fc.solve_info(pixel_scale=scale))
        reference = fc.scene_depth
    else:
        cams = static_cameras(clip.num_frames, w, h, cfg.camera.fovy_deg, cfg.camera.near, cfg.camera.far)
        if cfg.camera.focal_px is not None:
            # the user's focal length (pixels of the original frames) at the fitting size, principal
            # point at the centre
            f = float(cfg.camera.focal_px) * w / clip.width
            K = torch.tensor([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
            cams = Cameras(K=K[None].repeat(clip.num_frames, 1, 1), c2w=cams.c2w, width=w, height=h,
                           near=cams.near, far=cams.far,
                           source=f"virtual (static, focal length {cfg.camera.focal_px:g} px)")
        reference = cfg.camera.scene_depth
    maps = prep.depth_maps
    dp = cfg.depth_prior
    if maps is None and req is not None and req.depth_model is not None:
        maps = depth_prior.run_depth_model(req.depth_model, clip.frames, prep.device, dp.model_batch,
                                           dp.disparity_floor)
    bottoms = np.array([tr.bbox[tr.reference, 3] for tr in tracks])
    depths, source = depth_prior.object_depths(
        prep.fit_masks, visible, maps, reference=reference, bottoms=bottoms, frames=prep.train, height=h,
        spread=cfg.init.depth_spread, margin=dp.occlusion_margin, weight=dp.occlusion_weight,
        min_pixels=dp.occlusion_min_pixels, ids=clip.object_ids)
    return cams, depths, source


def visibility(prep: Prepared) -> np.ndarray:
    """(K, T) whether each object is in each frame: its mask, and for withheld frames whether it is
    visible in a neighbouring training frame (their masks are not the fit's to see)."""
    vis = np.array([tr.visible for tr in prep.tracks])
    train = prep.train
    for t in prep.held:
        before, after = train[train < t], train[train > t]
        near = [int(before[-1])] if before.size else []
        near += [int(after[0])] if after.size else []
        vis[:, t] = vis[:, near].any(1)
    return vis


class _Checkpointer:
    """Saves and restores the run's progress; a failed save is reported and the run goes on."""

    def __init__(self, req: RunRequest, prep: Prepared, reporter: Reporter):
        self.folder = checkpoint_dir(req.out_dir, req.save_name)
        self.finger = prep.fingerprint  # computed and, for --resume, checked in prepare
        self.reporter = reporter

    def save(self, payload: dict, step: int) -> bool:
        try:
            save_checkpoint(self.folder, payload, self.finger, step)
            return True
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write (a full disk) as RuntimeError
            self.reporter.log(f"warning: could not save a checkpoint in {self.folder} ({e}); the run continues")
            return False


def _canonical_payload(c: CanonicalGaussians) -> dict:
    """The parameters themselves (colour and opacity as logits): a round trip through sigmoid and logit
    would not give back the same bits."""
    return {k: v.detach().cpu() for k, v in c.state_dict().items()}


def _canonical_from(d: dict, device: torch.device) -> CanonicalGaussians:
    c = CanonicalGaussians(means=d["means"], log_scales=d["log_scales"], colors=torch.sigmoid(d["color_logits"]),
                           opacities=torch.sigmoid(d["opacity_logits"]), quats=d["quats"])
    c.load_state_dict(d)
    return c.to(device)


def run(req: RunRequest, cfg: Config, reporter: Reporter,
        should_stop: Callable[[], bool] = lambda: False) -> Path:
    """Run every stage and return the finished bundle's folder."""
    t_start = time.monotonic()
    reporter.start(run_id=f"{req.save_name}-{int(time.time())}", save_name=req.save_name,
                   out_dir=str(req.out_dir), device=req.device, preset=cfg.preset)

    reporter.begin("validate")
    for line in recover_staging(req.out_dir, req.save_name):  # an earlier run killed while writing
        reporter.log(line)
    prep = prepare(req, cfg)
    clip = prep.clip
    for w in clip.warnings:
        reporter.log(f"note: {w}")
    for line in prep.notes:
        reporter.log(line)
    held = prep.held
    reporter.log(f"{clip.num_frames} frames {clip.width}x{clip.height} (fit at {clip.work_size[0]}x"
                 f"{clip.work_size[1]}), {clip.num_objects} objects, device {prep.device}, method {cfg.method}"
                 + (f", {len(held)} frames withheld" if held else ""))
    reporter.end("validate", work=_work_plan(cfg, prep))

    reporter.begin("init")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    cameras, depths, depth_source = cameras_and_depths(prep, cfg, req)
    reporter.log(f"object depths: {depth_source}")
    guidance = None
    if prep.guidance_folder is not None:
        t0 = time.monotonic()
        if cfg.sds.compile != "none":
            reporter.log(f"guidance: compiled graphs are cached in {persistent_compile_cache()} "
                         f"(the first run on this machine compiles them)")
        model = load_zero123(cfg.sds.model, prep.device, cfg.sds.dtype, cfg.sds.variant,
                             channels_last=cfg.sds.channels_last, compile=cfg.sds.compile,
                             vae_attention=cfg.sds.vae_attention)
        guidance = Zero123Guidance(model, cfg.sds, seed=cfg.seed)
        graphs = ", each call replayed from a CUDA graph" if guidance.graphed else ""
        reporter.log(f"guidance: {model.describe()}{graphs} loaded in {time.monotonic() - t0:.1f} s")
    iterations = prep.iterations
    ckpt = _Checkpointer(req, prep, reporter)
    for line in tidy_checkpoints(req.out_dir, ckpt.folder, STALE_CHECKPOINT_DAYS):
        reporter.log(line)
    if not req.resume:
        remove_checkpoint(ckpt.folder)  # only reached with --overwrite when one exists (checked in prepare)
    targets = _targets(prep, cfg, cameras, reporter) if cfg.method == "genmojo" else None
    background = bg_losses = None
    if prep.background is not None:
        background, bg_losses = make_background(req, prep, cfg, cameras, reporter, should_stop)
    reporter.end("init")

    if cfg.method == "genmojo":
        model, final, guidance_info = _run_method(req, cfg, prep, cameras, depths, targets, iterations, gen, ckpt,
                                                  reporter, should_stop, guidance=guidance)
    else:
        model, final, guidance_info = _run_skeleton(req, cfg, prep, cameras, depths, iterations, gen, ckpt,
                                                    reporter, should_stop)

    _stop_point(should_stop, "baking", prep.target, ckpt.folder)
    reporter.begin("bake")
    cameras = cameras.to(prep.device)
    baked = bake_objects(model, visibility(prep), prep.device)
    _stop_point(should_stop, "rendering the previews", prep.target, ckpt.folder)
    bg_baked = None
    if background is not None:
        bg_baked = BakedBackground(gaussians=fmt.StaticGaussians(**background.arrays()),
                                   reference_frame=cfg.background.reference_frame,
                                   source=f"{Path(req.bg_path).resolve()} lifted at frame "
                                          f"{cfg.background.reference_frame} with MegaSAM depth",
                                   mask=prep.background.mask_source, final_losses=bg_losses)
    previews, tracks = make_previews([b.frames for b in baked], cameras, clip.frames, cfg, prep.device,
                                     static=bg_baked.gaussians if bg_baked is not None else None,
                                     stop_point=lambda what: _stop_point(should_stop, what, prep.target, ckpt.folder))
    reporter.end("bake")

    _stop_point(should_stop, "writing the result", prep.target, ckpt.folder)
    reporter.begin("write")
    track, cam_info = cameras.to_bundle(clip.width, clip.height)
    info = fmt.ClipInfo(width=clip.width, height=clip.height, fps=clip.fps, frame_names=clip.frame_names,
                        frame_numbers=clip.frame_numbers, source=clip.source)
    run_info = fmt.RunInfo(optimizer=cfg.method, preset=cfg.preset, device=str(prep.device),
                           iterations=iterations, guidance=guidance_info, depth_source=depth_source,
                           duration_s=round(time.monotonic() - t_start, 2), final_losses=final,
                           config=cfg.to_dict(), command=req.command, holdout_frames=held)
    try:
        path = write_bundle(req.out_dir, req.save_name, clip=info, camera=track, camera_info=cam_info,
                            objects=baked, run=run_info, previews=previews, tracks=tracks, overwrite=req.overwrite,
                            background=bg_baked, should_stop=should_stop)
    except Cancelled as e:
        raise Cancelled(str(e), _after_fit_hint(ckpt.folder)) from e
    # the result is committed: a stop that arrives from here on no longer undoes it, the run is done
    remove_checkpoint(ckpt.folder)
    reporter.end("write")
    reporter.done(str(path.resolve()))
    return path


def _after_fit_hint(ckpt_folder: Path) -> str:
    if read_info(ckpt_folder) is not None:
        return f"run the same command with --resume to continue from the checkpoint in {ckpt_folder}"
    return "run again to start over"


def _stop_point(should_stop: Callable[[], bool], before: str, target: Path, ckpt_folder: Path) -> None:
    """Honour a stop between the fit and the bundle's commit: raise Cancelled, the previous result untouched."""
    if should_stop():
        kept = f"{target} is untouched" if target.exists() else f"nothing was written to {target}"
        raise Cancelled(f"stopped before {before}; {kept}", _after_fit_hint(ckpt_folder))


def _work_plan(cfg: Config, prep: Prepared) -> dict[str, float]:
    """Expected seconds per stage for Blender's progress bar (``progress_plan.py``)."""
    return work_plan(cfg, num_frames=prep.clip.num_frames, num_objects=prep.clip.num_objects,
                     work_size=prep.clip.work_size, train_frames=len(prep.train),
                     guidance=prep.guidance_folder is not None, stage2_iterations=prep.iterations)


def make_previews(frames: list[fmt.ObjectFrames], cameras: Cameras, plate: np.ndarray, cfg: Config,
                  device: torch.device, static: fmt.StaticGaussians | None = None,
                  stop_point: Callable[[str], None] = lambda before: None):
    """The bundle's preview videos (input view, rotating view, trajectories) and the 2D tracks.

    ``static`` (background mode's background) is composited with the objects in the input and
    rotating views; the trajectories follow the objects only. ``stop_point(before)`` is called
    between the videos (the run's stop check: it raises Cancelled)."""
    pc = cfg.preview
    view = input_view(frames, cameras, plate, device, static=static)
    stop_point("rendering the rotating view")
    rotating = rotating_view(frames, cameras, device, passes=pc.passes, azimuth_deg=pc.orbit_azimuth_deg,
                             elevation_deg=pc.orbit_elevation_deg, pullback=pc.orbit_pullback, static=static)
    stop_point("rendering the trajectories")
    tracks = trajectories(frames, cameras, device, grid=pc.track_grid, trace=pc.track_trace)
    traj = trajectory_video(tracks, np.ascontiguousarray(view[:, :, cameras.width:]), trace=pc.track_trace)
    return {"input_view": view, "rotating": rotating, "trajectories": traj}, tracks


def _targets(prep: Prepared, cfg: Config, cameras: Cameras, reporter: Reporter) -> ClipTargets:
    """Frames, training masks and optical flow between training frames on the device; index tables on the host."""
    clip, train, dev = prep.clip, prep.train, prep.device
    T = clip.num_frames
    prev = np.full(T, -1)
    prev[train[1:]] = train[:-1]
    pairs = [(int(a), int(b)) for a, b in zip(train[:-1], train[1:])]
    c = cfg.stage2
    t0 = time.monotonic()
    flow, hit = cached_flow(clip.frames, pairs, prep.target.parent / FLOW_CACHE, preset=c.flow_preset,
                            fb_rel=c.flow_fb_rel, fb_abs=c.flow_fb_abs, warn=reporter.log)
    reporter.log(f"optical flow ({flow.method}) for {len(pairs)} frame pairs "
                 f"{'from the cache' if hit else 'computed'} in {time.monotonic() - t0:.1f} s, "
                 f"{100 * flow.valid.mean():.0f}% of pixels consistent")
    row = np.full(T, -1)
    row[train[1:]] = np.arange(len(pairs))
    depth = None
    if c.depth_loss and prep.megasam is not None:
        depth = torch.from_numpy(prep.megasam.depths).to(dev)
    frames, masks = prep.clip_tensors()
    return ClipTargets(frames=frames, masks=masks, train=torch.from_numpy(train).long(), prev=torch.from_numpy(prev).long(),
                       flow=torch.from_numpy(flow.flow).to(dev), flow_valid=torch.from_numpy(flow.valid).to(dev),
                       flow_row=torch.from_numpy(row).long(), depth=depth)


def stage2_crops(prep: Prepared, cfg: Config, k: int, ref_side: float) -> np.ndarray:
    """Object k's per-frame conditioning crops for stage 2's guidance (T,S,S,3), S = ``sds.image_size``.

    Only frames the fit may see give a crop: trained frames where the object's mask is non-empty.
    Withheld (--holdout) frames and frames where the object is absent take the nearest such frame's
    crop, so no withheld pixel reaches the fit through the conditioning."""
    masks = prep.fit_masks[k]
    visible = masks.reshape(masks.shape[0], -1).any(1) & prep.trained
    return frame_crops(prep.clip.frames, masks, prep.tracks[k].bbox, visible, ref_side, cfg.stage2.crop_margin,
                       cfg.sds.image_size)


def stage2_conditioning(guidance: Zero123Guidance, prep: Prepared, cfg: Config, sides: list[float],
                        chunk: int = 16) -> list[Conditioning]:
    """Every object's per-frame conditioning, computed once before stage 2 (in chunks of frames, so a
    long clip does not encode all its crops in one batch)."""
    out = []
    for k, side in enumerate(sides):
        crops = stage2_crops(prep, cfg, k, side)
        parts = [guidance.condition(crops[i:i + chunk]) for i in range(0, len(crops), chunk)]
        out.append(Conditioning(clip=torch.cat([p.clip for p in parts]),
                                latents=torch.cat([p.latents for p in parts])))
    return out


def _run_method(req, cfg, prep, cameras, depths, targets, iterations, gen, ckpt, reporter, should_stop,
                guidance: Zero123Guidance | None = None):
    """Stage 1 per object, then stage 2 jointly; checkpoints after each object and during stage 2.

    ``guidance`` (Zero123) distils its prior into stage 1, conditioned on each object's reference crop,
    and into stage 2, conditioned on each object's crop in every sampled frame. Its random stream is
    checkpointed twice: as it was after stage 1 (the stage-2 conditioning draws from it once, and a
    resumed run must draw the same), and as it was at the stage-2 step saved."""
    clip, dev = prep.clip, prep.device
    K = clip.num_objects
    iters1 = cfg.stage1.iterations
    canon: list[CanonicalGaussians] = []
    sides: list[float] = []
    resumed: dict = {}
    if req.resume:
        resumed.update(prep.resume_state)
        sides = [float(x) for x in resumed["ref_sides"]]
        with restoring(ckpt.folder):
            canon = [_canonical_from(d, dev) for d in resumed["stage1"]]
            gen.set_state(resumed["generator1"])
            if guidance is not None and "guidance_generator1" in resumed:
                guidance.generator.set_state(resumed["guidance_generator1"])
        reporter.log(f"resuming: stage 1 done for {len(canon)} of {K} objects"
                     + (f", stage 2 at step {int(resumed['fit']['step'])}" if "fit" in resumed else ""))

    # the random streams as they were when the last object was finished: what every checkpoint saves
    # for stage 1, so that a resumed run refits an interrupted object from the draws it first used
    after_stage1: dict = {}

    def finished_object() -> None:
        after_stage1["generator1"] = gen.get_state()
        if guidance is not None:
            after_stage1["guidance_generator1"] = guidance.generator.get_state()

    finished_object()

    def stage1_payload() -> dict:
        return {"stage1": [_canonical_payload(c) for c in canon], "ref_sides": list(sides), **after_stage1}

    reporter.begin("objects")
    for k in range(len(canon), K):
        tr = prep.tracks[k]
        r = tr.reference
        box = crop_box(tr.bbox[r], cfg.stage1.crop_margin)
        image, mask = crop_object(clip.frames[r], prep.fit_masks[k, r], box, cfg.stage1.crop_size)
        reporter.log(f"object {tr.id}: reference frame {r}, crop {box.side:.0f} px")
        try:
            c = fit_object(ObjectCrop(image, mask), cfg.stage1, object_reference(tr, cameras, cfg), dev, gen,
                           iterations=iters1,
                           guidance=guidance.for_object(image) if guidance is not None else None,
                           on_step=lambda s, n, l, k=k: reporter.progress(k * iters1 + s, K * iters1, l, force=s == n),
                           should_stop=should_stop)
        except Cancelled as e:
            if not canon or not ckpt.save(stage1_payload(), 0):
                raise
            raise Cancelled(f"{e}; the {len(canon)} finished object(s) are saved in {ckpt.folder}",
                            "run the same command with --resume to continue from there") from e
        canon.append(c)
        sides.append(box.side)
        finished_object()
        reporter.log(f"object {tr.id}: {c.num_gaussians} Gaussians")
        ckpt.save(stage1_payload(), 0)
    reporter.end("objects")

    reporter.begin("fit")
    cams = cameras.to(dev)
    with seeded_global(draw_seed(gen), dev):  # the fields' initial weights, from the run's own stream
        scene = build_method_scene(clip.object_ids, canon, prep.tracks, cams, depths, sides, cfg,
                                   trained=prep.trained)
    state = make_stage2_state(scene, cfg, gen)
    conditioning = None
    if guidance is not None:
        guidance.release_graphs()  # stage 1's batch shape is not called again
        t0 = time.monotonic()
        conditioning = stage2_conditioning(guidance, prep, cfg, sides)
        reporter.log(f"guidance: stage-2 conditioning of {K} objects x {clip.num_frames} frames "
                     f"in {time.monotonic() - t0:.1f} s")
    if "fit" in resumed:
        with restoring(ckpt.folder):
            scene.load_state_dict(resumed["model"])
            state.load_state_dict(resumed["fit"])
            if guidance is not None and "guidance_generator2" in resumed:
                guidance.generator.set_state(resumed["guidance_generator2"])
        reporter.log(f"resuming from the checkpoint at step {state.step} of {iterations}")
    kernels = {"triton": "fused Triton", "torch": "torch twins"}[resolve_kernels(cfg.kernels, dev)]
    reporter.log(f"{sum(o.num_gaussians for o in scene.objects)} Gaussians, {iterations} iterations; kernels "
                 f"(plane features, kNN losses): {kernels}")

    def checkpoint() -> bool:
        payload = dict(stage1_payload(), model=scene.state_dict(), fit=state.state_dict())
        if guidance is not None:
            payload["guidance_generator2"] = guidance.generator.get_state()
        return ckpt.save(payload, state.step)

    try:
        final = fit_stage2(scene, targets, cams, cfg, iterations, state,
                           on_step=lambda s, n, l: reporter.progress(s, n, l), should_stop=should_stop,
                           on_checkpoint=checkpoint, guidance=guidance, conditioning=conditioning)
    except Cancelled as e:
        if not checkpoint():
            raise
        raise Cancelled(f"{e}; progress saved in {ckpt.folder}",
                        "run the same command with --resume to continue from there") from e
    reporter.end("fit")
    info = (f"{guidance.model.describe()}; stage 1 and stage 2 (per-frame crops)" if guidance is not None
            else "disabled")
    return scene, final, info


def _run_skeleton(req, cfg, prep, cameras, depths, iterations, gen, ckpt, reporter, should_stop):
    """The rigid baseline: lift each object from its mask, then one joint fit."""
    clip = prep.clip
    reporter.begin("objects")
    model = build_scene(clip.frames, prep.fit_masks, prep.tracks, cameras, depths, cfg, gen,
                        trained=prep.trained).to(prep.device)
    reporter.log(f"{sum(c.num_gaussians for c in model.canonicals)} Gaussians, {iterations} iterations")
    reporter.end("objects")

    reporter.begin("fit")
    cams = cameras.to(prep.device)
    frames, masks = prep.clip_tensors()
    targets = FitTargets(frames=frames, masks=masks, train=torch.from_numpy(prep.train).long().to(prep.device))
    scene_depth = float(np.median(depths))
    state = make_fit_state(model, cfg, iterations, scene_depth, gen)
    if req.resume:
        with restoring(ckpt.folder):
            model.load_state_dict(prep.resume_state["model"])
            state.load_state_dict(prep.resume_state["fit"])
        reporter.log(f"resuming from the checkpoint at step {state.step} of {iterations}")

    def checkpoint() -> bool:
        return ckpt.save({"model": model.state_dict(), "fit": state.state_dict()}, state.step)

    try:
        final = fit_scene(model, targets, cams, cfg, iterations, state, scene_depth=scene_depth,
                          on_step=lambda s, n, l: reporter.progress(s, n, l), should_stop=should_stop,
                          on_checkpoint=checkpoint)
    except Cancelled as e:
        if state.step == 0 or not checkpoint():
            raise
        raise Cancelled(f"{e}; progress saved in {ckpt.folder}",
                        "run the same command with --resume to continue from there") from e
    reporter.end("fit")
    return model, final, "disabled"
