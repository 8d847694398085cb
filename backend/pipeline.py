"""The whole run, stage by stage: clip and masks → tracks → canonical Gaussians → fit → bake → bundle.

Each stage hands the next a typed value. All input checks happen in ``prepare`` before anything heavy
(model building, optimisation) starts, so bad input fails in seconds with a message naming the file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genmojo_blender.core import bundle as fmt

from .bake import bake_objects, render_preview
from .checkpoint import (checkpoint_dir, fingerprint, load_checkpoint, read_info, remove_checkpoint,
                         save_checkpoint)
from .config import Config
from .errors import Cancelled, InputError
from .io.bundle_writer import write_bundle
from .io.clip import Clip, load_clip
from .io.megasam import MegasamCameras, load_megasam, object_depths_from_maps
from .model.camera import Cameras, static_cameras
from .model.tracks import ObjectTrack, ground_contact_depths, track_objects
from .optim.skeleton import FitTargets, build_scene, fit_scene, make_fit_state
from .progress import Reporter

STAGES = ["validate", "init", "fit", "bake", "write"]


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
    iterations: int | None = None  # overrides the preset's budget (smoke runs)
    resume: bool = False
    command: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """Everything validated and loaded, ready for the heavy stages."""

    clip: Clip
    tracks: list[ObjectTrack]
    device: torch.device
    target: Path
    megasam: MegasamCameras | None = None


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


def prepare(req: RunRequest, cfg: Config) -> Prepared:
    """Validate options, output and inputs; load the clip and track the objects. No optimisation."""
    if cfg.guidance and not req.disable_guidance:
        raise InputError(
            f"preset {cfg.preset!r} asks for score-distillation guidance (Zero123), which this backend "
            "version does not provide",
            "pass --disable_guidance to run the reconstruction without the diffusion prior")
    if req.bg_path is not None:
        raise InputError(f"--bg_path {req.bg_path}: background mode is not supported by this backend version",
                         "run without --bg_path; the objects are reconstructed without a background")
    device = resolve_device(req.device)
    target = _check_output(req.out_dir, req.save_name, req.overwrite)
    ckpt = checkpoint_dir(req.out_dir, req.save_name)
    has_checkpoint = read_info(ckpt) is not None
    if req.resume and not has_checkpoint:
        raise InputError(f"{ckpt}: --resume was given but there is no checkpoint of '{req.save_name}' to resume",
                         "run without --resume to start from the beginning")
    if not req.resume and not req.overwrite and has_checkpoint:
        raise InputError(f"{ckpt}: an interrupted run of '{req.save_name}' left a checkpoint",
                         "pass --resume to continue it, or --overwrite to discard it and start over")
    ic = cfg.input
    clip = load_clip(req.data_dir, req.mask_dir, max_side=ic.max_side, fps=req.fps, default_fps=ic.default_fps,
                     min_frames=ic.min_frames, max_frames=ic.max_frames)
    tracks = track_objects(clip.object_ids, clip.masks)
    megasam = None
    if req.cam_path is not None:
        w, h = clip.work_size
        megasam = load_megasam(req.cam_path, clip.num_frames, w, h)
    return Prepared(clip=clip, tracks=tracks, device=device, target=target, megasam=megasam)


def cameras_and_depths(prep: Prepared, cfg: Config) -> tuple[Cameras, np.ndarray, str]:
    """The fit's cameras and each object's (K, T) camera distance per frame, with the depth's source."""
    clip, tracks = prep.clip, prep.tracks
    w, h = clip.work_size
    if prep.megasam is not None:
        ms = prep.megasam
        cams = Cameras(K=torch.from_numpy(ms.K).float(), c2w=torch.from_numpy(ms.c2w).float(), width=w, height=h,
                       near=cfg.camera.near, far=max(cfg.camera.far, float(ms.depths.max()) * 2),
                       source="megasam")
        visible = np.array([tr.visible for tr in tracks])
        return cams, object_depths_from_maps(clip.masks, ms.depths, visible), "megasam depths (masked median)"
    cams = static_cameras(clip.num_frames, w, h, cfg.camera.fovy_deg, cfg.camera.near, cfg.camera.far)
    d = ground_contact_depths(tracks, h, cfg.camera.scene_depth, cfg.init.depth_spread)
    return (cams, np.repeat(d[:, None], clip.num_frames, 1),
            "heuristic: ground contact (lower bottom edge = nearer), constant per object")


def run(req: RunRequest, cfg: Config, reporter: Reporter,
        should_stop: Callable[[], bool] = lambda: False) -> Path:
    """Run every stage and return the finished bundle's folder."""
    t_start = time.monotonic()
    reporter.start(run_id=f"{req.save_name}-{int(time.time())}", save_name=req.save_name,
                   out_dir=str(req.out_dir), device=req.device, preset=cfg.preset)

    reporter.begin("validate")
    prep = prepare(req, cfg)
    clip = prep.clip
    for w in clip.warnings:
        reporter.log(f"note: {w}")
    reporter.log(f"{clip.num_frames} frames {clip.width}x{clip.height} (fit at {clip.work_size[0]}x"
                 f"{clip.work_size[1]}), {clip.num_objects} objects, device {prep.device}")
    reporter.end("validate")

    reporter.begin("init")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    cameras, depths, depth_source = cameras_and_depths(prep, cfg)
    scene_depth = float(np.median(depths))
    model = build_scene(clip.frames, clip.masks, prep.tracks, cameras, depths, cfg, gen).to(prep.device)
    cameras = cameras.to(prep.device)
    targets = FitTargets(frames=torch.from_numpy(clip.frames).to(prep.device).float() / 255,
                         masks=torch.from_numpy(np.moveaxis(clip.masks, 0, -1)).to(prep.device))
    iterations = req.iterations if req.iterations is not None else cfg.fit.iterations(clip.num_frames)
    reporter.log(f"{sum(c.num_gaussians for c in model.canonicals)} Gaussians, {iterations} iterations")
    reporter.end("init")

    reporter.begin("fit")
    ckpt = checkpoint_dir(req.out_dir, req.save_name)
    finger = fingerprint(req.data_dir, req.mask_dir, req.cam_path, cfg, iterations)
    state = make_fit_state(model, cfg, iterations, scene_depth, gen)
    if req.resume:
        load_checkpoint(ckpt, finger, model, state)
        reporter.log(f"resuming from the checkpoint at step {state.step} of {iterations}")
    else:
        remove_checkpoint(ckpt)  # only reached with --overwrite when one exists (checked in prepare)

    def checkpoint() -> bool:
        """Save progress; a failure (disk full, say) is reported but does not end the run."""
        try:
            save_checkpoint(ckpt, model, state, finger)
            return True
        except OSError as e:
            reporter.log(f"warning: could not save a checkpoint in {ckpt} ({e}); the run continues")
            return False

    try:
        final = fit_scene(model, targets, cameras, cfg, iterations, state, scene_depth=scene_depth,
                          on_step=lambda s, n, l: reporter.progress(s, n, l), should_stop=should_stop,
                          on_checkpoint=checkpoint)
    except Cancelled as e:
        if state.step == 0 or not checkpoint():
            raise
        raise Cancelled(f"{e}; progress saved in {ckpt}",
                        "run the same command with --resume to continue from there") from e
    reporter.end("fit")

    reporter.begin("bake")
    visible = np.array([tr.visible for tr in prep.tracks])
    baked = bake_objects(model, visible)
    preview = render_preview(model, cameras, clip.frames)
    reporter.end("bake")

    reporter.begin("write")
    track, cam_info = cameras.to_bundle(clip.width, clip.height)
    info = fmt.ClipInfo(width=clip.width, height=clip.height, fps=clip.fps, frame_names=clip.frame_names,
                        frame_numbers=clip.frame_numbers, source=clip.source)
    run_info = fmt.RunInfo(optimizer="skeleton", preset=cfg.preset, device=str(prep.device),
                           iterations=iterations, guidance="disabled", depth_source=depth_source,
                           duration_s=round(time.monotonic() - t_start, 2), final_losses=final,
                           config=cfg.to_dict(), command=req.command)
    path = write_bundle(req.out_dir, req.save_name, clip=info, camera=track, camera_info=cam_info,
                        objects=baked, run=run_info, preview=preview, overwrite=req.overwrite)
    remove_checkpoint(ckpt)
    reporter.end("write")
    reporter.done(str(path.resolve()))
    return path
