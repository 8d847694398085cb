"""Scores a result bundle against a ground-truth clip of ``scripts/make_gt_clip.py``: images, novel views,
3D and 2D tracks, and depth order.

Why: the clip's own frames only say whether the input views are reproduced. A Blender-rendered clip
also knows the 3D truth (``docs/results.md``, "Ground truth"), so it can say whether the Gaussians
sit and move where the surfaces do, whether the objects' depth order is right where they overlap,
and what the objects look like from cameras the fit never saw. Everything is measured on the
bundle's baked arrays (what the user imports), rendered with ``backend.model.scene.render_scene``.

The reconstruction lives in the world of the cameras given with ``--cam_path``; the clip's
``MegaSAM_Outputs/ground_truth.npz`` holds the true cameras, so a bundle fitted with it is in the
ground truth's world and 3D errors are in scene units. A bundle whose cameras differ from the true
ones is still scored, and ``warnings`` says so (its 3D and novel-view figures are then meaningless).

Metrics (JSON keys of ``evaluate_gt``):
- ``frames``: ``backend.evaluate.evaluate_bundle`` on the clip's frames and masks: masked PSNR, SSIM
  and per-object IoU, split into held-out and training frames (the run's ``--holdout``).
- ``novel_views``: each held-out camera at its frames: PSNR and SSIM inside the true object pixels
  (render over black and truth, both times the union of the true object masks), IoU per object.
- ``tracks_3d``: each true surface point is tied to the nearest Gaussian(s) of its own object (mean
  of ``neighbours`` centres, opacity >= ``min_opacity``) at a reference frame: the training frame
  where most of the object's points are visible. That Gaussian's centre over time is the predicted
  track; its distance to the true point (scene units, and relative to the object's bounding radius)
  is the end-point error, summarised over visible points, occluded points (in the image but hidden)
  and points hidden by another object; the reference frame itself is left out (TAP-Vid's query frame).
  Nearest-neighbour association forgives a cloud that is displaced by less than the object's size,
  so ``object_centre`` also compares where each object is: the centre of its true surface points
  against the opacity-weighted centre of its Gaussians, per frame.
- ``tracks_2d``: predicted and true points projected with the true cameras; TAP-Vid's position
  accuracy: the fraction of points within 1, 2, 4, 8, 16 px and their mean (``delta_avg``), with
  pixel distances measured at ``track_side`` px on the longer image side (256, as TAP-Vid resizes),
  for visible and for occluded points, and the mean error in pixels of the clip.
- ``depth_order``: where the true amodal silhouettes of two objects overlap, whether the rendered
  depths (each object rendered alone, where its alpha > 0.5) put them in the true order; ``coverage``
  is the fraction of overlapping pixel pairs where the render shows both.
NaN (nothing to measure) is written as null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genmojo_blender.core.bundle import Bundle, open_bundle

from .errors import InputError
from .io.npz import read_arrays
from .evaluate import evaluate_bundle, frame_batches
from .metrics import mask_iou, masked_psnr, masked_ssim
from .model.scene import render_scene

GT_FORMAT = "genmojo-gt-clip"
GT_VERSION = 1
THRESHOLDS_PX = (1, 2, 4, 8, 16)
CAMERA_TOLERANCE = 1e-3  # relative: bundle cameras this close to the truth are the truth's world
MAKE_HINT = "generate the clip with python scripts/make_gt_clip.py OUT (and pass --gt OUT)"


@dataclass
class GroundTruth:
    """A ground-truth clip as arrays (see ``scripts/make_gt_clip.py`` for the files and their meaning)."""

    root: Path
    meta: dict
    object_ids: list[str]
    radius: np.ndarray  # (K,) bounding radius of each object, scene units
    K: np.ndarray  # (3,3) at the clip's size
    c2w: np.ndarray  # (T,4,4) OpenCV axes
    points: np.ndarray  # (T,M,3)
    uv: np.ndarray  # (T,M,2)
    visible: np.ndarray  # (T,M) bool
    in_frame: np.ndarray  # (T,M) bool
    occluder: np.ndarray  # (T,M) int
    object_index: np.ndarray  # (M,)
    amodal_depth: np.ndarray  # (T,K,H,W) float32, 0 where absent
    novel_K: np.ndarray  # (C,3,3)
    novel_c2w: np.ndarray  # (C,4,4)
    novel_frames: np.ndarray  # (F,)
    novel_images: np.ndarray  # (C,F,H,W,3) uint8
    novel_labels: np.ndarray  # (C,F,H,W) uint8

    @property
    def size(self) -> tuple[int, int]:
        return int(self.meta["width"]), int(self.meta["height"])

    @property
    def num_frames(self) -> int:
        return int(self.c2w.shape[0])

    @property
    def frames_dir(self) -> Path:
        return self.root / self.meta["files"]["frames"]

    @property
    def masks_dir(self) -> Path:
        return self.root / self.meta["files"]["masks"]


def _read_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None or img.shape[:2] != size:
        raise InputError(f"{path}: missing, unreadable or not {size[1]}x{size[0]}", MAKE_HINT)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_ground_truth(folder: str | Path) -> GroundTruth:
    """Read and check a ground-truth clip folder; InputError names the file and the fix."""
    root = Path(folder)
    meta_path = root / "ground_truth" / "scene.json"
    if not meta_path.is_file():
        raise InputError(f"{meta_path}: not found, so {root} is not a ground-truth clip", MAKE_HINT)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{meta_path}: not readable JSON ({e})", MAKE_HINT) from e
    if meta.get("format") != GT_FORMAT or meta.get("version") != GT_VERSION:
        raise InputError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, expected "
                         f"{GT_FORMAT!r} version {GT_VERSION}", "regenerate the clip with this version's generator")
    f = meta["files"]
    cams = read_arrays(root / f["cameras"], ("intrinsic", "cam_c2w", "depths"), MAKE_HINT)
    tr = read_arrays(root / f["tracks"], ("points", "uv", "visible", "in_frame", "occluder", "object_index"), MAKE_HINT)
    am = read_arrays(root / f["amodal_depth"], ("depth",), MAKE_HINT)
    nv = read_arrays(root / f["novel"], ("K", "c2w", "frames", "labels"), MAKE_HINT)
    W, H, T = int(meta["width"]), int(meta["height"]), int(meta["frames"])
    ids = [o["id"] for o in meta["objects"]]
    K = len(ids)
    M = tr["object_index"].shape[0]
    checks = [
        (cams["cam_c2w"].shape == (T, 4, 4), f["cameras"], "cam_c2w"),
        (cams["depths"].shape == (T, H, W), f["cameras"], "depths"),
        (tr["points"].shape == (T, M, 3) and tr["uv"].shape == (T, M, 2), f["tracks"], "points/uv"),
        (tr["visible"].shape == tr["in_frame"].shape == tr["occluder"].shape == (T, M), f["tracks"], "visibility"),
        (M > 0 and set(np.unique(tr["object_index"])) <= set(range(K)), f["tracks"], "object_index"),
        (am["depth"].shape == (T, K, H, W), f["amodal_depth"], "depth"),
        (nv["labels"].shape[2:] == (H, W) and nv["c2w"].shape[0] == nv["K"].shape[0] == nv["labels"].shape[0]
         and nv["frames"].shape[0] == nv["labels"].shape[1], f["novel"], "novel views"),
    ]
    for ok, rel, what in checks:
        if not ok:
            raise InputError(f"{root / rel}: {what} do not match the clip ({T} frames, {W}x{H}, {K} objects)",
                             "regenerate the clip; its files come from different runs")
    if (nv["frames"] >= T).any() or (nv["frames"] < 0).any():
        raise InputError(f"{root / f['novel']}: frames outside 0..{T - 1}", "regenerate the clip")
    C, F = nv["labels"].shape[:2]
    images = np.zeros((C, F, H, W, 3), np.uint8)
    for c in range(C):
        for j, t in enumerate(nv["frames"]):
            images[c, j] = _read_png(root / "ground_truth" / "novel" / f"c{c}" / f"{int(t):05d}.png", (H, W))
    return GroundTruth(
        root=root, meta=meta, object_ids=ids, radius=np.array([o["radius"] for o in meta["objects"]], float),
        K=cams["intrinsic"].astype(np.float64) * [[W / cams["depths"].shape[2]], [H / cams["depths"].shape[1]], [1]],
        c2w=cams["cam_c2w"].astype(np.float64), points=tr["points"].astype(np.float64),
        uv=tr["uv"].astype(np.float64), visible=tr["visible"].astype(bool), in_frame=tr["in_frame"].astype(bool),
        occluder=tr["occluder"].astype(np.int64), object_index=tr["object_index"].astype(np.int64),
        amodal_depth=am["depth"].astype(np.float32), novel_K=nv["K"].astype(np.float64),
        novel_c2w=nv["c2w"].astype(np.float64), novel_frames=nv["frames"].astype(np.int64),
        novel_images=images, novel_labels=nv["labels"])


# --------------------------------------------------------------------------------------------------
# Metrics on plain arrays


def nearest_indices(query: np.ndarray, points: np.ndarray, n: int = 1) -> np.ndarray:
    """(M, n) indices of the n points nearest to each query point (Euclidean), nearest first."""
    q, p = np.asarray(query, np.float64), np.asarray(points, np.float64)
    if p.shape[0] < n:
        raise ValueError(f"{n} neighbours asked of {p.shape[0]} points")
    out = np.empty((q.shape[0], n), np.int64)
    for s in range(0, q.shape[0], 1024):
        d = torch.cdist(torch.from_numpy(q[s:s + 1024]), torch.from_numpy(p))
        out[s:s + 1024] = torch.topk(d, n, dim=1, largest=False).indices.numpy()
    return out


def end_point_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Euclidean distance between predicted and true points over the last axis; NaN in either gives inf."""
    e = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64), axis=-1)
    return np.where(np.isfinite(e), e, np.inf)


def delta_accuracy(errors_px: np.ndarray, select: np.ndarray, thresholds=THRESHOLDS_PX) -> dict:
    """Fraction of the selected errors below each threshold (strictly less), and their mean ``delta_avg``.

    TAP-Vid's position accuracy. Infinite errors (a point behind the camera) count as misses. NaN
    everywhere when nothing is selected.
    """
    e = np.asarray(errors_px, np.float64)[np.asarray(select, bool)]
    if e.size == 0:
        return {**{str(t): float("nan") for t in thresholds}, "delta_avg": float("nan"), "count": 0}
    fr = {str(t): float(np.mean(e < t)) for t in thresholds}
    return {**fr, "delta_avg": float(np.mean(list(fr.values()))), "count": int(e.size)}


def error_summary(errors: np.ndarray, select: np.ndarray, scale: np.ndarray | None = None) -> dict:
    """Mean and median of the selected errors, and the mean of errors / scale (same shape) when given."""
    sel = np.asarray(select, bool)
    e = np.asarray(errors, np.float64)[sel]
    if e.size == 0:
        out = {"count": 0, "epe_mean": float("nan"), "epe_median": float("nan")}
        return {**out, "relative_mean": float("nan")} if scale is not None else out
    out = {"count": int(e.size), "epe_mean": float(np.mean(e)), "epe_median": float(np.median(e))}
    if scale is not None:
        out["relative_mean"] = float(np.mean(e / np.broadcast_to(scale, sel.shape)[sel]))
    return out


def depth_order_counts(pred_depth: np.ndarray, true_depth: np.ndarray) -> tuple[int, int, int]:
    """(correct, compared, overlapping) object pairs × pixels of one frame.

    ``true_depth`` (K,H,W): each object's amodal depth, 0 where the object is absent. ``pred_depth``
    (K,H,W): each object's rendered depth, NaN where it is not rendered. A pixel and pair (a, b)
    overlaps when both true depths are > 0; it is compared when both predicted depths are finite too,
    and correct when the predicted order (which is nearer) is the true one.
    """
    td, pd = np.asarray(true_depth, np.float64), np.asarray(pred_depth, np.float64)
    if td.shape != pd.shape:
        raise ValueError(f"depth stacks differ in shape: {pd.shape} vs {td.shape}")
    correct = compared = overlapping = 0
    for a in range(td.shape[0]):
        for b in range(a + 1, td.shape[0]):
            ov = (td[a] > 0) & (td[b] > 0)
            both = ov & np.isfinite(pd[a]) & np.isfinite(pd[b])
            overlapping += int(ov.sum())
            compared += int(both.sum())
            correct += int((both & ((pd[a] < pd[b]) == (td[a] < td[b]))).sum())
    return correct, compared, overlapping


def project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates (..., 2) of world points (..., 3) in an OpenCV camera; NaN behind it."""
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc[..., :2] / z) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return np.where(z > 1e-6, uv, np.nan)


def camera_difference(c2w_a: np.ndarray, c2w_b: np.ndarray) -> dict:
    """Largest rotation (degrees) and camera-centre distance between two (T,4,4) camera tracks."""
    # ||Ra - Rb||_F = 2 sqrt(2) sin(angle / 2): accurate for small angles, where arccos of the trace is not
    chord = np.linalg.norm(c2w_a[:, :3, :3] - c2w_b[:, :3, :3], axis=(1, 2)) / (2 * math.sqrt(2))
    angle = 2 * np.arcsin(np.clip(chord, 0, 1))
    return {"rotation_deg": float(np.degrees(angle).max()),
            "centre_distance": float(np.linalg.norm(c2w_a[:, :3, 3] - c2w_b[:, :3, 3], axis=1).max())}


# --------------------------------------------------------------------------------------------------
# Evaluation of a bundle


@dataclass
class GtEvaluation:
    """The metrics (a dict, NaN where undefined; ``json_safe`` makes it JSON) and what the report draws."""

    metrics: dict
    # name -> (truth RGB, render RGB, true object pixels (H,W) bool)
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    track_frame: np.ndarray | None = None  # (H,W,3) the frame the tracks are drawn on
    track_true: np.ndarray | None = None  # (M,2) true positions there
    track_pred: np.ndarray | None = None  # (M,2) predicted positions there
    track_visible: np.ndarray | None = None  # (M,) true visibility there


def _render(baked, t: int, K: np.ndarray, c2w: np.ndarray, w: int, h: int, dev: torch.device, near: float,
            far: float):
    viewmat = torch.linalg.inv(torch.from_numpy(c2w).float())[None].to(dev)
    Ks = torch.from_numpy(K).float()[None].to(dev)
    with torch.no_grad():
        return render_scene(frame_batches(baked, t, dev), viewmat, Ks, w, h, torch.zeros(1, 3, device=dev),
                            near=near, far=far)


def _check_match(bundle: Bundle, gt: GroundTruth, where: str) -> None:
    m = bundle.manifest
    ids = [o.id for o in m.objects]
    if ids != gt.object_ids or m.clip.frame_count != gt.num_frames:
        raise InputError(f"{where} was made from another clip (objects {ids}, {m.clip.frame_count} frames; the "
                         f"ground truth has {gt.object_ids}, {gt.num_frames} frames)",
                         "pass the --gt folder whose JPEGImages and Annotations the bundle was fitted to")
    if (m.clip.width, m.clip.height) != gt.size:
        raise InputError(f"{where}: clip size {m.clip.width}x{m.clip.height}, ground truth {gt.size[0]}x{gt.size[1]}",
                         "pass the --gt folder the bundle was fitted to")


def evaluate_gt(bundle_dir: str | Path, gt_dir: str | Path, *, device: str = "cpu", neighbours: int = 1,
                min_opacity: float = 0.1, track_side: int = 256) -> GtEvaluation:
    """Every metric of the module docstring for one bundle; InputError when bundle and clip do not match."""
    if neighbours < 1 or not 0 <= min_opacity < 1 or track_side < 1:
        raise InputError(f"neighbours {neighbours}, min_opacity {min_opacity}, track_side {track_side}",
                         "use neighbours >= 1, 0 <= min_opacity < 1 and track_side >= 1")
    gt = load_ground_truth(gt_dir)
    bundle = open_bundle(bundle_dir)
    _check_match(bundle, gt, str(bundle_dir))
    W, H = gt.size
    T, Kn = gt.num_frames, len(gt.object_ids)
    dev = torch.device(device)
    baked = [bundle.load_frames(o) for o in bundle.manifest.objects]
    near, far = bundle.manifest.camera.near, bundle.manifest.camera.far
    holdout = sorted(set(bundle.manifest.run.holdout_frames))
    held = np.zeros(T, bool)
    held[holdout] = True
    warnings = []

    cam = bundle.load_camera()
    cdiff = camera_difference(cam.c2w, gt.c2w)
    scale = float(np.linalg.norm(gt.c2w[:, :3, 3] - gt.points.reshape(-1, 3).mean(0), axis=1).mean())
    k_rel = float(np.abs(cam.K[0] - gt.K).max() / gt.K[0, 0])
    cdiff["intrinsics_relative"] = k_rel
    if cdiff["rotation_deg"] > math.degrees(CAMERA_TOLERANCE) or cdiff["centre_distance"] > CAMERA_TOLERANCE * scale \
            or k_rel > CAMERA_TOLERANCE:
        warnings.append(f"the bundle's cameras are not the ground truth's (up to {cdiff['rotation_deg']:.3g} deg and "
                        f"{cdiff['centre_distance']:.3g} units apart): fit with --cam_path "
                        f"{gt.root / gt.meta['files']['cameras']} for 3D figures in the true world")

    # --- input frames (held-out and training): the clip's own evaluation
    frames = evaluate_bundle(bundle_dir, gt.frames_dir, gt.masks_dir, max_side=max(W, H), device=device)
    ev = GtEvaluation(metrics={})

    # --- novel views
    per_view = []
    for c in range(gt.novel_c2w.shape[0]):
        for j, t in enumerate(gt.novel_frames):
            r = _render(baked, int(t), gt.novel_K[c], gt.novel_c2w[c], W, H, dev, near, far)
            img = r.image[0].clamp(0, 1).cpu().numpy().astype(np.float64)
            inst = r.instance[0].cpu().numpy()
            lab = gt.novel_labels[c, j]
            union = lab > 0
            truth = gt.novel_images[c, j].astype(np.float64) / 255
            per_view.append({
                "camera": c, "frame": int(t), "holdout": bool(held[t]),
                "psnr_masked": masked_psnr(img * union[..., None], truth * union[..., None], union),
                "ssim_masked": masked_ssim(img * union[..., None], truth * union[..., None], union),
                "iou": {oid: mask_iou(inst[..., k] > 0.5, lab == k + 1) for k, oid in enumerate(gt.object_ids)}})
            if j == len(gt.novel_frames) // 2:
                ev.pairs[f"novel camera {c}, frame {int(t)}"] = (gt.novel_images[c, j], _u8(img), union)
    novel = {"cameras": int(gt.novel_c2w.shape[0]), "frames": gt.novel_frames.tolist(),
             "summary": _view_summary(per_view, gt.object_ids),
             "per_camera": [_view_summary([v for v in per_view if v["camera"] == c], gt.object_ids)
                            for c in range(gt.novel_c2w.shape[0])],
             "per_view": per_view}

    # --- tracks: association at a reference frame, then follow the Gaussians
    M = gt.object_index.shape[0]
    pred = np.full((T, M, 3), np.nan)
    ref = np.zeros(M, np.int64)
    ref_frames = {}
    train_frames = np.flatnonzero(~held)
    for k, oid in enumerate(gt.object_ids):
        sel = np.flatnonzero(gt.object_index == k)
        counts = gt.visible[train_frames][:, sel].sum(1)
        r = int(train_frames[int(np.argmax(counts))])
        ref[sel], ref_frames[oid] = r, r
        means, opac = baked[k].means, baked[k].opacities
        cand = np.flatnonzero(opac[r] >= min_opacity)
        if cand.size < neighbours:
            warnings.append(f"object {oid}: fewer than {neighbours} Gaussians with opacity >= {min_opacity} at frame "
                            f"{r}; all {means.shape[1]} are used for its tracks")
            cand = np.arange(means.shape[1])
        idx = cand[nearest_indices(gt.points[r, sel], means[r, cand], neighbours)]  # (M_k, n)
        pred[:, sel] = means[:, idx].astype(np.float64).mean(2)
    not_query = np.arange(T)[:, None] != ref[None, :]
    err3 = end_point_errors(pred, gt.points)
    occluded = gt.in_frame & ~gt.visible
    by_other = occluded & (gt.occluder > 0) & (gt.occluder != gt.object_index[None] + 1)
    radius = gt.radius[gt.object_index][None].repeat(T, 0)
    groups = {"all": not_query, "visible": not_query & gt.visible, "occluded": not_query & occluded,
              "occluded_by_other": not_query & by_other}
    tracks3 = {name: error_summary(err3, sel, radius) for name, sel in groups.items()}
    tracks3["holdout_frames"] = {name: error_summary(err3, sel & held[:, None], radius)
                                 for name, sel in groups.items() if name != "all"}
    tracks3["per_object"] = {oid: {name: error_summary(err3, sel & (gt.object_index == k)[None], radius)
                                   for name, sel in groups.items() if name != "occluded_by_other"}
                             for k, oid in enumerate(gt.object_ids)}
    # where each object is: centre of its true surface points vs its Gaussians' opacity-weighted centre
    centre_err = np.full((T, Kn), np.nan)
    for k in range(Kn):
        true_c = gt.points[:, gt.object_index == k].mean(1)
        w = baked[k].opacities.astype(np.float64)
        pred_c = (baked[k].means * w[..., None]).sum(1) / np.maximum(w.sum(1), 1e-12)[:, None]
        centre_err[:, k] = np.linalg.norm(pred_c - true_c, axis=1)
    tracks3["object_centre"] = {oid: {"epe_mean": float(centre_err[:, k].mean()),
                                      "relative_mean": float(centre_err[:, k].mean() / gt.radius[k])}
                                for k, oid in enumerate(gt.object_ids)}
    tracks3["object_centre_relative_mean"] = float((centre_err / gt.radius[None]).mean())
    tracks3["reference_frames"] = ref_frames
    tracks3["association_distance"] = error_summary(err3, ~not_query, radius)
    tracks3["per_frame"] = {name: [_nanmedian(err3[t][sel[t]]) for t in range(T)]
                            for name, sel in groups.items() if name in ("visible", "occluded")}

    uv_pred = np.stack([project(pred[t], gt.c2w[t], gt.K) for t in range(T)])
    err2 = end_point_errors(uv_pred, gt.uv)
    s = track_side / max(W, H)
    vis2, occ2 = not_query & gt.visible, not_query & occluded
    tracks2 = {"track_side": track_side, "visible": delta_accuracy(err2 * s, vis2),
               "occluded": delta_accuracy(err2 * s, occ2),
               "holdout_frames": {"visible": delta_accuracy(err2 * s, vis2 & held[:, None]),
                                  "occluded": delta_accuracy(err2 * s, occ2 & held[:, None])},
               "epe_px_visible": error_summary(err2, vis2), "epe_px_occluded": error_summary(err2, occ2),
               "per_frame_delta_avg": [delta_accuracy(err2[t] * s, vis2[t])["delta_avg"] for t in range(T)]}
    # the tracks are drawn on the frame where most points are hidden by another object
    t_pic = int(np.argmax((by_other & not_query).sum(1))) if (by_other & not_query).any() else T - 1
    tracks2["picture_frame"] = t_pic
    ev.track_frame, ev.track_true, ev.track_pred = _read_rgb(gt, t_pic), gt.uv[t_pic], uv_pred[t_pic]
    ev.track_visible = gt.visible[t_pic]

    # --- depth order where the true amodal silhouettes overlap
    per_frame_order = []
    tot = np.zeros(3, np.int64)
    tot_held = np.zeros(3, np.int64)
    for t in range(T):
        pd = np.full((Kn, H, W), np.nan)
        for k in range(Kn):
            r = _render([baked[k]], t, gt.K, gt.c2w[t], W, H, dev, near, far)
            a, d = r.alpha[0].cpu().numpy(), r.depth[0].cpu().numpy()
            pd[k] = np.where(a > 0.5, d, np.nan)
        c = np.array(depth_order_counts(pd, gt.amodal_depth[t]))
        tot += c
        tot_held += c * held[t]
        per_frame_order.append({"frame": t, "correct": int(c[0]), "compared": int(c[1]), "overlapping": int(c[2])})
    order = {"summary": _order_summary(tot), "holdout_frames": _order_summary(tot_held), "per_frame": per_frame_order}

    # --- pictures of held-out frames (or training frames when none were withheld)
    show = holdout if holdout else list(range(0, T, max(1, T // 3)))
    for t in show[:4]:
        r = _render(baked, t, gt.K, gt.c2w[t], W, H, dev, near, far)
        kind = "held-out" if held[t] else "training"
        union = np.zeros((H, W), bool)
        for oid in gt.object_ids:
            union |= _read_mask(gt, oid, t)
        ev.pairs[f"{kind} frame {t}"] = (_read_rgb(gt, t), _u8(r.image[0].clamp(0, 1).cpu().numpy()), union)

    ev.metrics = {
        "bundle": str(bundle.root), "gt": str(gt.root), "size": [W, H], "frames_count": T,
        "objects": [{"id": o["id"], "name": o["name"], "deformation": o["deformation"], "radius": o["radius"]}
                    for o in gt.meta["objects"]],
        "holdout_frames": holdout, "run": {"optimizer": bundle.manifest.run.optimizer,
                                           "preset": bundle.manifest.run.preset,
                                           "iterations": bundle.manifest.run.iterations,
                                           "camera_source": bundle.manifest.camera.source},
        "settings": {"neighbours": neighbours, "min_opacity": min_opacity, "track_side": track_side},
        "camera_check": cdiff, "warnings": warnings,
        "frames": {"summary": frames["summary"], "splits": frames["splits"], "per_frame": frames["per_frame"]},
        "novel_views": novel, "tracks_3d": tracks3, "tracks_2d": tracks2, "depth_order": order,
    }
    return ev


def _nanmedian(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(img) * 255), 0, 255).astype(np.uint8)


def _read_rgb(gt: GroundTruth, t: int) -> np.ndarray:
    names = sorted(p for p in gt.frames_dir.iterdir() if p.suffix.lower() == ".png")
    return _read_png(names[t], gt.size[::-1])


def _read_mask(gt: GroundTruth, oid: str, t: int) -> np.ndarray:
    import cv2

    names = sorted(p for p in (gt.masks_dir / oid).iterdir() if p.suffix.lower() == ".png")
    m = cv2.imread(str(names[t]), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise InputError(f"{names[t]}: cannot be read", MAKE_HINT)
    return m > 127


def _mean(values) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def _view_summary(rows: list[dict], ids: list[str]) -> dict:
    return {"count": len(rows), "psnr_masked": _mean([r["psnr_masked"] for r in rows]),
            "ssim_masked": _mean([r["ssim_masked"] for r in rows]),
            "iou": {oid: _mean([r["iou"][oid] for r in rows]) for oid in ids}}


def _order_summary(c: np.ndarray) -> dict:
    correct, compared, overlapping = (int(x) for x in c)
    return {"accuracy": correct / compared if compared else float("nan"),
            "coverage": compared / overlapping if overlapping else float("nan"),
            "correct": correct, "compared": compared, "overlapping": overlapping}
