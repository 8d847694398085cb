"""Stage 2: all objects jointly — deformation fields and scene placements fitted to the whole clip.

Every step renders all objects together (so they occlude each other) at a batch of training frames
and compares with the frame inside the union of the masks; which object is in front is learned from
pixels that only one mask covers (the instance loss, in the last quarter of training). Optical flow
from the clip, checked for occlusion, supervises the projected motion of the Gaussians; scale and
colour changes are kept small, and each object's kNN neighbourhoods are kept locally rigid with
smoothly varying scale, which carries hidden Gaussians along with the visible ones. The canonical
geometry from stage 1 is frozen: only the fields, colours, translations and depth factors learn.

With a novel-view prior (``FrameGuidance``, Zero123 in ``priors/zero123.py``), each micro-batch also
renders every object on its own, deformed but not placed in the scene, from random orbit views around
it, and distils the prior conditioned on that frame's crop of the object (spec §4.6 step 3). This is
what shapes the parts of a moving object that the video never shows. The public code also renders a
reference view there for a reconstruction loss whose mask is all zeros [quirk]; that dead compute is
left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, GuidanceConfig, Stage2Config
from ..errors import Cancelled
from ..kernels import knn_rigidity, knn_smoothness, rasterize, rasterize_frames, resolve_kernels
from ..model.camera import Cameras
from ..model.crops import crop_box
from ..model.deformation_field import DeformationField
from ..model.dynamic import DynamicObject, ObjectState, ScenePlacement
from ..model.gaussians import CanonicalGaussians, GaussianBatch
from ..model.geometry import quat_to_rotmat
from ..model.object_camera import ReferenceCamera, reference_camera
from ..model.scene import SceneRender, render_scene
from ..model.tracks import ObjectTrack
from . import losses as L
from .knn import KnnTable, knn_table
from ..profiling import span, step_finished
from .state import FitState, finish_step


class FrameGuidance(Protocol):
    """A novel-view prior for stage 2 (``priors.zero123.Zero123Guidance`` implements it): given one
    object's conditioning (per frame, computed once), the sampled frames (B,) host long, and a function
    that renders that object at orbit offsets (B,V,3) (Δelevation°, Δazimuth°, Δradius) into B·V
    object-centric images on white (frame-major), returns the weighted, view-averaged loss."""

    def frame_loss(self, cond: Any, frames: torch.Tensor, render: Callable[[torch.Tensor], torch.Tensor],
                   step_ratio: float) -> torch.Tensor: ...


class MethodScene(nn.Module):
    """All objects of a clip as dynamic objects, with the clip's cameras (c2w per frame). ``kernels``
    (``Config.kernels``) picks the kNN losses' kernels, as it picked the fields' plane kernels."""

    def __init__(self, object_ids: list[str], objects: list[DynamicObject], c2w: torch.Tensor,
                 knn: list[KnnTable], refs: list[ReferenceCamera], kernels: str = "auto"):
        super().__init__()
        self.kernels = kernels
        self.object_ids = list(object_ids)
        self.objects = nn.ModuleList(objects)
        self.register_buffer("c2w", c2w.float().clone())
        self.knn = knn
        self.refs = refs  # each object's stage-1 reference camera: its orbit views start on its line of sight

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)

    def states(self, frames: torch.Tensor) -> list[ObjectState]:
        c2w = self.c2w[frames]
        return [o(frames, c2w) for o in self.objects]

    def world_at(self, frames: torch.Tensor) -> list[GaussianBatch]:
        """Every object's world-space Gaussians at the given frame indices."""
        return [s.world for s in self.states(frames)]

    def canonical(self, k: int) -> CanonicalGaussians:
        return self.objects[k].canonical()


# ---------------------------------------------------------------------------------------------
# initialisation


@torch.no_grad()
def reference_depth(canonical: CanonicalGaussians, ref: ReferenceCamera) -> float:
    """Median rendered depth of the object's visible surface from its reference camera, relative to
    the object's origin (object units; negative: in front of it)."""
    dev = canonical.means.device
    size = ref.size
    depth, alpha, _ = rasterize(canonical.means, canonical.quats, canonical.log_scales.exp(), canonical.opacities,
                                canonical.colors, ref.viewmat.to(dev)[None], ref.K.to(dev)[None], size, size,
                                render_mode="ED")
    sel = alpha[0, ..., 0] > 0.75
    if not bool(sel.any()):
        sel = alpha[0, ..., 0] > 0.1
    return float(depth[0, ..., 0][sel].median()) - ref.center_depth if bool(sel.any()) else 0.0


def smooth_log_depth(d: np.ndarray, sigma: float, size: int, rate_limit: float) -> np.ndarray:
    """Gaussian smoothing over frames (replicate padding), then per-frame changes clamped to
    ±``rate_limit`` in log units and re-integrated from the first smoothed value."""
    x = np.log(np.maximum(d, 1e-6))
    if sigma > 0 and size > 1 and x.size > 1:
        r = size // 2
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        k /= k.sum()
        x = np.convolve(np.pad(x, r, mode="edge"), k, mode="valid")
    steps = np.clip(np.diff(x), -rate_limit, rate_limit)
    return np.exp(np.concatenate([x[:1], x[:1] + np.cumsum(steps)]))


def object_reference(track: ObjectTrack, cameras: Cameras, cfg: Config) -> ReferenceCamera:
    """The object's stage-1 reference camera: its crop in its reference frame (``model.object_camera``)."""
    s1 = cfg.stage1
    r = track.reference
    return reference_camera(s1.reference_camera, crop_box(track.bbox[r], s1.crop_margin), cameras.K[r].cpu(),
                            s1.crop_size, cfg.camera.fovy_deg, s1.camera_radius)


SCALE_INITS = ("spec", "box")


def placement_sides(track: ObjectTrack, ref_side: float, s2: Stage2Config) -> np.ndarray:
    """(T,) crop side per frame that sets the object's scale in the scene (``Stage2Config.scale_init``).

    "spec": ``max(bbox / crop_margin, reference crop side)``. When the reference frame is where the object
    is largest (our choice of reference), that is the reference side in every frame, and an object that
    is smaller elsewhere (farther away) starts too large there.
    "box": the reference side times the ratio of the bbox's larger side to the reference frame's, so the
    object starts at its apparent size in every frame. Only frames where the object is visible and its
    mask clear of the image border (a cut-off box understates the size) are measured; the rest, and
    frames withheld from the fit, interpolate them.
    """
    T = track.num_frames
    if s2.scale_init not in SCALE_INITS:
        raise ValueError(f"unknown scale_init {s2.scale_init!r}; use one of {', '.join(SCALE_INITS)}")
    if s2.scale_init == "spec":
        return np.array([crop_box(track.bbox[t], s2.crop_margin, ref_side).side for t in range(T)])
    size = np.maximum(track.bbox[:, 2] - track.bbox[:, 0], track.bbox[:, 3] - track.bbox[:, 1])
    known = track.visible & (track.border == 0)
    if not known[track.reference]:
        known = track.visible.copy()
    t = np.arange(T)
    size = np.interp(t, t[known], size[known])
    return ref_side * size / size[track.reference]


def init_placement(canonical: CanonicalGaussians, track: ObjectTrack, cameras: Cameras, depths: np.ndarray,
                   ref_side: float, ref: ReferenceCamera, cfg: Config,
                   trained: np.ndarray | None = None) -> ScenePlacement:
    """Crop scale, translation and depth factor per frame from the object's 2D track and depth source.

    ``depths`` (T,) is the depth source's camera distance of the object's visible surface per frame;
    ``ref`` the camera stage 1 fitted the object through (``object_reference``).
    """
    s1, s2 = cfg.stage1, cfg.stage2
    tan_half = math.tan(math.radians(cfg.camera.fovy_deg) / 2)
    K = cameras.K.double().cpu().numpy()
    T = track.num_frames
    sides = placement_sides(track, ref_side, s2)
    # at the object-centric distance R an object unit spans side/(2·tan·R) image pixels; placed at depth R·d
    # with scale s it spans f·s/R: equal when s = side/(2·tan·f)
    scale = sides / (2 * tan_half * K[:, 1, 1])
    centre = np.stack([(track.bbox[:, 0] + track.bbox[:, 2]) / 2, (track.bbox[:, 1] + track.bbox[:, 3]) / 2], 1)
    z = s1.camera_radius
    trans = np.stack([(centre[:, 0] - K[:, 0, 2]) / K[:, 0, 0] * z, (centre[:, 1] - K[:, 1, 2]) / K[:, 1, 1] * z,
                      np.full(T, z)], 1)
    surface = z + scale * reference_depth(canonical, ref)  # camera distance of the surface before the depth factor
    d = smooth_log_depth(depths / surface, s2.depth_smooth_sigma, s2.depth_smooth_size, s2.depth_rate_limit)
    return ScenePlacement(torch.from_numpy(scale), torch.from_numpy(trans), torch.from_numpy(d), trained)


def build_method_scene(object_ids: list[str], canonicals: list[CanonicalGaussians], tracks: list[ObjectTrack],
                       cameras: Cameras, depths: np.ndarray, ref_sides: list[float], cfg: Config,
                       trained: np.ndarray | None = None) -> MethodScene:
    """The stage-2 model: one dynamic object per canonical, starting exactly at stage 1's solution (with
    the ``scene`` reference camera, each object renders in its reference frame as stage 1 fitted it).

    ``trained`` (T,) bool marks the frames the fit will see (default all)."""
    objs, tables, refs = [], [], []
    T = cameras.K.shape[0]
    for k, (canon, tr) in enumerate(zip(canonicals, tracks)):
        refs.append(object_reference(tr, cameras, cfg))
        placement = init_placement(canon, tr, cameras, depths[k], ref_sides[k], refs[-1], cfg, trained)
        field = DeformationField(cfg.deformation, T, kernel=cfg.kernels).to(canon.means.device)
        if resolve_kernels(cfg.kernels, canon.means.device) == "triton":
            field.planes.channels_last_()
        objs.append(DynamicObject(canon, field, placement.to(canon.means.device),
                                  scale_first_depth=cfg.stage2.parity_scale_first_depth))
        tables.append(knn_table(canon.means.detach(), cfg.stage2.knn, cfg.stage2.knn_weight_scale))
    return MethodScene(object_ids, objs, cameras.c2w, tables, refs, kernels=cfg.kernels)


# ---------------------------------------------------------------------------------------------
# targets and losses


@dataclass
class ClipTargets:
    """The clip for the fit: images on the fit's device, frame index tables on the host.

    frames (T,H,W,3) float [0,1]; masks (T,H,W,K) bool; flow (P,H,W,2) pixels and flow_valid
    (P,H,W) for the pairs (prev[t], t); depth (T,H,W) or None. Host (CPU long) tables, so that
    choosing a batch never waits for the GPU: train (M,) the frames the fit may see; prev (T,) the
    previous training frame of each frame (−1 if none); flow_row (T,) the row of the pair ending at
    t in ``flow`` (−1 if none).
    """

    frames: torch.Tensor
    masks: torch.Tensor
    train: torch.Tensor
    prev: torch.Tensor
    flow: torch.Tensor
    flow_valid: torch.Tensor
    flow_row: torch.Tensor
    depth: torch.Tensor | None = None


def _project(points: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """World points (B,N,3) → pixel coordinates (B,N,2) in cameras ``viewmats`` (B,4,4), ``Ks`` (B,3,3)."""
    cam = points @ viewmats[:, :3, :3].transpose(1, 2) + viewmats[:, None, :3, 3]
    uv = cam[..., :2] / cam[..., 2:3].clamp_min(1e-6)
    f = torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1)[:, None]
    c = torch.stack([Ks[:, 0, 2], Ks[:, 1, 2]], -1)[:, None]
    return uv * f + c


def render_flow(prev: list[GaussianBatch], cur: list[GaussianBatch], vm_prev: torch.Tensor, vm_cur: torch.Tensor,
                K_prev: torch.Tensor, K_cur: torch.Tensor, width: int, height: int, near: float,
                far: float) -> torch.Tensor:
    """The rendered optical flow (P,H,W,2) of P frame pairs, from prev to cur, splatted with prev's
    geometry (``prev[k]``/``cur[k]``: object k at the P pairs' two frames; cameras (P,4,4), (P,3,3)).

    Each Gaussian's colour is the pixel displacement of its centre; geometry is detached, so the
    gradient reaches positions only through the displacement.
    """
    pm = torch.cat([o.means for o in prev], 1)
    cm = torch.cat([o.means for o in cur], 1)
    disp = _project(cm, vm_cur, K_cur) - _project(pm, vm_prev, K_prev)
    cols = torch.cat([disp, torch.zeros_like(disp[..., :1])], -1)
    quats = torch.cat([o.quats for o in prev], 1).detach()
    scales = torch.cat([o.log_scales for o in prev], 1).detach().exp()
    opac = torch.cat([o.opacities for o in prev], 1).detach()
    img, _ = rasterize_frames(pm.detach(), quats, scales, opac, cols, vm_prev, K_prev, width, height,
                              near_plane=near, far_plane=far, backgrounds=torch.zeros_like(cols[:, 0]))
    return img[..., :2]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` holds (over ``dims``, default all); 0 where nothing is selected.
    Computed without asking the device whether anything is selected."""
    m = mask.to(x.dtype)
    if dims is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dims) / m.sum(dims).clamp_min(1.0)


def instance_nll(instance: torch.Tensor, masks: torch.Tensor, threshold: float, parity_object0: bool) -> torch.Tensor:
    """Negative log of the true object's composited visibility on pixels only one mask covers, where
    the render is not yet confident (visibility of the true object below ``threshold``).

    The public code tests object 0's visibility instead of the true object's for every pixel [quirk];
    ``parity_object0`` reproduces that.
    """
    single = masks.sum(-1) == 1
    label = masks.float().argmax(-1)
    true_w = instance.gather(-1, label[..., None])[..., 0]
    hard_w = instance[..., 0] if parity_object0 else true_w
    return _masked_mean(-torch.log(true_w + 1e-10), single & (hard_w < threshold))


def local_scale_loss(ds: torch.Tensor, knn: KnnTable, kernels: str = "auto") -> torch.Tensor:
    """kNN-weighted smoothness of per-Gaussian log-scale changes ``ds`` (..., N, 3)
    (``backend.kernels.knn_smoothness``)."""
    return knn_smoothness(ds.reshape(-1, *ds.shape[-2:]), knn.indices, knn.weights, backend=kernels,
                          groups=knn.groups)


def rigidity_loss(x_prev: torch.Tensor, x_cur: torch.Tensor, q_prev: torch.Tensor, q_cur: torch.Tensor,
                  knn: KnnTable, kernels: str = "auto") -> torch.Tensor:
    """As-rigid-as-possible: neighbour offsets at prev must equal those at cur rotated back by each
    Gaussian's own rotation change (x (..., N, 3) world centres, q (..., N, 4) world rotations;
    ``backend.kernels.knn_rigidity``)."""
    # R_relᵀ with R_rel = R_cur · R_prevᵀ (prev frame → cur frame): cur-frame offsets back to prev
    back = (quat_to_rotmat(q_prev) @ quat_to_rotmat(q_cur).transpose(-1, -2)).reshape(-1, x_prev.shape[-2], 3, 3)
    return knn_rigidity(x_prev.reshape(-1, *x_prev.shape[-2:]), x_cur.reshape(-1, *x_cur.shape[-2:]), back,
                        knn.indices, knn.weights, backend=kernels, groups=knn.groups)


def depth_l1_log(depth: torch.Tensor, alpha: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """|log rendered depth − log depth map| on pixels inside the (eroded) union mask the render covers."""
    union = masks.any(-1).float()[:, None]
    eroded = (-F.max_pool2d(-union, 7, stride=1, padding=3))[:, 0] > 0.5
    sel = eroded & (alpha > 0.5) & (target > 0)
    err = (torch.log(depth.clamp_min(1e-6)) - torch.log(target.clamp_min(1e-6))).abs()
    return _masked_mean(err, sel)


def placement_jerk(placement: ScenePlacement, K: torch.Tensor, radius: float) -> torch.Tensor:
    """Mean over the clip's frames of |Δ²q_t|², q_t the object's placement at frame t in pixels: its centre's image
    position (f·T_xy/T_z), and the log of its apparent size (s/T_z) and of its depth factor times its radius in
    pixels (``radius`` object units through the mean apparent scale, not differentiated). K (T,3,3).

    Zero for an object gliding at constant image velocity, size and depth; one frame displaced by a pixel scores
    6/(T−2) px² (it enters three second differences, as 1, −2 and 1). Frames the fit withholds read interpolated
    values (``FrameFill``), whose second difference is 0 there, so the term sees the trained frames as a sequence
    with gaps.
    """
    T = placement.num_frames
    if T < 3:
        return K.new_zeros(())
    s, trans, d = placement.at(torch.arange(T, device=K.device))
    z = trans[:, 2].clamp_min(1e-6)
    apparent = s / z
    r = pixels_per_unit(placement, K) * radius
    q = torch.stack([K[:, 0, 0] * trans[:, 0] / z, K[:, 1, 1] * trans[:, 1] / z,
                     r * torch.log(apparent), r * torch.log(d.clamp_min(1e-6))], -1)
    d2 = q[2:] - 2 * q[1:-1] + q[:-2]
    return d2.pow(2).sum(-1).mean()


def pixels_per_unit(placement: ScenePlacement, K: torch.Tensor) -> torch.Tensor:
    """An object unit's mean length in pixels over the clip (f·s/T_z), not differentiated. K (T,3,3)."""
    s, trans, _ = placement.at(torch.arange(placement.num_frames, device=K.device))
    return (K[:, 1, 1] * s / trans[:, 2].clamp_min(1e-6)).mean().detach()


def basis_jerk(field: DeformationField, px_per_unit: torch.Tensor, radius: float) -> torch.Tensor:
    """Mean over the clip's frames and the motion bases of |Δ²b_t|², b_t a basis's motion at frame t in pixels:
    its translation, and for rigid bases its rotation (axis-angle) times ``radius`` object units.

    Every frame counts, withheld ones too: the bases are a function of time, so a withheld frame's motion is
    whatever that function does between the trained frames around it, and only this term looks there. Zero
    for bases that move at a constant rate.
    """
    T = field.num_frames
    if T < 3:
        return px_per_unit.new_zeros(())
    b = field.bases(torch.arange(T))  # (T, K, W)
    if b.shape[-1] == 6:
        b = torch.cat([b[..., :3] * radius, b[..., 3:]], -1)
    d2 = (b[2:] - 2 * b[1:-1] + b[:-2]) * px_per_unit
    return d2.pow(2).sum(-1).mean()


def jerk_centres(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The frames (C,) whose second difference ``field_jerk`` takes for a batch of trained ``frames`` (B,):
    each frame and the one after it, kept to [1, T−2]. A withheld frame follows a trained one (or ends the
    clip), so the frames the fit never sees are centres too."""
    if num_frames < 3:
        return frames.new_zeros(0)
    return torch.unique(torch.cat([frames, frames + 1]).clamp(1, num_frames - 2))


def field_jerk(field: DeformationField, means: torch.Tensor, centres: torch.Tensor,
               px_per_unit: torch.Tensor) -> torch.Tensor:
    """Mean over ``centres`` (C,) and Gaussians of |Δ²x_t|², x_t a Gaussian's deformed position at frame t
    (``means`` (N, 3) canonical, in object units) in pixels: how far each one is from the midpoint of where
    it is one frame before and after. The placement's own wobble is ``placement_jerk``'s."""
    if centres.numel() == 0:
        return px_per_unit.new_zeros(())
    C, N = centres.shape[0], means.shape[0]
    d = field(means, torch.cat([centres - 1, centres, centres + 1])).d_means.view(3, C, N, 3)
    d2 = (d[0] - 2 * d[1] + d[2]) * px_per_unit
    return d2.pow(2).sum(-1).mean()


def _jerk_rows(n: int, points: int, frames: torch.Tensor) -> slice:
    """Every k-th Gaussian (about ``points`` of ``n``), starting where the batch's first frame says, so
    that successive batches cover them all without a random draw of their own."""
    k = max(1, n // max(1, points))
    return slice(int(frames[0]) % k, n, k)


def _at(batch: GaussianBatch, rows: torch.Tensor | slice) -> GaussianBatch:
    return GaussianBatch(batch.means[rows], batch.quats[rows], batch.log_scales[rows], batch.colors[rows],
                         batch.opacities[rows])


def step_losses(scene: MethodScene, targets: ClipTargets, cameras: Cameras, frames: torch.Tensor,
                backgrounds: torch.Tensor, cfg: Config, step_ratio: float) -> dict[str, torch.Tensor]:
    """Every weighted loss term for one micro-batch of ``frames`` (B,) host long tensor; ``total`` is
    their sum. All B frames render in one call, the P frame pairs' flow in another, and the
    regularisers run on all pairs of an object at once."""
    c = cfg.stage2
    ramp = step_ratio if c.ramp else 1.0
    dev = targets.frames.device
    B = frames.shape[0]
    prev = targets.prev[frames]
    has_prev = prev >= 0
    both_host = torch.cat([frames, torch.where(has_prev, prev, frames)])
    both = both_host.to(dev)
    fr = both[:B]
    pairs = torch.nonzero(has_prev).flatten()  # host
    P = int(pairs.numel())
    cur_rows, prev_rows = pairs.to(dev), (pairs + B).to(dev)
    with span("deformation"):
        states = scene.states(both)
        cur = [_at(s.world, slice(0, B)) for s in states]
    vm = cameras.viewmats(both)
    Ks = cameras.K[both]
    with span("render"):
        render: SceneRender = render_scene(cur, vm[:B], Ks[:B], cameras.width, cameras.height, backgrounds,
                                           near=cameras.near, far=cameras.far)
        flow_img = render_flow([_at(s.world, prev_rows) for s in states], [_at(s.world, cur_rows) for s in states],
                               vm[prev_rows], vm[cur_rows], Ks[prev_rows], Ks[cur_rows], cameras.width,
                               cameras.height, cameras.near, cameras.far) if P else None
    with span("losses"):
        masks = targets.masks[fr]
        union = masks.any(-1)
        target = torch.where(union[..., None], targets.frames[fr], backgrounds[:, None, None, :])
        covered = L.spill_weighted(render.alpha, c.spill_alpha) if c.spill_weighted else None
        terms = {
            "rgb": c.w_rgb * ramp * L.balanced_mse(render.image, target, union, c.silhouette_band_px, covered),
            "alpha": c.w_alpha * ramp * L.balanced_mse(render.alpha, union.float(), union, c.silhouette_band_px,
                                                       covered),
        }
        if c.w_alpha_sharp > 0:
            terms["alpha_sharp"] = c.w_alpha_sharp * ramp * L.alpha_sharpness(render.alpha, union, c.alpha_sharp_ring_px)
        if step_ratio > c.instance_start:
            terms["instance"] = c.w_instance * ramp * instance_nll(render.instance, masks, c.instance_hard_threshold,
                                                                   c.parity_instance_object0)
        if c.w_scale_drift > 0:
            terms["scale_drift"] = c.w_scale_drift * ramp * torch.stack(
                [s.d_log_scales[:B].abs().mean() for s in states]).mean()
        if c.w_placement_smooth > 0:
            terms["placement_smooth"] = c.w_placement_smooth * ramp * torch.stack(
                [placement_jerk(o.placement, cameras.K, cfg.stage1.extent) for o in scene.objects]).mean()
        if c.w_basis_smooth > 0:
            terms["basis_smooth"] = c.w_basis_smooth * ramp * torch.stack(
                [basis_jerk(o.field, pixels_per_unit(o.placement, cameras.K), cfg.stage1.extent)
                 for o in scene.objects]).mean()
        if c.w_field_jerk > 0:
            centres = jerk_centres(frames, targets.frames.shape[0])
            terms["field_jerk"] = c.w_field_jerk * ramp * torch.stack(
                [field_jerk(o.field, o.means[_jerk_rows(o.num_gaussians, c.field_jerk_points, frames)], centres,
                            pixels_per_unit(o.placement, cameras.K)) for o in scene.objects]).mean()
        if c.depth_loss and targets.depth is not None:
            terms["depth"] = c.w_depth * ramp * depth_l1_log(render.depth, render.alpha, targets.depth[fr], masks)
        if P:
            terms.update(_pair_losses(scene, states, targets, cameras, frames, pairs, both, cur_rows, prev_rows,
                                      flow_img, c, ramp))
        if c.w_time_smooth > 0:
            terms["time_smooth"] = c.w_time_smooth * ramp * torch.stack(
                [o.field.planes.time_smoothness() for o in scene.objects]).mean()
        terms["total"] = sum(terms.values())
    return terms


def _pair_losses(scene: MethodScene, states: list[ObjectState], targets: ClipTargets, cameras: Cameras,
                 frames: torch.Tensor, pairs: torch.Tensor, both: torch.Tensor, cur_rows: torch.Tensor,
                 prev_rows: torch.Tensor, flow_img: torch.Tensor, c: Stage2Config, ramp: float) -> dict[str, torch.Tensor]:
    """The terms between consecutive training frames: occlusion-checked flow, scale and colour change,
    kNN local-scale smoothness and local rigidity."""
    dev = targets.frames.device
    rows = targets.flow_row[frames[pairs]].to(dev)
    p_mask = targets.masks[both[prev_rows]].any(-1)
    valid = targets.flow_valid[rows] & p_mask
    norm = torch.tensor([1.0 / cameras.width, 1.0 / cameras.height], device=dev)
    err = ((flow_img - targets.flow[rows] * p_mask[..., None]).abs() * norm).sum(-1)
    per_pair = _masked_mean(err, valid, (1, 2)) + _masked_mean(err, ~p_mask, (1, 2))
    dscale, dcolor, lscale, rigid = [], [], [], []
    for k, s in enumerate(states):
        ds = s.d_log_scales[prev_rows] - s.d_log_scales[cur_rows]
        dscale.append(ds.abs().mean())
        dcolor.append(s.d_colors[cur_rows].abs().mean())
        lscale.append(local_scale_loss(ds, scene.knn[k], scene.kernels))
        rigid.append(rigidity_loss(s.world.means[prev_rows], s.world.means[cur_rows], s.world.quats[prev_rows],
                                   s.world.quats[cur_rows], scene.knn[k], scene.kernels))
    return {
        "flow": c.w_flow * ramp * per_pair.mean(),
        "scale_change": c.w_scale_change * ramp * torch.stack(dscale).mean(),
        "color_change": c.w_color_change * ramp * torch.stack(dcolor).mean(),
        "local_scale": c.w_local_scale * ramp * torch.stack(lscale).mean(),
        "rigidity": c.w_rigid * ramp * torch.stack(rigid).mean(),
    }


# ---------------------------------------------------------------------------------------------
# object-centric views (stage 2's guidance)


def guidance_render_size(cfg: GuidanceConfig, step_ratio: float) -> int:
    """The object-centric render side at ``step_ratio``: coarse early, fine late (128/256/512 by the spec)."""
    for size, until in zip(cfg.stage2_render_sizes, cfg.stage2_render_steps):
        if step_ratio < until:
            return int(size)
    return int(cfg.stage2_render_sizes[-1])


def render_object_views(obj: GaussianBatch, offsets: torch.Tensor, ref: ReferenceCamera, size: int,
                        background: float = 1.0) -> torch.Tensor:
    """Object-centric renders (B·V,size,size,3), frame-major, of B frames' Gaussians ``obj`` (object
    units) from V orbit views each: ``offsets`` (B,V,3) (Δelevation°, Δazimuth°, Δradius) about the
    object's reference camera ``ref`` (``model.object_camera``), at ``size``² pixels. All B·V views go
    through one rasterizer call.
    """
    B, V = int(offsets.shape[0]), int(offsets.shape[1])
    dev = obj.means.device
    views = ref.orbit_viewmats(offsets).to(dev)
    K = ref.orbit_K(size).to(dev)[None].expand(B * V, 3, 3)

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(V, 0)

    bg = torch.full((B * V, 3), float(background), device=dev)
    img, _ = rasterize_frames(rep(obj.means), rep(obj.quats), rep(obj.log_scales).exp(), rep(obj.opacities),
                              rep(obj.colors), views, K, size, size, backgrounds=bg)
    return img


def _guidance_views(obj: DynamicObject, frames: torch.Tensor, offsets: torch.Tensor, ref: ReferenceCamera,
                    size: int) -> torch.Tensor:
    with span("guidance_render"):
        return render_object_views(obj.object_space(frames), offsets, ref, size)


def guidance_losses(scene: MethodScene, guidance: FrameGuidance, conditioning: Sequence[Any], frames: torch.Tensor,
                    cfg: Config, step_ratio: float, scale: float = 1.0) -> torch.Tensor:
    """Each object's guidance loss at the micro-batch's ``frames`` (B,) host long, back-propagated
    (× ``scale``) one object at a time so that only one object's views are alive at once; returns the
    detached sum over objects (unscaled)."""
    dev = scene.c2w.device
    fr = frames.to(dev)
    size = guidance_render_size(cfg.sds, step_ratio)
    total = torch.zeros((), device=dev)
    for k, obj in enumerate(scene.objects):
        loss = guidance.frame_loss(conditioning[k], frames,
                                   lambda off, o=obj, ref=scene.refs[k]: _guidance_views(o, fr, off, ref, size),
                                   step_ratio)
        with span("guidance_backward"):
            (loss * scale).backward()
        total = total + loss.detach()
    return total


# ---------------------------------------------------------------------------------------------
# the fit


def make_stage2_state(scene: MethodScene, cfg: Config, generator: torch.Generator) -> FitState:
    """AdamW with the spec's constant learning rates (canonical geometry is not in it: it is frozen)."""
    c = cfg.stage2
    groups = []
    for o in scene.objects:
        groups += o.field.param_groups(c.lr_mlp, c.lr_grid, c.weight_decay, c.grid_weight_decay)
        groups += [
            {"params": [o.color_logits], "lr": c.lr_colors, "weight_decay": c.weight_decay, "name": "colors"},
            {"params": [o.placement.translation], "lr": c.lr_translation, "weight_decay": 0.0, "name": "translation"},
            {"params": [o.placement.depth], "lr": c.lr_depth, "weight_decay": 0.0, "name": "depth"},
        ]
        if c.lr_scale > 0:
            groups.append({"params": [o.placement.log_scale], "lr": c.lr_scale, "weight_decay": 0.0, "name": "scale"})
    return FitState(torch.optim.AdamW(groups, eps=1e-15), None, generator)


def fit_stage2(scene: MethodScene, targets: ClipTargets, cameras: Cameras, cfg: Config, iterations: int,
               state: FitState, *, on_step: Callable[[int, int, dict[str, float]], None] = lambda *a: None,
               should_stop: Callable[[], bool] = lambda: False,
               on_checkpoint: Callable[[], None] = lambda: None, guidance: FrameGuidance | None = None,
               conditioning: Sequence[Any] | None = None) -> dict[str, float]:
    """Optimise ``scene`` in place from ``state.step`` to ``iterations``; returns the last loss terms.

    With ``guidance``, ``conditioning[k]`` is object k's per-frame conditioning; the guidance term
    (summed over objects, not ramped by the step ratio) is reported as ``guidance`` and counted in ``total``.
    """
    c = cfg.stage2
    if guidance is not None and (conditioning is None or len(conditioning) != scene.num_objects):
        raise ValueError("stage-2 guidance needs one conditioning per object")
    train = targets.train
    dev = targets.frames.device
    per = min(c.frames_per_batch, int(train.numel()))
    every = cfg.fit.checkpoint_every
    last: dict[str, float] = {}
    for step in range(state.step + 1, iterations + 1):
        if should_stop():
            raise Cancelled(f"stopped at step {step - 1} of {iterations}")
        ratio = step / iterations
        state.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for _ in range(c.accumulation):
            frames = train[torch.randperm(int(train.numel()), generator=state.generator)[:per]]
            if c.random_background:
                bgs = (torch.rand(per, generator=state.generator) < 0.5).float()[:, None].repeat(1, 3).to(dev)
            else:
                bgs = torch.ones(per, 3, device=dev)
            terms = step_losses(scene, targets, cameras, frames, bgs, cfg, ratio)
            with span("backward"):
                (terms["total"] / c.accumulation).backward()
            if guidance is not None:
                terms["guidance"] = guidance_losses(scene, guidance, conditioning, frames, cfg, ratio,
                                                    1.0 / c.accumulation)
                terms["total"] = terms["total"].detach() + terms["guidance"]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach() / c.accumulation
        with span("optimizer"):
            state.optimizer.step()
        state.step = step
        last = dict(zip(sums, torch.stack(list(sums.values())).tolist()))  # the step's one host sync
        finish_step(step, iterations, last, every, on_step, on_checkpoint)
        step_finished(step)
    return last
