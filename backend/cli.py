"""Command line of the backend: ``python -m backend`` or ``genmojo``.

stdout carries only progress events (JSON lines, ``docs/progress-protocol.md``); stderr carries
human-readable logs. Exit codes: 0 done, 1 internal error, 2 bad input, 130 cancelled.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import traceback
from pathlib import Path

from dataclasses import replace

from .config import PRESETS, Config, get_preset, parse_assignment, validate, with_overrides
from .errors import Cancelled, GenmojoError, InputError, storage_error
from .pipeline import CAMERA_MODES, STAGES, RunRequest, check_run_numbers, run
from .progress import Reporter, claim_stdout

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="genmojo",
        description="Reconstruct every masked object of a video as animated 3D Gaussians and write a "
                    "result bundle that the GenMOJO Blender extension imports.",
        epilog="Progress events go to stdout as JSON lines; logs go to stderr. "
               "Exit codes: 0 done, 1 internal error, 2 bad input, 130 cancelled.")
    io = p.add_argument_group("input and output")
    io.add_argument("--data_dir", required=True, type=Path,
                    help="the clip: a folder of PNG/JPG frames whose names end in a frame number "
                         "(sorted by it, gaps allowed), or a video file (mp4, mov, m4v, avi, mkv, webm)")
    io.add_argument("--mask_dir", required=True, type=Path,
                    help="folder with one sub-folder of binary PNG masks per object (001, 002, ...), named "
                         "like the frames; 000 is the optional background mask")
    io.add_argument("--save_name", required=True,
                    help="name of the result folder created inside --out_dir")
    io.add_argument("--out_dir", type=Path, default=Path("./gaussians"),
                    help="folder that receives the result bundle (default: ./gaussians)")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an existing result of the same name (it is kept until the new one is complete)")
    io.add_argument("--resume", action="store_true",
                    help="continue an interrupted run of the same --save_name from its last checkpoint "
                         "(same inputs, preset and --iters); it finishes with the same number of iterations")
    io.add_argument("--fps", type=float, default=None,
                    help="frame rate of an image sequence (default 24; videos use their own)")
    io.add_argument("--cam_path", type=Path, default=None,
                    help="MegaSAM output npz (depths, intrinsic, cam_c2w; images optional): the fit then "
                         "uses its per-frame cameras (intrinsics rescaled to the clip) and initialises "
                         "object depths from its depth maps. Without it a static camera with a 49.1 degree "
                         "vertical field of view (or --focal_px) is used")
    io.add_argument("--camera", choices=CAMERA_MODES, default="auto",
                    help="where the camera comes from: virtual (a static camera), megasam (--cam_path), solve "
                         "(solved from the footage's background with COLMAP, cached in --out_dir), blender "
                         "(--camera_file written by the extension from Blender's own camera solve); auto "
                         "(default): megasam with --cam_path, else virtual")
    io.add_argument("--camera_file", type=Path, default=None,
                    help="with --camera blender: the camera file (npz) the extension exported from a Movie "
                         "Clip's solved camera (docs/bundle-format.md, camera files)")
    io.add_argument("--focal_px", type=float, default=None, metavar="F",
                    help="without --cam_path: the static camera's focal length in pixels of the original "
                         "frames (principal point at the image centre) instead of the 49.1 degree field of view")
    io.add_argument("--bg_path", type=Path, default=None,
                    help="background mode (needs --cam_path): the clip's first frame with the objects painted "
                         "out. It is lifted into MegaSAM's world with its depth, fitted through the real cameras "
                         "to the background pixels (mask folder 000, else outside every object mask), "
                         "composited with the objects in the previews and written as the bundle's background")
    run_g = p.add_argument_group("run")
    run_g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="configuration preset: cpu-tiny (sample clip, CI), lite (30 iterations per frame), "
                            "full (40 per frame; the default)")
    run_g.add_argument("--lite", action="store_true", help="same as --preset lite (the seed's flag)")
    run_g.add_argument("--disable_guidance", action="store_true",
                       help="run without the diffusion (Zero123) prior that the lite and full presets use")
    run_g.add_argument("--guidance_model", default=None, metavar="FOLDER_OR_HUB_ID",
                       help="the Zero123 model for score distillation: a local folder in the diffusers layout "
                            "(unet, vae, image_encoder, clip_camera_projection, scheduler) or a Hugging Face hub id "
                            "(default ashawkey/zero123-xl-diffusers; looked up in the local cache, then "
                            "downloaded unless HF_HUB_OFFLINE=1). Giving it turns guidance on for presets that "
                            "have it off (cpu-tiny). The run stops before any optimisation if it is not found")
    run_g.add_argument("--guidance_variant", choices=["auto", "zero123-xl", "stable-zero123"], default=None,
                       help="camera embedding of the model: auto (default) picks stable-zero123 when the model's "
                            "name contains 'stable'")
    depth_g = p.add_argument_group("depth (per-object depth factors; default: MegaSAM's with --cam_path, "
                                   "else a heuristic from ground contact and occlusions in the masks)")
    depth_g.add_argument("--depth_dir", type=Path, default=None,
                         help="folder of per-frame depth maps named like the frames (16-bit PNG/TIFF, .npy or "
                              ".exr); their scale does not matter")
    depth_g.add_argument("--depth_is_disparity", action="store_true",
                         help="the maps in --depth_dir hold disparity (inverse depth)")
    depth_g.add_argument("--depth_model", type=Path, default=None,
                         help="local folder of a transformers depth-estimation model (e.g. Depth Anything V2 "
                              "Small saved with save_pretrained), run on every frame")
    run_g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="auto uses CUDA (with gsplat) when available, else the CPU rasterizer")
    run_g.add_argument("--method", choices=["genmojo", "skeleton"], default=None,
                       help="genmojo (default): the method's two stages; skeleton: the rigid baseline it is "
                            "measured against")
    run_g.add_argument("--holdout", type=int, default=0, metavar="N",
                       help="withhold every N-th frame from the fit (frames t with t %% N == N // 2) so that "
                            "python -m backend.evaluate can score them; recorded in the manifest")
    run_g.add_argument("--iters", type=int, default=None,
                       help="override the preset's number of steps of the joint fit (stage 2; for quick checks)")
    run_g.add_argument("--checkpoint_every", type=int, default=None,
                       help="steps between resumable checkpoints (default: the preset's; 0 = only when stopped)")
    run_g.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    run_g.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one config value after the preset and the flags above, e.g. "
                            "--set stage2.w_rigid=20000 (repeatable; --print_config lists them all)")
    run_g.add_argument("--progress_every_s", type=float, default=0.25, metavar="S",
                       help="least seconds between two progress events of a stage (default 0.25; 0 reports "
                            "every step; a stage's last step and each object's last step are always reported)")
    run_g.add_argument("--print_config", action="store_true",
                       help="print the resolved configuration as JSON on stderr before running")
    return p


class _StopFlag:
    """Set by SIGINT/SIGTERM; the optimizer polls it between steps and stops cleanly."""

    def __init__(self):
        self.event = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.event.set())

    def __call__(self) -> bool:
        return self.event.is_set()


class UsageError(Exception):
    """argparse's refusal of the command line (unknown flag, missing or malformed value)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises UsageError instead of exiting, so the refusal becomes a failed event."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def check_flags(args: argparse.Namespace) -> None:
    """InputError for a numeric flag outside its range (NaN and infinity included), before any work.
    Flags that set a config field (--seed, --focal_px, --checkpoint_every) are checked with the config."""
    check_run_numbers(args.fps, args.iters, args.holdout)  # as prepare checks a library caller's
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise InputError(f"--checkpoint_every {args.checkpoint_every}: must be 0 or more",
                         "give 0 to checkpoint only when stopped")
    if not (math.isfinite(args.progress_every_s) and args.progress_every_s >= 0):
        raise InputError(f"--progress_every_s must be 0 or more, not {args.progress_every_s}",
                         "give 0 to report every step")


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset with the flags and the --set overrides applied (not yet validated); InputError for
    conflicting flags and for --set assignments that name no field or give the wrong type."""
    if args.lite and args.preset not in (None, "lite"):
        raise InputError(f"--lite conflicts with --preset {args.preset}", "give one of them")
    cfg = get_preset("lite" if args.lite else (args.preset or "full"))
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if args.method is not None:
        cfg = replace(cfg, method=args.method)
    if args.focal_px is not None:
        cfg = with_overrides(cfg, camera={"focal_px": args.focal_px})
    if args.checkpoint_every is not None:
        cfg = with_overrides(cfg, fit={"checkpoint_every": args.checkpoint_every})
    if args.guidance_model is not None or args.guidance_variant is not None:
        if args.disable_guidance:
            raise InputError("--disable_guidance conflicts with --guidance_model/--guidance_variant",
                             "give --disable_guidance or a guidance model, not both")
        sds = {"model": args.guidance_model} if args.guidance_model is not None else {}
        if args.guidance_variant is not None:
            sds["variant"] = args.guidance_variant
        cfg = replace(with_overrides(cfg, sds=sds), guidance=cfg.guidance or args.guidance_model is not None)
    for text in args.set:
        try:
            cfg = parse_assignment(cfg, text)
        except ValueError as e:
            raise InputError(str(e), "python -m backend --print_config lists every section and field") from e
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:  # every refusal ends with a failed event, so that Blender shows it
        Reporter(STAGES, out=claim_stdout()).failed(str(e), "input", "python -m backend --help lists the options")
        return EXIT_INPUT
    reporter = Reporter(STAGES, out=claim_stdout(), every_s=args.progress_every_s)  # checked before any progress
    try:
        check_flags(args)
        cfg = config_from_args(args)
        if args.print_config:
            print(cfg.to_json(), file=sys.stderr)
        validate(cfg)
    except InputError as e:
        reporter.failed(str(e), "input", e.hint)
        return EXIT_INPUT
    stop = _StopFlag()
    stop.install()
    req = RunRequest(data_dir=args.data_dir, mask_dir=args.mask_dir, out_dir=args.out_dir,
                     save_name=args.save_name, device=args.device, fps=args.fps, overwrite=args.overwrite,
                     disable_guidance=args.disable_guidance, cam_path=args.cam_path, bg_path=args.bg_path,
                     camera=args.camera, camera_file=args.camera_file,
                     iterations=args.iters, holdout=args.holdout, resume=args.resume,
                     command=["genmojo", *argv], depth_dir=args.depth_dir, depth_model=args.depth_model,
                     depth_is_disparity=args.depth_is_disparity)
    try:
        run(req, cfg, reporter, should_stop=stop)
    except Cancelled as e:
        reporter.failed(str(e), "cancelled", e.hint or "nothing was written; run again to start over")
        return EXIT_CANCELLED
    except InputError as e:
        reporter.failed(str(e), "input", e.hint)
        return EXIT_INPUT
    except GenmojoError as e:
        reporter.failed(str(e), e.kind, e.hint)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        reporter.failed("interrupted", "cancelled", "")
        return EXIT_CANCELLED
    except Exception as e:  # report, with the traceback on stderr, instead of dying silently
        refusal = storage_error(e, args.out_dir)  # a full disk, a quota, a read-only or foreign folder
        if refusal is not None:
            reporter.failed(str(refusal), "input", refusal.hint)
            return EXIT_INPUT
        traceback.print_exc(file=sys.stderr)
        reporter.failed(f"{type(e).__name__}: {e}", "internal",
                        "this is a bug; the log above has the details")
        return EXIT_INTERNAL
    return EXIT_OK
