"""Every weight, schedule, count and learning rate of a run, in typed configs with named presets.

Nothing numeric that changes results lives inline in the optimizer: it reads this config. Presets:

- ``cpu-tiny``  the built-in sample and CI: small working resolution, few Gaussians, a short fit.
- ``lite``      the seed's ``--lite`` budget (30 iterations per frame), for GPUs.
- ``full``      the seed's default budget (40 iterations per frame), for GPUs.

Two optimizers share this config: ``method="genmojo"`` (the method of docs/method.md: stage 1 per
object, stage 2 jointly with deformation fields) and ``method="skeleton"`` (rigid motion per object,
kept as the baseline the method is measured against). Flags named ``parity_*`` reproduce behaviour the
spec marks [quirk]; they default to the fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any


MAX_FPS = 1000.0  # a frame rate above this is a typo (videos report up to it, backend/io/clip.py)
# a complete checkpoint of another interrupted run in the same --out_dir is removed, with a log line, once
# its files are older than this many days; younger ones are listed at the start of each run
# (backend/checkpoint.py tidy_checkpoints). Not part of Config: it must not change the run's fingerprint
STALE_CHECKPOINT_DAYS = 30.0


@dataclass(frozen=True)
class InputConfig:
    """How the clip is read. Frames whose longer side exceeds ``max_side`` are downscaled for the fit."""

    max_side: int = 720
    default_fps: float = 24.0  # for image sequences, which carry no timing
    min_frames: int = 2
    max_frames: int = 2000


@dataclass(frozen=True)
class CameraConfig:
    """The static virtual camera used when no real camera is given (the spec's 49.1° vertical FoV)."""

    fovy_deg: float = 49.1
    near: float = 0.01
    far: float = 100.0
    scene_depth: float = 4.0  # distance of the objects from the camera, in scene units
    # the static camera's focal length in pixels of the original clip (--focal_px; principal point at
    # the centre); None: from fovy_deg. Not with --cam_path, whose intrinsics are the camera's own
    focal_px: float | None = None


@dataclass(frozen=True)
class CameraSolveConfig:
    """The camera solved from the footage's background (``--camera solve``, backend/priors/camera_solve.py).

    COLMAP (pycolmap) extracts SIFT features outside the object masks (grown by ``mask_grow_px``),
    matches each frame with its ``overlap`` successors and maps incrementally with one shared camera
    (``camera_model``) for the clip. Frames it cannot register are interpolated between their registered
    neighbours; more than ``max_unregistered_fraction`` of them (or fewer than ``min_registered`` registered
    frames) stops the run. The solve's world is rescaled so that the median depth of the background points
    it triangulated equals ``CameraConfig.scene_depth``, with frame 0's camera at the origin.
    """

    camera_model: str = "SIMPLE_PINHOLE"  # or PINHOLE (fx, fy) or SIMPLE_RADIAL (k1 reported, not used by the fit)
    mask_grow_px: int = 4  # object masks are dilated by this many pixels before features are excluded there
    max_features: int = 4096  # SIFT features per frame
    overlap: int = 8  # sequential matching: each frame against this many following frames
    min_registered: int = 3
    max_unregistered_fraction: float = 0.25  # above this the run stops instead of interpolating
    num_threads: int = -1  # COLMAP's threads (-1: all cores)
    seed: int = 0  # COLMAP's random seed, so a solve repeats


@dataclass(frozen=True)
class InitConfig:
    """Per-object Gaussians lifted from the object's mask in its reference frame."""

    gaussians_per_object: int = 4000
    thickness: float = 0.25  # depth spread as a fraction of the object's radius
    opacity: float = 0.7
    scale_factor: float = 0.9  # initial std-dev as a fraction of the sampling spacing
    depth_spread: float = 0.35  # how far the ground-contact heuristic separates objects in depth (log units)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the skeleton fit's terms (see backend/optim/losses.py for definitions)."""

    rgb: float = 1.0  # balanced MSE of the joint render vs the frame inside/outside the union mask
    alpha: float = 0.5  # balanced MSE of the rendered alpha vs the union mask
    instance: float = 1.0  # MSE of each object's composited visibility vs its own mask
    motion_smooth: float = 0.05  # second difference of per-frame translations (scene units / depth)
    scale_reg: float = 0.01  # keeps Gaussians from growing into large blobs


@dataclass(frozen=True)
class Stage1Config:
    """Stage 1: each object's static Gaussians fitted to its object-centric crop (spec §3)."""

    iterations: int = 1000
    crop_size: int = 256  # square reference image, pixels
    crop_margin: float = 0.65  # the object's larger side fills this fraction of the crop
    camera_radius: float = 2.0  # the orbit views (and the spec's reference camera) sit this far from the origin
    # the camera the crop is fitted through (model/object_camera.py): "scene", the reference frame's own
    # camera restricted to the crop, which stage 2's placement reproduces wherever the object is in the
    # frame; "centred", the spec's camera on the object's axis, which it reproduces only at the image centre
    reference_camera: str = "scene"
    num_points: int = 5000  # initial Gaussians, uniform in a ball
    init_radius: float = 0.5
    init_opacity: float = 0.1
    init_color: float = 0.5
    w_rgb: float = 10000.0  # balanced MSE of the render vs the white-background object image
    w_alpha: float = 1000.0  # balanced MSE of the alpha vs the mask
    # pixels this close to the mask weigh like inside pixels in the balanced MSE (0: the spec's
    # BalancedMSE, whose inside/outside weighting pushes silhouettes outwards; see optim/losses.py).
    # Off by default: 4 px in both stages tightened training silhouettes on crossing but cost 3.6 dB
    # on held-out frames (docs/results.md)
    silhouette_band_px: int = 0
    # 4·α(1−α) averaged over the pixels within alpha_sharp_ring_px of the mask's edge (optim/losses.py
    # alpha_sharpness), × step/iterations like the other reconstruction terms; 0: the spec, no such term.
    # Off: on crossing it locked in the spec loss's spill (area ratio 1.4) and, with the band in both
    # stages, left held-out PSNR where the band alone puts it (docs/results.md)
    w_alpha_sharp: float = 0.0
    alpha_sharp_ring_px: int = 2
    ramp: bool = True  # multiply the reconstruction terms by step/iterations, as the spec
    lr_means: float = 1e-2  # decays log-linearly to lr_means_final over lr_means_steps
    lr_means_final: float = 2e-4
    lr_means_steps: int = 500
    lr_colors: float = 0.01
    lr_opacity: float = 0.05
    lr_scales: float = 0.005
    lr_quats: float = 0.005
    weight_decay: float = 0.01  # AdamW's default, as the spec
    # densification and pruning (gsplat's DefaultStrategy; thresholds in its units)
    extent: float = 0.5  # the object's radius in object units; scale thresholds are relative to it
    densify_every: int = 100
    densify_until: int = 3000
    max_gaussians: int = 15000  # densify only while fewer than this
    grow_grad2d: float = 0.01
    grow_scale3d: float = 0.01  # clone at or below this × extent, split above
    prune_opacity: float = 0.01
    prune_scale3d: float = 0.1  # × extent
    opacity_reset_every: int = 1200  # gsplat 1.5.3 never resets (operator-precedence bug); we do
    final_prune_opacity: float = 0.01
    final_prune_scale: float = 0.1  # object units
    # what the hidden side of the object becomes (model/back_prior.py): "mirror", the Gaussians in front of a
    # middle surface inflated from the silhouette copied behind it, so the object has a body instead of being a
    # card from the side; "none", the spec (without guidance, nothing shapes the back); "auto", mirror when no
    # novel-view guidance runs, none when it does (the guidance shapes the back then). Measured without guidance
    # (docs/results.md): on one H200 every image figure of crossing, gt_medium, horsejump-high and breakdance
    # within 0.2 dB / 0.01 IoU, the ground-truth clip's object centres and hidden points' tracks nearer the truth
    # (cube centre error 0.129 -> 0.072, points hidden by another object 0.195 -> 0.171); on the CPU its novel
    # views +1.1 dB. Its twice as many Gaussians cost stage 2 some time
    back_prior: str = "auto"


@dataclass(frozen=True)
class DeformationConfig:
    """Per-object deformation field (spec §4.2): multi-scale plane features, motion bases, heads."""

    grid_resolutions: tuple[int, ...] = (64, 128, 256, 512)  # spatial, one plane set per scale
    grid_channels: int = 32  # per plane; scales are concatenated → channels × len(resolutions)
    # time resolution = max(min_time_resolution, factor × T). The spec's 0.8 and 25 give nearly one time
    # node per frame: a node between trained frames (--holdout, in-between times) then gets almost no
    # gradient and stays at its neutral start, so the field reverts towards the reference pose there.
    # One node per 4 frames keeps every node supported by several frames (docs/results.md: crossing
    # held out +0.5 to +1.6 dB over two seeds, the ground-truth clip 14.2 -> 19.8 dB).
    time_resolution_factor: float = 0.25  # spec 0.8
    min_time_resolution: int = 8  # spec 25
    bounds: float = 1.6  # object-space positions are divided by this before sampling the planes
    spatial_init: tuple[float, float] = (0.1, 0.5)  # uniform init of spatial planes; time planes 1
    hidden: int = 64  # trunk width
    num_bases: int = 10  # motion bases (object-global 3D displacements per frame)
    basis_hidden: int = 64
    # where the motion bases' time MLP (Linear(1 → basis_hidden) → ReLU) can bend at the start: "spread", one
    # hinge per hidden unit, evenly over the clip; "centre", the public code's zero biases, which put every
    # hinge at the clip's middle frame, so each basis starts as two straight pieces of motion and a fast
    # out-and-back movement (a kick, a jump) elsewhere in the clip has no hinge to bend at
    basis_knots: str = "spread"
    # at most one hinge per this many frames (0: basis_hidden hinges whatever the clip's length). 64 hinges
    # on a 24-frame clip put about three between two trained frames around a withheld one, where nothing
    # but the fit's path through the weights decides how the bases bend. Measured on one H200 with 2 (12
    # hinges on the ground-truth clip, docs/results.md): held-out PSNR within 0.05 dB, 3D tracks 0.213 ->
    # 0.237; off
    basis_hinge_frames: float = 0.0
    min_basis_hinges: int = 8
    # what a motion basis is: "translation", an object-global 3D displacement per frame (the spec), so a
    # Gaussian's motion is a convex combination of translations; "se3", a rigid motion per frame (rotation
    # about the object's origin, then translation) blended by the same coefficients, as linear blend
    # skinning, so a limb that swings about a joint is one basis instead of a mix the coefficients must track.
    # One H200, lite, no guidance, --holdout 4 (docs/results.md): on the ground-truth clip the 3D track error
    # fell 0.263 -> 0.199 (visible) and 0.327 -> 0.270 (occluded), 2D δ_avg rose 0.379 -> 0.472, pixels within
    # 0.1 dB; on horsejump-high every figure within 0.2 dB / 0.01 IoU
    motion_bases: str = "se3"
    parity_random_init: bool = False  # True: xavier-initialised basis MLP and colour head [quirk]


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2: all objects jointly, each with a deformation field and a scene placement (spec §4)."""

    iters_per_frame: int = 30  # lite 30, full 40
    min_iterations: int = 100
    frames_per_batch: int = 8
    accumulation: int = 2  # micro-batches per optimiser step
    crop_margin: float = 0.9  # per-frame crop scale = max(bbox / margin, reference crop) (scale_init "spec")
    # the objects' per-frame scale in the scene (optim/stage2.placement_sides): "spec" (max(bbox / margin,
    # reference crop), the reference size wherever the object is smaller) or "box" (the reference size times
    # the bbox's change of size, measured where the mask is clear of the image border)
    scale_init: str = "spec"
    # learning rates (constant) and AdamW weight decay
    lr_mlp: float = 6.4e-4
    lr_grid: float = 6.4e-3
    lr_colors: float = 1e-3
    lr_translation: float = 6.4e-4
    lr_depth: float = 6.4e-4
    # a learned per-frame correction of the scale, in log units (0: the spec's fixed scale, which leaves an
    # object's change of apparent size to its deformation field). crossing, 3 seeds: held-out PSNR +0.5 to
    # +0.8 dB, all acceptance targets met in 2 of 3 seeds against 1 of 3; the ground-truth clip within
    # 0.2 dB (docs/results.md)
    lr_scale: float = 1e-3
    weight_decay: float = 0.01  # MLPs and colours
    grid_weight_decay: float = 0.0  # the public code decays the grids too (0.01) [quirk]
    # depth-factor initialisation: smoothing over frames and per-frame rate limit (log units)
    depth_smooth_sigma: float = 1.0
    depth_smooth_size: int = 5
    depth_rate_limit: float = 0.05
    # kNN neighbourhoods within each object (rigidity and scale smoothness)
    knn: int = 16  # neighbours including the point itself
    knn_weight_scale: float = 10.0  # w_ij = exp(-scale · d_ij), d in object units
    # loss weights (× step/iterations when ramp, ÷ frames per batch)
    ramp: bool = True
    w_rgb: float = 10000.0
    w_alpha: float = 1000.0
    silhouette_band_px: int = 0  # as Stage1Config.silhouette_band_px, around the union mask (0: the spec)
    # the RGB and alpha terms' balancing counts the pixels the render covers (alpha above spill_alpha) with
    # the mask's, so spill costs per pixel what a miss costs (optim/losses.spill_weighted); False: the spec,
    # under which objects the field cannot follow yet swell into the union of their poses. One H200, lite,
    # --holdout 4 (docs/results.md): held-out IoU on horsejump-high 0.617 -> 0.861, parkour 0.588 -> 0.867,
    # breakdance 0.652 -> 0.808, area ratios 1.5-1.7 -> 1.01-1.05; PSNR inside the masks fell by about 2 dB on
    # those clips, all of it at the silhouettes' edge (a spilled render covers the mask's edge for free)
    spill_weighted: bool = True
    spill_alpha: float = 0.05
    w_alpha_sharp: float = 0.0  # as Stage1Config.w_alpha_sharp, around the union mask (0: the spec)
    alpha_sharp_ring_px: int = 2
    w_instance: float = 100.0
    instance_start: float = 0.75  # fraction of training after which the instance loss is on
    instance_hard_threshold: float = 0.75  # only pixels whose true object has less visibility than this
    parity_instance_object0: bool = False  # True: test object 0's weight for every pixel [quirk]
    w_flow: float = 10000.0
    w_scale_change: float = 1000.0
    # mean |Δlog σ| of the field's scale output against the canonical Gaussians, at every sampled frame (0: the
    # spec, which only penalises the change between consecutive frames). Nothing else holds a change of size
    # that is the same in every frame: with the spec's balancing, on a CPU run of horsejump-high every Gaussian
    # grew about e-fold in every frame and the horse became a blob twice its mask. With spill_weighted on, the
    # GPU benchmark measured no difference either way (docs/results.md); kept as the guard against that mode.
    # An object's apparent size is its placement's scale; a Gaussian of a solid object keeps its size
    w_scale_drift: float = 1000.0
    # mean squared second difference over the clip of each object's placement in pixels (optim/stage2.placement_jerk):
    # its centre's image position, and its apparent size and depth factor as log changes times its radius in
    # pixels (0: the spec, whose per-frame translation, depth and scale are free per frame). Withheld frames read
    # their placement interpolated from their neighbours, so wobble at the trained frames is what they miss. One
    # H200, lite, no guidance, --holdout 4 (docs/results.md): the ground-truth clip's held-out PSNR 20.25 -> 21.24
    # dB (30: 21.38, 100: 21.28), lowest IoU 0.910 -> 0.945, its wobbliest object's jitter 1.68 -> 0.99 px per
    # trained frame; horsejump-high 17.88 -> 17.96 dB and breakdance 13.73 -> 14.15 dB against the previous run
    w_placement_smooth: float = 10.0
    # mean squared second difference, in pixels, of each object's motion bases over every frame of the clip,
    # withheld ones included (optim/stage2.basis_jerk; 0: the spec, which never looks at the bases between
    # the frames it fits). Measured on one H200 (docs/results.md): 100 and 1000 moved the ground-truth clip's
    # held-out PSNR by +0.05 and -0.2 dB, so the bases do not bend between trained frames; off
    w_basis_smooth: float = 0.0
    # mean squared second difference in pixels of each Gaussian's deformed position over three consecutive
    # frames, centred on the batch's frames and the frames after them, so withheld frames are centres too
    # (optim/stage2.field_jerk; 0: the spec). On field_jerk_points of each object's Gaussians per step
    w_field_jerk: float = 0.0
    field_jerk_points: int = 2048
    w_color_change: float = 500.0
    w_local_scale: float = 50000.0
    w_rigid: float = 50000.0
    # K-Planes time smoothness of each object's space-time planes (0: the spec, whose public code
    # leaves the hexplane regularisers unused)
    w_time_smooth: float = 0.0
    # the paper's depth term (the public code never applies it [quirk]), on the MegaSAM depth maps that come
    # with --cam_path; measured on the ground-truth clip: 3D track error -33 %, novel views +3.9 dB
    depth_loss: bool = True
    w_depth: float = 1000.0
    parity_scale_first_depth: bool = False  # True: splat sizes use frame 0's depth factor [quirk]
    random_background: bool = True  # white or black per frame
    # optical flow (OpenCV DIS) and its forward-backward check (occluded if |f + b∘f| > rel·(|f|+|b|) + abs)
    flow_preset: str = "medium"
    flow_fb_rel: float = 0.01
    flow_fb_abs: float = 0.5

    def iterations(self, num_frames: int) -> int:
        return max(self.min_iterations, self.iters_per_frame * num_frames)


@dataclass(frozen=True)
class PreviewConfig:
    """Preview videos written into the bundle (spec §6)."""

    passes: int = 2  # how many times the rotating view cycles through the clip
    orbit_azimuth_deg: float = 10.0  # the rotating view swings ±this about the input view
    orbit_elevation_deg: float = 20.0  # and rises up to this above it
    orbit_pullback: float = 1.25  # camera distance relative to the scene centre (spec: 2.5 / 2)
    track_grid: int = 48  # query points per image side for the trajectory video
    track_trace: int = 10  # frames of trail drawn behind each point


@dataclass(frozen=True)
class GuidanceConfig:
    """Zero123 score distillation (spec §2.3, §3.3, §4.6); ``Config.guidance`` switches it on or off.

    Offsets are Zero123's: Δpolar (positive = camera moves down), Δazimuth (positive = to the camera's
    right), Δradius; integer degrees are drawn from [lo, hi) as the public code does.
    """

    model: str = "ashawkey/zero123-xl-diffusers"  # local folder (diffusers layout) or hub id; --guidance_model
    variant: str = "auto"  # zero123-xl | stable-zero123 | auto (stable-zero123 when the name says "stable")
    dtype: str = "bfloat16"  # on CUDA (bfloat16 or float16); the CPU always runs float32
    # on CUDA, the UNet and VAE in the NHWC layout with cuDNN autotuning. Off: on an H100 (torch 2.11,
    # bf16) it made the 32-image guidance step slower, 213.5 ms against 170.9 ms (docs/performance.md)
    channels_last: bool = False
    # torch.compile mode of the frozen UNet forward and the VAE encoder path (backend/priors/zero123.py,
    # COMPILE_MODES): "none" (eager), "default" or "max-autotune-no-cudagraphs"; fixed shapes, one graph
    # each, compiled on the first guidance call. "reduce-overhead" is not offered: its CUDA graphs would
    # cover the two networks separately and not the VAE encoder's backward; cuda_graph (below) captures the
    # whole call, compiled or not
    compile: str = "none"
    # the VAE mid block's attention (backend/priors/zero123.py VAE_ATTENTIONS): "matmul" (baddbmm, float
    # softmax, bmm) or "sdpa" (torch's fused kernels, whose backward for its one 512-channel head took 6.1 ms
    # of a 110.5 ms compiled 32-image guidance step on an H100; 104.7 ms with "matmul", docs/performance.md)
    vae_attention: str = "matmul"
    # on CUDA, each guidance call (VAE encoder forward, the UNet's two branches, the encoder's backward into
    # the images) is captured once per batch shape as a CUDA graph and replayed: one launch instead of about
    # 1 200, so the host prepares the next object's renders while the device runs it (priors/cuda_graph.py).
    # Each captured shape keeps the memory of one call's activations (the allocator's peak reservation in a
    # lite run on an H100: 28.8 GiB against 18.9 GiB without). No effect on the CPU
    cuda_graph: bool = False
    image_size: int = 256  # renders and conditioning crops are resized to this for the VAE
    guidance_scale: float = 5.0  # classifier-free guidance; unconditional = zero CLIP token, zero latent
    weight: float = 1.0  # λ_zero123; the loss is weight · SDS sum / number of images
    reference_polar_deg: float = 90.0  # the conditioning view's polar angle (Stable-Zero123's 4th entry)
    cond_latent: str = "sample"  # VAE posterior "sample" (as the public code) or "mode" for the image latent
    polar_range_deg: tuple[int, int] = (-30, 30)
    azimuth_range_deg: tuple[int, int] = (-180, 180)
    # stage 1: views per step, Δradius range, noise-level range (fractions of the train timesteps)
    stage1_views: int = 16
    stage1_radius_range: tuple[float, float] = (-0.5, 0.5)
    stage1_t_range: tuple[float, float] = (0.02, 0.98)
    # stage 2: views per sampled frame (frames per batch come from Stage2Config), Δradius, noise levels
    stage2_views: int = 4
    stage2_radius_range: tuple[float, float] = (0.0, 0.0)
    stage2_t_range: tuple[float, float] = (0.02, 0.5)
    # stage 2's object-centric render side: sizes[i] while step_ratio < steps[i], the last size after
    stage2_render_sizes: tuple[int, int, int] = (128, 256, 512)
    stage2_render_steps: tuple[float, float] = (0.3, 0.6)


@dataclass(frozen=True)
class DepthPriorConfig:
    """Per-object depths from depth maps or, without any, from the masks (backend/priors/depth.py).

    The heuristic's ground-contact slope is ``InitConfig.depth_spread``; occlusion evidence between two
    objects asks for a log-depth gap of ``occlusion_margin`` with weight ``occlusion_weight`` × confidence.
    """

    occlusion_margin: float = 0.1  # log units (about 10 % of the depth)
    occlusion_weight: float = 10.0  # relative to the ground-contact term (weight 1)
    occlusion_min_pixels: float = 20.0  # damps the confidence of a few covered pixels
    model_batch: int = 4  # frames per call of a --depth_model
    disparity_floor: float = 1e-3  # disparity below this fraction of the frame's maximum counts as far


@dataclass(frozen=True)
class BackgroundConfig:
    """Background mode (``--bg_path`` with ``--cam_path``, backend/model/background.py).

    Static Gaussians in MegaSAM's world, lifted from the inpainted background image (it shows frame
    ``reference_frame``) with that frame's MegaSAM depth and camera, then fitted against the visible
    background pixels of the training frames through every frame's real camera. Loss per step (B
    frames): ``w_rgb`` × MSE on the background mask (render over a random white/black backdrop, so
    colour cannot hide behind transparency) + ``w_alpha`` × mean (1 − alpha)² there + ``w_depth`` ×
    mean |log rendered depth − log MegaSAM depth| there.
    """

    reference_frame: int = 0  # the frame the inpainted image shows (the spec: frame 0)
    max_gaussians: int = 200_000  # one per pixel, or every s-th pixel in x and y when there are more
    scale_factor: float = 0.7  # initial std-dev as a fraction of the sampling spacing at its depth
    init_opacity: float = 0.9
    # MegaSAM's reference depth under the objects (not background there) is filled from the
    # surrounding background (log depth, from the hole's rim inwards, window of depth_fill_radius_px)
    # over the object masks grown by depth_fill_grow_px, so blurred object edges are filled too
    depth_fill_grow_px: int = 2
    depth_fill_radius_px: int = 5
    mask_erode_px: int = 1  # background-mask pixels this close to an object are left out of the fit
    iterations: int = 1000
    frames_per_step: int = 4
    w_rgb: float = 1.0
    w_alpha: float = 0.1
    w_depth: float = 0.05
    lr_means: float = 1e-4  # × the median background depth (positions move in world units)
    lr_colors: float = 0.02
    lr_opacity: float = 0.05
    lr_scales: float = 0.005


@dataclass(frozen=True)
class FitConfig:
    """Iteration budget, batching and learning rates of the joint fit."""

    iters_per_frame: int = 30
    min_iterations: int = 100
    frames_per_step: int = 8
    lr_means: float = 2e-3  # scaled by the object's radius
    lr_colors: float = 2.5e-2
    lr_opacity: float = 5e-2
    lr_log_scales: float = 1e-2
    lr_quats: float = 1e-2
    lr_translation: float = 2e-3  # scaled by the scene depth
    lr_rotation: float = 5e-3
    lr_final_factor: float = 0.1  # exponential decay of all learning rates to this factor at the end
    random_background: bool = True  # white or black background per rendered frame, like the spec
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: only when stopped)

    def iterations(self, num_frames: int) -> int:
        return max(self.min_iterations, self.iters_per_frame * num_frames)


@dataclass(frozen=True)
class Config:
    """A complete run configuration. ``preset`` names where it came from."""

    preset: str = "lite"
    input: InputConfig = field(default_factory=InputConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    camera_solve: CameraSolveConfig = field(default_factory=CameraSolveConfig)  # used with --camera solve
    init: InitConfig = field(default_factory=InitConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    method: str = "genmojo"  # or "skeleton"
    stage1: Stage1Config = field(default_factory=Stage1Config)
    deformation: DeformationConfig = field(default_factory=DeformationConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    guidance: bool = True
    seed: int = 888
    sds: GuidanceConfig = field(default_factory=GuidanceConfig)  # settings of the guidance when it is on
    depth_prior: DepthPriorConfig = field(default_factory=DepthPriorConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)  # used with --bg_path
    # stage 2's custom kernels (backend/kernels: plane features, kNN rigidity and scale smoothness): "auto" =
    # the fused Triton kernels on CUDA where Triton is installed, their torch twins otherwise; "triton" = the
    # fused kernels or a refusal before any work; "torch" = the twins everywhere
    kernels: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


PRESETS: dict[str, Config] = {
    "cpu-tiny": Config(
        preset="cpu-tiny",
        input=InputConfig(max_side=96),
        init=InitConfig(gaussians_per_object=300),
        fit=FitConfig(iters_per_frame=10, min_iterations=60, frames_per_step=2, checkpoint_every=50),
        stage1=Stage1Config(iterations=60, crop_size=48, num_points=300, max_gaussians=1000,
                            densify_every=15, lr_means_steps=30, opacity_reset_every=0),
        deformation=DeformationConfig(grid_resolutions=(8, 16), grid_channels=8, min_time_resolution=4,
                                      hidden=32, basis_hidden=32, num_bases=4),
        # a 30x shorter fit than lite: learning rates 5x the spec's so that it moves as far
        stage2=Stage2Config(iters_per_frame=6, min_iterations=40, frames_per_batch=2, accumulation=1,
                            knn=8, lr_mlp=3.2e-3, lr_grid=3.2e-2, lr_colors=5e-3, lr_translation=3.2e-3,
                            lr_depth=3.2e-3, lr_scale=5e-3),
        preview=PreviewConfig(passes=1, track_grid=12),
        guidance=False,
        sds=GuidanceConfig(stage1_views=2, stage2_views=1,  # only used with a local model
                           stage2_render_sizes=(48, 48, 48)),
        background=BackgroundConfig(iterations=80, frames_per_step=2),
    ),
    # the GPU presets compile the guidance networks (on an H100 a stage-2 step with guidance took 0.935 s
    # against 1.114 s eager, for about 80 s of compiling on first use) and replay each guidance call from a
    # CUDA graph (0.785 against 0.815 s per step on one H100; docs/performance.md)
    "lite": Config(preset="lite", fit=FitConfig(iters_per_frame=30), stage2=Stage2Config(iters_per_frame=30),
                   sds=GuidanceConfig(compile="default", cuda_graph=True)),
    "full": Config(preset="full", fit=FitConfig(iters_per_frame=40), stage2=Stage2Config(iters_per_frame=40),
                   sds=GuidanceConfig(compile="default", cuda_graph=True)),
}


def get_preset(name: str) -> Config:
    """The named preset; raises KeyError listing the valid names."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return ``cfg`` with fields of its sections replaced, e.g. ``fit={"iters_per_frame": 2}``."""
    changes = {}
    for section, values in sections.items():
        current = getattr(cfg, section)
        if dataclasses.is_dataclass(current):
            changes[section] = replace(current, **values)
        else:
            changes[section] = values
    return replace(cfg, **changes)


def parse_assignment(cfg: Config, text: str) -> Config:
    """``cfg`` with one field set from ``"section.field=value"`` (or ``"field=value"`` for a top-level
    field), the value read as JSON (bare words as strings) and checked against the field's current type.

    Raises ValueError naming the key and the valid choices, so a typo never silently runs the defaults.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects section.field=value, got {text!r}")
    path = key.strip().split(".")
    if len(path) > 2:
        raise ValueError(f"--set {key}: at most one section level (section.field)")
    owner = getattr(cfg, path[0], None) if len(path) == 2 else cfg
    name = path[-1]
    if len(path) == 2 and not dataclasses.is_dataclass(owner):
        sections = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
        raise ValueError(f"--set {key}: no config section {path[0]!r}; sections: {', '.join(sections)}")
    names = [f.name for f in dataclasses.fields(owner)]
    if name not in names:
        raise ValueError(f"--set {key}: {type(owner).__name__} has no field {name!r}; fields: {', '.join(names)}")
    current = getattr(owner, name)
    if dataclasses.is_dataclass(current):
        raise ValueError(f"--set {key} is a section; set one of its fields ({key}.<field>=value)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(current, bool) or isinstance(value, bool):
        ok = isinstance(current, bool) and isinstance(value, bool)
    elif isinstance(current, float) and isinstance(value, int):
        value, ok = float(value), True
    elif isinstance(current, tuple) and isinstance(value, list):
        value, ok = tuple(value), True
    else:
        ok = current is None or isinstance(value, type(current))
    if not ok:
        raise ValueError(f"--set {key}: expected {type(current).__name__} (like {json.dumps(current)}), got {raw!r}")
    return with_overrides(cfg, **({path[0]: {name: value}} if len(path) == 2 else {name: value}))


# ---------------------------------------------------------------------------------------------
# what every field accepts: checked for presets and overrides alike before any work (validate)


@dataclass(frozen=True)
class Check:
    """The values one config field accepts. ``validate`` applies it to the field's value, or to each element
    of a tuple field. Numbers are always finite; ``lo``/``hi`` bound them (inclusive unless ``*_open``)."""

    kind: type  # bool, int, float or str: of the value, or of each element of a tuple
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()  # strings: the allowed values (empty: any non-empty string)
    extra: tuple[int, ...] = ()  # values accepted outside the range (e.g. -1 for "all cores")
    optional: bool = False  # None is accepted (the field's "not given")
    length: int | None = None  # tuples: exactly this many elements, 0 for one or more; None: not a tuple
    ordered: bool = False  # tuples: elements in non-decreasing order
    multiple_of: int = 1  # ints: a multiple of this
    flag: str = ""  # the command-line flag that sets the field, named in the refusal
    words: str = ""  # what it accepts in the user's terms, instead of the words made from the bounds

    def describe(self) -> str:
        """What the field accepts, in words, for the refusal's message."""
        if self.words:
            return self.words
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return f"one of {', '.join(self.choices)}" if self.choices else "a non-empty string"
        what = "an integer" if self.kind is int else "a finite number"
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is not None and self.hi is not None:
            what += f" in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            what += f" {'>' if self.lo_open else '>='} {lo}"
        elif self.hi is not None:
            what += f" {'<' if self.hi_open else '<='} {hi}"
        if self.multiple_of > 1:
            what += f", a multiple of {self.multiple_of}"
        if self.extra:
            what += f" (or {', '.join(map(str, self.extra))})"
        if self.length is not None:
            count = "one or more" if self.length == 0 else str(self.length)
            what = f"a list of {count} values, each {what}" + (", in increasing order" if self.ordered else "")
        if self.optional:
            what += " (or null)"
        return what

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one this field may hold."""
        if value is None:
            return self.optional
        if self.length is not None:
            if not isinstance(value, tuple) or (len(value) != self.length if self.length else not value):
                return False
            if not all(self._accepts_one(v) for v in value):
                return False
            return not self.ordered or all(a <= b for a, b in zip(value, value[1:]))
        return self._accepts_one(value)

    def _accepts_one(self, v: Any) -> bool:
        if self.kind is bool:
            return isinstance(v, bool)
        if self.kind is str:
            return isinstance(v, str) and (v in self.choices if self.choices else bool(v.strip()))
        if isinstance(v, bool) or not isinstance(v, int if self.kind is int else (int, float)):
            return False
        if not math.isfinite(v):
            return False
        if v in self.extra:
            return True
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return self.kind is not int or v % self.multiple_of == 0


def _number(x: float | None) -> str:
    """A bound as the message shows it: whole numbers in full, others in %g."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


COUNT = Check(int, lo=1)  # how many of something: at least one
NONNEG_INT = Check(int, lo=0)  # pixels, steps between events (0: none/off)
WEIGHT = Check(float, lo=0)  # loss weights, learning rates, tolerances: 0 switches a term off
POSITIVE = Check(float, lo=0, lo_open=True)  # sizes, distances, factors that divide or are logged
FRACTION = Check(float, lo=0, hi=1)  # fractions of the training, probabilities, thresholds on opacity
OPEN_FRACTION = Check(float, lo=0, hi=1, lo_open=True, hi_open=True)  # opacities whose logit is taken
SIGNED = Check(float)  # any finite number
FLAG = Check(bool)
SEED = Check(int, lo=0, hi=2**32 - 1)

# every config field by section ("" for Config's own); a field missing here gets its default's type with
# numbers >= 0 (tests/test_bad_input.py asserts that every field is listed)
FIELD_CHECKS: dict[str, dict[str, Check]] = {
    "": {"preset": Check(str), "method": Check(str, choices=("genmojo", "skeleton")), "guidance": FLAG,
         "seed": replace(SEED, flag="--seed"), "kernels": Check(str, choices=("auto", "torch", "triton"))},
    "input": {"max_side": Check(int, lo=16), "default_fps": Check(float, lo=0, hi=MAX_FPS, lo_open=True),
              "min_frames": Check(int, lo=2), "max_frames": Check(int, lo=2)},
    "camera": {"fovy_deg": Check(float, lo=0, hi=180, lo_open=True, hi_open=True), "near": POSITIVE,
               "far": POSITIVE, "scene_depth": POSITIVE,
               "focal_px": Check(float, lo=0, lo_open=True, optional=True, flag="--focal_px",
                                 words="a positive number of pixels (of the original frames)")},
    "camera_solve": {"camera_model": Check(str, choices=("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL")),
                     "mask_grow_px": NONNEG_INT, "max_features": COUNT, "overlap": COUNT, "min_registered": Check(int, lo=2),
                     "max_unregistered_fraction": Check(float, lo=0, hi=1, hi_open=True), "num_threads": Check(int, lo=1, extra=(-1,)),
                     "seed": SEED},
    "init": {"gaussians_per_object": COUNT, "thickness": WEIGHT, "opacity": OPEN_FRACTION,
             "scale_factor": POSITIVE, "depth_spread": WEIGHT},
    "losses": {"rgb": WEIGHT, "alpha": WEIGHT, "instance": WEIGHT, "motion_smooth": WEIGHT, "scale_reg": WEIGHT},
    "stage1": {"iterations": COUNT, "crop_size": Check(int, lo=8), "crop_margin": Check(float, lo=0, hi=1, lo_open=True),
               "camera_radius": POSITIVE, "reference_camera": Check(str, choices=("scene", "centred")),
               "num_points": COUNT, "init_radius": POSITIVE, "init_opacity": OPEN_FRACTION, "init_color": FRACTION,
               "w_rgb": WEIGHT, "w_alpha": WEIGHT, "silhouette_band_px": NONNEG_INT, "w_alpha_sharp": WEIGHT,
               "alpha_sharp_ring_px": NONNEG_INT, "ramp": FLAG, "lr_means": POSITIVE, "lr_means_final": POSITIVE,
               "lr_means_steps": COUNT, "lr_colors": WEIGHT, "lr_opacity": WEIGHT, "lr_scales": WEIGHT,
               "lr_quats": WEIGHT, "weight_decay": WEIGHT, "extent": POSITIVE, "densify_every": COUNT,
               "densify_until": NONNEG_INT, "max_gaussians": COUNT, "grow_grad2d": WEIGHT, "grow_scale3d": WEIGHT,
               "prune_opacity": FRACTION, "prune_scale3d": WEIGHT, "opacity_reset_every": NONNEG_INT,
               "final_prune_opacity": FRACTION, "final_prune_scale": WEIGHT,
               "back_prior": Check(str, choices=("auto", "mirror", "none"))},
    "deformation": {"grid_resolutions": Check(int, lo=1, length=0), "grid_channels": COUNT,
                    "time_resolution_factor": WEIGHT, "min_time_resolution": COUNT, "bounds": POSITIVE,
                    "spatial_init": Check(float, length=2, ordered=True), "hidden": COUNT, "num_bases": COUNT,
                    "basis_hidden": COUNT, "basis_hinge_frames": WEIGHT, "min_basis_hinges": COUNT,
                    "basis_knots": Check(str, choices=("spread", "centre")),
                    "motion_bases": Check(str, choices=("translation", "se3")),
                    "parity_random_init": FLAG},
    "stage2": {"iters_per_frame": COUNT, "min_iterations": COUNT, "frames_per_batch": COUNT, "accumulation": COUNT,
               "crop_margin": Check(float, lo=0, hi=1, lo_open=True), "scale_init": Check(str, choices=("spec", "box")),
               "lr_mlp": WEIGHT, "lr_grid": WEIGHT, "lr_colors": WEIGHT, "lr_translation": WEIGHT, "lr_depth": WEIGHT,
               "lr_scale": WEIGHT, "weight_decay": WEIGHT, "grid_weight_decay": WEIGHT, "depth_smooth_sigma": WEIGHT,
               "depth_smooth_size": COUNT, "depth_rate_limit": POSITIVE, "knn": COUNT, "knn_weight_scale": WEIGHT,
               "ramp": FLAG, "w_rgb": WEIGHT, "w_alpha": WEIGHT, "silhouette_band_px": NONNEG_INT,
               "spill_weighted": FLAG, "spill_alpha": Check(float, lo=0, hi=1, hi_open=True),
               "w_alpha_sharp": WEIGHT, "alpha_sharp_ring_px": NONNEG_INT, "w_instance": WEIGHT,
               "instance_start": FRACTION, "instance_hard_threshold": FRACTION, "parity_instance_object0": FLAG,
               "w_flow": WEIGHT, "w_scale_change": WEIGHT, "w_scale_drift": WEIGHT, "w_placement_smooth": WEIGHT,
               "w_basis_smooth": WEIGHT, "w_field_jerk": WEIGHT, "field_jerk_points": COUNT,
               "w_color_change": WEIGHT, "w_local_scale": WEIGHT,
               "w_rigid": WEIGHT, "w_time_smooth": WEIGHT, "depth_loss": FLAG, "w_depth": WEIGHT,
               "parity_scale_first_depth": FLAG, "random_background": FLAG,
               "flow_preset": Check(str, choices=("ultrafast", "fast", "medium")), "flow_fb_rel": WEIGHT,
               "flow_fb_abs": WEIGHT},
    "preview": {"passes": COUNT, "orbit_azimuth_deg": Check(float, lo=0, hi=180),
                "orbit_elevation_deg": Check(float, lo=-90, hi=90), "orbit_pullback": POSITIVE, "track_grid": COUNT,
                "track_trace": NONNEG_INT},
    "sds": {"model": Check(str), "variant": Check(str, choices=("auto", "zero123-xl", "stable-zero123")),
            "dtype": Check(str, choices=("bfloat16", "float16", "float32")), "channels_last": FLAG,
            "compile": Check(str, choices=("none", "default", "max-autotune-no-cudagraphs")),
            "vae_attention": Check(str, choices=("sdpa", "matmul")), "cuda_graph": FLAG,
            "image_size": Check(int, lo=8, multiple_of=8), "guidance_scale": WEIGHT, "weight": WEIGHT,
            "reference_polar_deg": Check(float, lo=0, hi=180), "cond_latent": Check(str, choices=("sample", "mode")),
            "polar_range_deg": Check(int, lo=-180, hi=180, length=2, ordered=True),
            "azimuth_range_deg": Check(int, lo=-360, hi=360, length=2, ordered=True), "stage1_views": COUNT,
            "stage1_radius_range": Check(float, length=2, ordered=True),
            "stage1_t_range": Check(float, lo=0, hi=1, length=2, ordered=True), "stage2_views": COUNT,
            "stage2_radius_range": Check(float, length=2, ordered=True),
            "stage2_t_range": Check(float, lo=0, hi=1, length=2, ordered=True),
            "stage2_render_sizes": Check(int, lo=8, length=3),
            "stage2_render_steps": Check(float, lo=0, hi=1, length=2, ordered=True)},
    "depth_prior": {"occlusion_margin": WEIGHT, "occlusion_weight": WEIGHT, "occlusion_min_pixels": WEIGHT,
                    "model_batch": COUNT, "disparity_floor": OPEN_FRACTION},
    "background": {"reference_frame": NONNEG_INT, "max_gaussians": COUNT, "scale_factor": POSITIVE,
                   "init_opacity": OPEN_FRACTION, "depth_fill_grow_px": NONNEG_INT, "depth_fill_radius_px": COUNT,
                   "mask_erode_px": NONNEG_INT, "iterations": COUNT, "frames_per_step": COUNT, "w_rgb": WEIGHT,
                   "w_alpha": WEIGHT, "w_depth": WEIGHT, "lr_means": WEIGHT, "lr_colors": WEIGHT, "lr_opacity": WEIGHT,
                   "lr_scales": WEIGHT},
    "fit": {"iters_per_frame": COUNT, "min_iterations": COUNT, "frames_per_step": COUNT, "lr_means": WEIGHT,
            "lr_colors": WEIGHT, "lr_opacity": WEIGHT, "lr_log_scales": WEIGHT, "lr_quats": WEIGHT,
            "lr_translation": WEIGHT, "lr_rotation": WEIGHT, "lr_final_factor": Check(float, lo=0, hi=1, lo_open=True),
            "random_background": FLAG, "checkpoint_every": replace(NONNEG_INT, flag="--checkpoint_every")},
}


def _default_check(default: Any) -> Check:
    """The check of a field that FIELD_CHECKS does not list, from its default: its type, numbers >= 0."""
    if isinstance(default, tuple):
        kind = type(default[0]) if default else float
        return Check(kind, lo=0 if kind in (int, float) else None, length=len(default))
    if isinstance(default, (bool, str)):
        return Check(type(default))
    return Check(int if isinstance(default, int) else float, lo=0, optional=default is None)


def field_check(section: str, name: str, default: Any) -> Check:
    """The check of field ``name`` of ``section`` ("" for Config's own fields)."""
    check = FIELD_CHECKS.get(section, {}).get(name)
    return check if check is not None else _default_check(default)


def _cross_checks(cfg: Config) -> list[tuple[str, str]]:
    """(message, hint) for each pair of fields whose values do not go together."""
    problems = []
    if not cfg.camera.near < cfg.camera.far:
        problems.append((f"camera.near {cfg.camera.near!r} must be below camera.far {cfg.camera.far!r}",
                         "--set camera.near=0.01 --set camera.far=100 are the defaults"))
    if cfg.input.min_frames > cfg.input.max_frames:
        problems.append((f"input.min_frames {cfg.input.min_frames} is above input.max_frames {cfg.input.max_frames}",
                         "lower input.min_frames or raise input.max_frames"))
    return problems


def validate(cfg: Config) -> Config:
    """``cfg`` itself when every field holds a value it accepts (FIELD_CHECKS); else InputError naming the first
    field that does not, its value and what it accepts. Cheap: run it before any work, on presets and overrides."""
    from .errors import InputError

    top = Config()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_section(f.name, value)
        else:
            _check_items("", [(f.name, value, getattr(top, f.name))])
    for message, hint in _cross_checks(cfg):
        raise InputError(message, hint)
    return cfg


def check_section(section: str, value: Any) -> None:
    """InputError naming the first field of ``value``, the config section ``section`` (e.g. a
    ``CameraSolveConfig`` for "camera_solve"), that holds a value FIELD_CHECKS does not accept; for
    callers handed one section rather than a whole ``Config``."""
    defaults = type(value)()
    _check_items(section, [(g.name, getattr(value, g.name), getattr(defaults, g.name))
                           for g in dataclasses.fields(value)])


def _check_items(section: str, items: list[tuple[str, Any, Any]]) -> None:
    """InputError for the first (name, value, default) of ``section`` whose value its check refuses."""
    from .errors import InputError

    for name, v, default in items:
        check = field_check(section, name, default)
        if not check.accepts(v):
            key = f"{section}.{name}" if section else name
            given = f"{key} ({check.flag})" if check.flag else key
            shown = repr(v) if isinstance(v, str) or not _jsonable(v) else json.dumps(list(v) if isinstance(v, tuple) else v)
            problem = " is unknown" if check.choices and isinstance(v, str) else f": must be {check.describe()}"
            fix = f"give {check.flag}" if check.flag else f"use --set {key}=VALUE with VALUE"
            raise InputError(f"{given} {shown}{problem}",
                             f"{fix} {check.describe()} (--print_config lists the values in use)")


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(list(v) if isinstance(v, tuple) else v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class WorkPlanCosts:
    """Expected seconds per unit of work, for the run's work plan (``backend/progress_plan.py``), which
    weighs the stages of Blender's progress bar and its ETA. Only the ratios between stages matter: the
    reader scales the plan by the pace it measures. Measured with cpu-tiny on the 8-frame 64x64 sample
    (3 objects, the 2-core CPU shared with other work; stage 1 at 48 px growing to 1024-1304 Gaussians
    per object, stage 2 with 3480): stage 1 149.8 s for 180 steps, stage 2 666.7 s for 48 steps of 2
    frames, bake 33.8 s, init (flow for 7 pairs) 0.12 s, validate 0.014 s, write 0.087 s."""

    stage1_step_per_px: float = 3.6e-4  # one stage-1 step, per pixel of the square crop
    stage2_step_per_px: float = 1.7e-3  # one stage-2 (or skeleton) step, per frame pixel it renders
    bake_per_px: float = 3.4e-4  # baking and the previews, per frame pixel per object
    validate_per_px: float = 4.3e-7  # reading and checking the clip, per frame pixel
    flow_per_px: float = 4.3e-6  # init: optical flow, per pixel of each pair of training frames
    write_per_object_frame: float = 3.6e-3  # writing the bundle
    # a step with Zero123 guidance against one without (README: 0.79 s against 0.125 s per stage-2
    # step on an H100); applied to both stages' steps when guidance is on
    guidance_step_factor: float = 6.3


WORK_PLAN_COSTS = WorkPlanCosts()
