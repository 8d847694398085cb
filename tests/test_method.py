"""Building blocks of the GenMOJO method: crops, stage 1, placement, stage-2 losses, withheld frames."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from backend.config import get_preset, with_overrides
from backend.model.camera import static_cameras
from backend.model.crops import crop_box, crop_object
from backend.model.deformation_field import DeformationField
from backend.model.frame_fill import FrameFill
from backend.model.gaussians import CanonicalGaussians
from backend.model.geometry import quat_multiply
from backend.model.scene import render_scene
from backend.model.object_camera import camera_center, orbit_viewmat, reference_camera
from backend.model.tracks import track_object
from backend.optim.densify import make_strategy
from backend.optim.knn import knn_table
from backend.optim.stage1 import ObjectCrop, fit_object, render_object
from backend.optim.stage2 import (build_method_scene, instance_nll, local_scale_loss, object_reference,
                                  rigidity_loss, smooth_log_depth)

CFG = get_preset("cpu-tiny")


def _disc_clip(T=4, size=48):
    """A textured disc moving right by 2 px per frame on black, with its masks."""
    yy, xx = np.mgrid[:size, :size]
    frames = np.zeros((T, size, size, 3), np.uint8)
    masks = np.zeros((T, size, size), bool)
    for t in range(T):
        m = (xx - (16 + 2 * t)) ** 2 + (yy - 24) ** 2 < 9 ** 2
        masks[t] = m
        frames[t][m] = np.stack([xx * 5, yy * 5, np.full_like(xx, 128)], -1)[m].astype(np.uint8)
    return frames, masks


def _disc_object():
    """The disc clip's one object after stage 1: (frames, masks, track, reference crop box, canonical
    Gaussians, static cameras)."""
    frames, masks = _disc_clip(T=4)
    tr = track_object("001", masks)
    box = crop_box(tr.bbox[tr.reference], CFG.stage1.crop_margin)
    img, m = crop_object(frames[tr.reference], masks[tr.reference], box, CFG.stage1.crop_size)
    cams = static_cameras(4, 48, 48, 49.1, 0.01, 100.0)
    canon = fit_object(ObjectCrop(img, m), CFG.stage1, object_reference(tr, cams, CFG), torch.device("cpu"),
                       torch.Generator().manual_seed(0))
    return frames, masks, tr, box, canon, cams


def _disc_targets(frames, masks, depth=None):
    """Stage 2's targets for the disc clip: every frame trained, zero flow, optional depth maps."""
    from backend.optim.stage2 import ClipTargets

    return ClipTargets(frames=torch.from_numpy(frames).float() / 255, masks=torch.from_numpy(masks)[..., None],
                       train=torch.arange(4), prev=torch.tensor([-1, 0, 1, 2]), flow=torch.zeros(3, 48, 48, 2),
                       flow_valid=torch.ones(3, 48, 48, dtype=torch.bool), flow_row=torch.tensor([-1, 0, 1, 2]),
                       depth=depth)


def test_crop_is_square_in_pixels_for_wide_frames():
    box = crop_box(np.array([10, 40, 110, 60]), 0.5)  # a 100 x 20 px object
    assert box.side == pytest.approx(200) and (box.cx, box.cy) == (60, 50)
    frame = np.full((100, 300, 3), 200, np.uint8)
    mask = np.zeros((100, 300), bool)
    mask[40:60, 10:110] = True
    img, m = crop_object(frame, mask, box, 50)
    ys, xs = np.nonzero(m > 0.5)
    assert 24 <= xs.max() - xs.min() + 1 <= 26 and 4 <= ys.max() - ys.min() + 1 <= 6  # half the crop wide
    assert np.allclose(img[0, 0], 1.0)  # outside the frame: white


def test_orbit_camera_looks_at_the_origin_from_the_reference_side():
    for e, a in [(0, 0), (30, 0), (0, 90), (-20, 135)]:
        v = orbit_viewmat(2.0, e, a)
        assert torch.allclose(v[:3, 3], torch.tensor([0.0, 0.0, 2.0]))  # origin straight ahead at distance 2
    assert torch.allclose(camera_center(orbit_viewmat(2.0)), torch.tensor([0.0, 0.0, -2.0]))
    assert camera_center(orbit_viewmat(2.0, 30, 0))[1] < 0  # positive elevation is above (y down)
    assert camera_center(orbit_viewmat(2.0, 0, 90))[0] > 1.9  # positive azimuth to +x


def _spread_object(n=400, seed=0):
    """Canonical Gaussians spread through a box 0.5 wide, 1.2 tall and 1.0 deep (object units), as an
    unguided stage 1 leaves them: their depths are not constrained by the one view they were fitted to."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.5, 1.2, 1.0])
    return CanonicalGaussians(means=means, log_scales=torch.full((n, 3), math.log(0.03)),
                              colors=torch.rand(n, 3, generator=g), opacities=torch.full((n,), 0.9),
                              quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1))


@pytest.mark.parametrize("kind", ["scene", "centred"])
def test_stage_two_places_an_off_centre_object_as_its_reference_camera_saw_it(kind):
    """At the reference frame, stage 2's identity deformation and placement must render the object
    where stage 1 fitted it: its reference render, warped into the frame by the crop box, must cover
    the same pixels. The spec's centred camera does not, for an object away from the image centre."""
    W = H = 96
    masks = np.zeros((2, H, W), bool)
    masks[:, 40:88, 2:22] = True  # a tall object at the left edge of the frame, as crossing's people
    tr = track_object("001", masks)
    cams = static_cameras(2, W, H, 49.1, 0.01, 100.0)
    cfg = with_overrides(CFG, stage1={"reference_camera": kind, "crop_size": 64})
    canon = _spread_object()
    ref = object_reference(tr, cams, cfg)
    box = crop_box(tr.bbox[tr.reference], cfg.stage1.crop_margin)
    scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 2), 3.0), [box.side], cfg)
    params = {"means": canon.means, "quats": canon.quats, "scales": canon.log_scales,
              "opacities": canon.opacity_logits, "colors": canon.color_logits}
    f = torch.tensor([tr.reference])
    with torch.no_grad():
        _, crop_alpha, _ = render_object(params, ref.viewmat[None], ref.K, ref.size)
        frame = render_scene(scene.world_at(f), cams.viewmats(f), cams.K[f], W, H, torch.zeros(1, 3),
                             near=0.01, far=100.0)
    _, placed = crop_object(np.zeros((H, W, 3), np.uint8), frame.alpha[0].numpy(), box, ref.size)
    _, inside = crop_object(np.zeros((H, W, 3), np.uint8), np.ones((H, W), np.float32), box, ref.size)
    inside = inside > 0.99  # the crop reaches past the frame's edge, where the frame shows nothing
    a, b = (crop_alpha[0].numpy() > 0.5) & inside, (placed > 0.5) & inside
    iou = (a & b).sum() / (a | b).sum()
    assert a.sum() > 200  # the object fills a good part of its crop
    if kind == "scene":
        assert iou > 0.95, iou
    else:
        assert iou < 0.85, iou


def test_orbit_views_turn_about_the_reference_line_of_sight():
    """An off-centre object's orbit views start on its reference camera's line of sight (so the prior's
    reference view is the crop's view) and keep the horizon level."""
    K = static_cameras(1, 96, 96, 49.1, 0.01, 100.0).K[0]
    ref = reference_camera("scene", crop_box(np.array([6, 60, 26, 90]), 0.65), K, 32, 49.1, 2.0)
    sight = camera_center(ref.viewmat)
    # the object is low on the left of the frame: the camera is to its right (+x) and above it (−y)
    assert sight[0] > 0 and sight[1] < 0
    views = ref.orbit_viewmats(torch.tensor([[0.0, 0.0, 0.0], [20.0, -35.0, 0.1]]))
    c0 = camera_center(views[0])
    torch.testing.assert_close(c0 / c0.norm(), sight / sight.norm(), atol=1e-5, rtol=0)
    assert float(c0.norm()) == pytest.approx(2.0, abs=1e-5)
    for v in views:
        assert float(v[0, 3]) == 0 and float(v[1, 3]) == 0  # looks at the origin
        assert abs(float(v[0, 1])) < 1e-6  # no roll: the camera's right stays horizontal in object units
    c1 = camera_center(views[1])
    assert float(c1.norm()) == pytest.approx(2.1, abs=1e-5) and float(c1[1]) < float(c0[1])  # higher up
    centred = reference_camera("centred", crop_box(np.array([6, 60, 26, 90]), 0.65), K, 32, 49.1, 2.0)
    torch.testing.assert_close(centred.orbit_viewmats(torch.zeros(1, 3))[0], orbit_viewmat(2.0))


def _disc_crop():
    """The disc clip's object in frame 0: its crop and the scene reference camera it is seen through."""
    frames, masks = _disc_clip()
    box = crop_box(track_object("001", masks).bbox[0], CFG.stage1.crop_margin)
    crop = ObjectCrop(*crop_object(frames[0], masks[0], box, CFG.stage1.crop_size))
    ref = reference_camera("scene", box, static_cameras(1, 48, 48, 49.1, 0.01, 100.0).K[0], crop.size, 49.1, 2.0)
    return crop, ref


def test_stage_one_fits_the_crop_and_densifies():
    crop, ref = _disc_crop()
    m = crop.mask
    torch.manual_seed(0)  # gsplat's split samples from the global stream
    log = []
    canon = fit_object(crop, CFG.stage1, ref, torch.device("cpu"), torch.Generator().manual_seed(0),
                       on_step=lambda s, n, l: log.append(l))
    assert max(e["gaussians"] for e in log) > CFG.stage1.num_points  # gsplat's strategy added Gaussians
    S = crop.size
    with torch.no_grad():
        params = {"means": canon.means, "quats": canon.quats, "scales": canon.log_scales,
                  "opacities": canon.opacity_logits, "colors": canon.color_logits}
        _, alpha, _ = render_object(params, ref.viewmat[None], ref.K, S)
    pred, true = alpha[0].numpy() > 0.5, m > 0.5
    assert (pred & true).sum() / (pred | true).sum() > 0.6


def test_stage_one_reports_the_alpha_sharpness_term_only_when_weighted():
    import dataclasses

    crop, ref = _disc_crop()
    for w in (0.0, 100.0):
        log = []
        cfg = dataclasses.replace(CFG.stage1, w_alpha_sharp=w)
        fit_object(crop, cfg, ref, torch.device("cpu"), torch.Generator().manual_seed(0), iterations=4,
                   on_step=lambda s, n, l: log.append(l))
        assert all(("alpha_sharp" in e) == (w > 0) for e in log)
        if w > 0:  # the fresh ball's edge is soft: the term is at work from the first step
            assert all(e["alpha_sharp"] > 0 for e in log)


def test_opacity_reset_fires_despite_the_gsplat_1_5_3_bug():
    cfg = CFG.stage1.__class__(opacity_reset_every=10, densify_every=1000)
    strategy = make_strategy(cfg, torch.Generator().manual_seed(0))
    params = torch.nn.ParameterDict({"means": torch.nn.Parameter(torch.zeros(4, 3)),
                                     "scales": torch.nn.Parameter(torch.full((4, 3), -3.0)),
                                     "quats": torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]] * 4)),
                                     "opacities": torch.nn.Parameter(torch.full((4,), 3.0))})
    opts = {k: torch.optim.Adam([{"params": [v], "name": k}]) for k, v in params.items()}
    state = strategy.initialize_state(0.5)
    means2d = torch.zeros(1, 4, 2, requires_grad=True)
    means2d.sum().backward()
    info = {"means2d": means2d, "radii": torch.ones(1, 4, 2), "width": 8, "height": 8, "n_cameras": 1,
            "gaussian_ids": None}
    strategy.step_post_backward(params, opts, state, 10, info)
    assert torch.sigmoid(params["opacities"]).max() <= 2 * cfg.prune_opacity + 1e-6


def test_instance_loss_tests_the_true_object_not_object_zero():
    masks = torch.zeros(1, 1, 1, 2, dtype=torch.bool)  # (B, H, W, K)
    masks[..., 1] = True  # the pixel belongs to object 1 only
    inst = torch.tensor([[[[0.1, 0.2]]]])  # object 1 barely visible, object 0 below the threshold too
    inst_confident0 = torch.tensor([[[[0.9, 0.05]]]])  # object 0 (wrongly) in front
    assert instance_nll(inst, masks, 0.75, False) == pytest.approx(-math.log(0.2))
    assert instance_nll(inst_confident0, masks, 0.75, False) == pytest.approx(-math.log(0.05))
    # the public code's test uses object 0's weight (0.9 > 0.75) and skips this pixel [quirk]
    assert instance_nll(inst_confident0, masks, 0.75, True) == 0


def test_rigid_motion_costs_nothing_and_bending_does():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, generator=g)
    knn = knn_table(x, 8, 10.0)
    q = torch.tensor([math.cos(0.3), 0.0, math.sin(0.3), 0.0])  # rotation about y
    from backend.model.geometry import quat_to_rotmat
    x_rot = x @ quat_to_rotmat(q).T + torch.tensor([0.5, 0.0, 0.1])
    ident = torch.tensor([1.0, 0, 0, 0]).expand(200, 4)
    q_cur = quat_multiply(q.expand(200, 4), ident)
    assert rigidity_loss(x, x_rot, ident, q_cur, knn) < 1e-4
    bent = x_rot + 0.2 * torch.sin(6 * x[:, :1])
    assert rigidity_loss(x, bent, ident, q_cur, knn) > 1e-3
    assert local_scale_loss(torch.full((200, 3), 0.3), knn) < 1e-6
    assert local_scale_loss(torch.randn(200, 3, generator=g), knn) > 0.1


def test_depth_factors_are_smoothed_and_rate_limited():
    d = np.array([2.0] * 5 + [4.0] * 5)
    out = smooth_log_depth(d, 1.0, 5, 0.05)
    assert np.abs(np.diff(np.log(out))).max() <= 0.05 + 1e-9
    assert out[0] == pytest.approx(2.0, rel=1e-6) and out[-1] > out[0]


def test_frame_fill_interpolates_untrained_frames_only():
    fill = FrameFill(np.array([True, False, False, True, False]))
    v = torch.tensor([[0.0], [9.0], [9.0], [3.0], [9.0]])
    out = fill(v, torch.arange(5))
    assert torch.allclose(out[:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0]))
    assert torch.equal(FrameFill(np.ones(5, bool))(v, torch.arange(5)), v)


def test_the_stage_two_model_starts_where_stage_one_put_each_object():
    """At its reference frame, the identity deformation and the placement put the object on its mask."""
    frames, masks, tr, box, canon, cams = _disc_object()
    scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 4), 3.0), [box.side], CFG)
    from backend.model.scene import render_scene
    for t in range(4):
        f = torch.tensor([t])
        with torch.no_grad():
            r = render_scene(scene.world_at(f), cams.viewmats(f), cams.K[f], 48, 48, torch.zeros(1, 3),
                             near=0.01, far=100.0)
        pred = r.instance[0, ..., 0].numpy() > 0.5
        iou = (pred & masks[t]).sum() / (pred | masks[t]).sum()
        assert iou > 0.6, (t, iou)
    pl = scene.objects[0].placement
    assert torch.allclose(pl.depth, pl.depth[:1].expand_as(pl.depth))  # constant depth source → constant factor


def test_silhouette_band_removes_the_balanced_mse_bias_towards_fat_silhouettes():
    """The spec's balanced MSE makes spilling 1 px outside a small mask far cheaper than falling 1 px
    short of it; with the band both errors cost about what their pixel counts say."""
    from backend.optim.losses import balanced_mse, silhouette_band

    mask = torch.zeros(1, 96, 96, dtype=torch.bool)
    mask[0, 40:60, 44:52] = True  # a thin object in a large frame
    fat = silhouette_band(mask, 1).float()
    thin = ~silhouette_band(~mask, 1)
    target = mask.float()
    spec_ratio = balanced_mse(thin.float(), target, mask) / balanced_mse(fat, target, mask)
    band_ratio = balanced_mse(thin.float(), target, mask, 4) / balanced_mse(fat, target, mask, 4)
    assert spec_ratio > 10
    pixels_ratio = float((mask & ~thin).sum() / (fat.bool() & ~mask).sum())
    assert band_ratio == pytest.approx(pixels_ratio, rel=1e-5)
    assert balanced_mse(target, target, mask, 4) == 0


def test_alpha_sharpness_counts_only_a_soft_edge_around_the_silhouette():
    """Binary alpha costs nothing, a blurred edge does, and alpha far from the edge is not the term's
    business; its gradient pushes edge pixels towards 0 or 1, whichever side of ½ they are on."""
    from backend.optim.losses import alpha_sharpness

    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 20:44, 24:40] = True
    assert alpha_sharpness(mask.float(), mask, 2) == 0
    haze = mask.float().clone()
    haze[0, :5, :5] = 0.5  # far from the silhouette: ignored
    haze[0, 30, 30] = 0.5  # deep inside: ignored
    assert alpha_sharpness(haze, mask, 2) == 0
    blurred = torch.nn.functional.avg_pool2d(mask.float()[:, None], 5, stride=1, padding=2)[:, 0]
    blurred.requires_grad_(True)
    value = alpha_sharpness(blurred, mask, 2)
    assert 0.2 < float(value.detach()) <= 1.0
    value.backward()
    grad = blurred.grad[0]
    assert float(grad[20, 32]) < 0 < float(grad[18, 32])  # just inside → up (towards 1), just outside → down
    assert float(grad[5, 5]) == 0 and float(grad[32, 32]) == 0


def test_alpha_sharpness_weight_adds_a_named_term_to_stage_two():
    import dataclasses

    from backend.optim.stage2 import step_losses

    frames, masks, tr, box, canon, cams = _disc_object()
    targets = _disc_targets(frames, masks)
    batch, bg = torch.tensor([1, 3]), torch.ones(2, 3)
    scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 4), 3.0), [box.side], CFG)
    assert "alpha_sharp" not in step_losses(scene, targets, cams, batch, bg, CFG, 0.5)
    cfg = dataclasses.replace(CFG, stage2=dataclasses.replace(CFG.stage2, w_alpha_sharp=7.0))
    terms = step_losses(scene, targets, cams, batch, bg, cfg, 0.5)
    assert float(terms["alpha_sharp"].detach()) > 0
    terms["alpha_sharp"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in scene.parameters())


def test_time_smoothness_term_is_named_in_config_and_reaches_only_the_time_planes():
    import dataclasses

    from backend.optim.stage2 import step_losses

    frames, masks, tr, box, canon, cams = _disc_object()
    targets = _disc_targets(frames, masks)
    batch, bg = torch.tensor([1, 3]), torch.ones(2, 3)
    for w in (0.0, 5.0):
        cfg = dataclasses.replace(CFG, stage2=dataclasses.replace(CFG.stage2, w_time_smooth=w))
        scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 4), 3.0), [box.side], cfg)
        planes = scene.objects[0].field.planes
        with torch.no_grad():  # one time node out of line, as a fit could leave it
            planes.temporal[0][:, :, 2] += 0.5
        terms = step_losses(scene, targets, cams, batch, bg, cfg, step_ratio=0.5)
        assert ("time_smooth" in terms) == (w > 0)
        if w > 0:
            assert float(terms["time_smooth"]) == pytest.approx(w * 0.5 * float(planes.time_smoothness()), rel=1e-6)
            terms["time_smooth"].backward()
            assert planes.temporal[0].grad.abs().sum() > 0
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in planes.spatial)


def test_depth_loss_compares_log_depth_inside_the_eroded_covered_mask():
    from backend.optim.stage2 import depth_l1_log

    masks = torch.zeros(1, 32, 32, 1, dtype=torch.bool)
    masks[0, 8:24, 8:24] = True
    target = torch.full((1, 32, 32), 4.0)
    depth = torch.full((1, 32, 32), 4.0 * 1.25)
    alpha = torch.ones(1, 32, 32)
    depth[0, 8:11] = 100.0  # the mask's rim (inside the 7x7 erosion margin) does not count
    depth[0, :, :4] = 0.01  # nor anything outside the mask
    assert float(depth_l1_log(depth, alpha, target, masks)) == pytest.approx(math.log(1.25), rel=1e-5)
    alpha[0, 12:20, 12:20] = 0.2  # uncovered pixels do not count either
    depth[0, 12:20, 12:20] = 1e3
    assert float(depth_l1_log(depth, alpha, target, masks)) == pytest.approx(math.log(1.25), rel=1e-5)


def test_depth_term_joins_the_step_when_a_depth_map_is_given():
    import dataclasses

    from backend.optim.stage2 import step_losses

    frames, masks, tr, box, canon, cams = _disc_object()
    scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 4), 3.0), [box.side], CFG)
    batch, bg = torch.tensor([1, 3]), torch.ones(2, 3)
    assert CFG.stage2.depth_loss  # on by default: the paper's term
    no_map = step_losses(scene, _disc_targets(frames, masks), cams, batch, bg, CFG, step_ratio=0.5)
    assert "depth" not in no_map
    far = _disc_targets(frames, masks, torch.full((4, 48, 48), 6.0))  # twice as far as the object was placed
    terms = step_losses(scene, far, cams, batch, bg, CFG, step_ratio=0.5)
    assert float(terms["depth"]) > 0
    terms["depth"].backward()
    d = scene.objects[0].placement.depth
    assert d.grad is not None and (d.grad[[1, 3]] < 0).all()  # descending moves the object back
    off = dataclasses.replace(CFG, stage2=dataclasses.replace(CFG.stage2, depth_loss=False))
    assert "depth" not in step_losses(scene, far, cams, batch, bg, off, step_ratio=0.5)


def _silhouette(scene, cams, t):
    f = torch.tensor([t])
    with torch.no_grad():
        r = render_scene(scene.world_at(f), cams.viewmats(f), cams.K[f], 48, 48, torch.zeros(1, 3), near=0.01, far=100.0)
    return r.instance[0, ..., 0].numpy() > 0.5


def test_the_learned_scale_changes_an_objects_apparent_size_about_its_place():
    """A frame's scale correction shrinks the rendered object about the same centre, the frames beside it
    keep theirs, and the fit's optimiser learns it only when stage2.lr_scale says so."""
    from backend.optim.stage2 import make_stage2_state

    frames, masks, tr, box, canon, cams = _disc_object()
    scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 4), 3.0), [box.side], CFG)
    before, beside = _silhouette(scene, cams, 2), _silhouette(scene, cams, 1)
    pl = scene.objects[0].placement
    with torch.no_grad():
        pl.log_scale[2] = math.log(0.7)
    after = _silhouette(scene, cams, 2)
    assert after.sum() == pytest.approx(0.49 * before.sum(), rel=0.2)
    centre = lambda m: np.argwhere(m).mean(0)
    assert np.abs(centre(after) - centre(before)).max() < 1.0
    assert np.array_equal(_silhouette(scene, cams, 1), beside)
    names = lambda cfg: {g["name"] for g in make_stage2_state(scene, cfg, torch.Generator()).optimizer.param_groups}
    assert CFG.stage2.lr_scale > 0 and "scale" in names(CFG)
    assert "scale" not in names(with_overrides(CFG, stage2={"lr_scale": 0.0}))  # the spec: fixed


def test_scale_init_box_starts_each_frame_at_the_objects_apparent_size():
    """"spec" holds the reference size wherever the object is smaller; "box" follows the box's larger side,
    measured only where the mask is clear of the image border."""
    from backend.optim.stage2 import placement_sides

    T, H = 6, 120
    masks = np.zeros((T, H, H), bool)
    heights = [40, 48, 56, 64, 60, 60]
    for t, h in enumerate(heights):
        masks[t, 30:30 + h, 50:60] = True
    masks[5, 30:90, 0:10] = True  # frame 5 touches the left border: its box is not a size
    masks[5, 30:90, 50:60] = False
    tr = track_object("001", masks)
    assert tr.reference == 3 and tr.border[5] > 0
    ref_side = 64 / CFG.stage1.crop_margin
    spec = placement_sides(tr, ref_side, with_overrides(CFG, stage2={"scale_init": "spec"}).stage2)
    assert np.allclose(spec, ref_side)
    box = placement_sides(tr, ref_side, with_overrides(CFG, stage2={"scale_init": "box"}).stage2)
    assert np.allclose(box[:5], ref_side * np.array(heights[:5]) / 64)
    assert box[5] == pytest.approx(box[4])  # held from its measured neighbour
    with pytest.raises(ValueError, match="scale_init"):
        placement_sides(tr, ref_side, with_overrides(CFG, stage2={"scale_init": "bbox"}).stage2)


def _fit_shared_alpha(masks: torch.Tensor, spill_weighted: bool, steps: int = 400) -> torch.Tensor:
    """One alpha image shared by every frame (a model that cannot follow the motion), fitted to each
    frame's mask with stage 2's alpha term; returns the fitted alpha."""
    from backend.optim.losses import balanced_mse, spill_weighted as covered

    logits = torch.zeros(masks.shape[1:], requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(steps):
        alpha = torch.sigmoid(logits)[None].expand(masks.shape[0], -1, -1)
        near = covered(alpha, 0.05) if spill_weighted else None
        loss = balanced_mse(alpha, masks.float(), masks, 0, near)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(logits).detach()


def test_spec_balancing_swells_a_shape_it_cannot_follow_into_the_union_of_its_poses():
    """A limb in one place in half the frames and elsewhere in the other half: the spec's balanced MSE
    covers both places (each frame insists on its own mask and hardly minds coverage elsewhere);
    counting the render's own silhouette with the mask covers neither more than the frames agree on."""
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    masks[:, 20:44, 28:36] = True  # the body, in every frame
    masks[:2, 20:24, 36:48] = True  # the limb up in two frames
    masks[2:, 40:44, 36:48] = True  # and down in the other two
    body, up, down = (slice(20, 44), slice(28, 36)), (slice(20, 24), slice(36, 48)), (slice(40, 44), slice(36, 48))
    spec = _fit_shared_alpha(masks, spill_weighted=False)
    fair = _fit_shared_alpha(masks, spill_weighted=True)
    for alpha in (spec, fair):
        assert float(alpha[body].min()) > 0.9  # what every frame agrees on is covered
        assert float(alpha[:8].max()) < 0.1  # and what none asks for is left alone
    assert float(spec[up].min()) > 0.85 and float(spec[down].min()) > 0.85  # the union of both poses
    assert float(fair[up].max()) < 0.6 and float(fair[down].max()) < 0.6  # no more than half
    area = lambda a: float((a > 0.5).sum())  # noqa: E731
    assert area(spec) == pytest.approx(float(masks.any(0).sum()), rel=0.02)
    assert area(fair) < 1.05 * float(masks.all(0).sum())


def test_spill_weighting_prices_spill_and_misses_alike():
    """Each pixel spilled all round a thin object costs what each pixel it falls short costs, up to the
    change of the near area (mask plus render) they are averaged over; the spec's balancing makes a
    spilled pixel (outside area / inside area) times cheaper."""
    from backend.optim.losses import balanced_mse, silhouette_band, spill_weighted

    mask = torch.zeros(1, 96, 96, dtype=torch.bool)
    mask[0, 40:60, 44:52] = True
    fat = silhouette_band(mask, 1).float()
    thin = (~silhouette_band(~mask, 1)).float()
    target = mask.float()
    spilled, missed = float((fat.bool() & ~mask).sum()), float((mask & ~thin.bool()).sum())

    def cost(alpha, weighted=True):
        return float(balanced_mse(alpha, target, mask, 0, spill_weighted(alpha, 0.05) if weighted else None))

    assert cost(fat) / spilled == pytest.approx(1 / float(fat.sum()), rel=1e-5)  # near = mask ∪ render
    assert cost(thin) / missed == pytest.approx(1 / float(mask.sum()), rel=1e-5)
    assert (cost(thin) / missed) / (cost(fat) / spilled) < 1.5
    assert (cost(thin, False) / missed) / (cost(fat, False) / spilled) > 50
    assert cost(target) == 0
    assert not spill_weighted(fat.requires_grad_(True), 0.05).requires_grad  # a weighting, not a gradient path


def test_stage_two_terms_follow_the_spill_and_drift_settings():
    """``spill_weighted`` changes the RGB and alpha terms of a spilling render and nothing else;
    ``w_scale_drift`` names a term that is zero at the identity start and penalises a size change
    that is the same in every frame (which the frame-to-frame scale term cannot see)."""
    import dataclasses

    from backend.optim.stage2 import step_losses

    frames, masks, tr, box, canon, cams = _disc_object()
    targets = _disc_targets(frames, masks)
    batch, bg = torch.tensor([0, 3]), torch.ones(2, 3)
    scene = build_method_scene(["001"], [canon], [tr], cams, np.full((1, 4), 3.0), [box.side], CFG)

    def terms(**stage2):
        cfg = dataclasses.replace(CFG, stage2=dataclasses.replace(CFG.stage2, **stage2))
        with torch.no_grad():
            return {k: float(v) for k, v in step_losses(scene, targets, cams, batch, bg, cfg, 0.5).items()}

    assert CFG.stage2.spill_weighted and CFG.stage2.w_scale_drift > 0
    assert terms()["scale_drift"] == 0  # the field starts at the identity
    assert "scale_drift" not in terms(w_scale_drift=0.0)
    field = scene.objects[0].field
    with torch.no_grad():
        field.scale_head.out.bias.fill_(0.7)  # every Gaussian 2x larger in every frame
    on, spec = terms(), terms(spill_weighted=False)
    assert on["scale_drift"] == pytest.approx(CFG.stage2.w_scale_drift * 0.5 * 0.7, rel=1e-5)
    assert on["scale_change"] == pytest.approx(0, abs=1e-6)  # the same change in both frames
    assert on["alpha"] > spec["alpha"] and on["rgb"] > spec["rgb"]  # the swollen disc's spill now counts
    assert on["flow"] == spec["flow"]
    assert on["placement_smooth"] == pytest.approx(0, abs=1e-9) and CFG.stage2.w_placement_smooth > 0  # on; a glide
    assert "placement_smooth" not in terms(w_placement_smooth=0.0)  # 0: the spec
    from backend.optim.stage2 import placement_jerk
    placement = scene.objects[0].placement
    with torch.no_grad():
        placement.translation[1, 0] += 0.05  # frame 1 off its neighbours' midpoint
        jerk = float(placement_jerk(placement, cams.K, CFG.stage1.extent))
    assert jerk > 0
    assert terms(w_placement_smooth=2.0)["placement_smooth"] == pytest.approx(2.0 * 0.5 * jerk, rel=1e-5)
    assert "basis_smooth" not in on and CFG.stage2.w_basis_smooth == 0  # off by default, the spec
    from backend.optim.stage2 import basis_jerk, pixels_per_unit
    with torch.no_grad():
        field.basis_mlp[-1].weight.normal_(0, 0.1)  # bent bases
        bent = float(basis_jerk(field, pixels_per_unit(placement, cams.K), CFG.stage1.extent))
    assert bent > 0
    assert terms(w_basis_smooth=3.0)["basis_smooth"] == pytest.approx(3.0 * 0.5 * bent, rel=1e-5)
    assert "field_jerk" not in on and CFG.stage2.w_field_jerk == 0  # off by default, the spec
    from backend.optim.stage2 import field_jerk, jerk_centres
    with torch.no_grad():
        jerk = float(field_jerk(field, scene.objects[0].means, jerk_centres(batch, targets.frames.shape[0]),
                                pixels_per_unit(placement, cams.K)))
    assert jerk > 0  # the bent bases move the Gaussians off their neighbours' midpoints
    assert terms(w_field_jerk=2.0, field_jerk_points=10 ** 6)["field_jerk"] == pytest.approx(2.0 * 0.5 * jerk, rel=1e-5)


def test_inflation_gives_a_disc_a_ball_and_a_bar_a_tube_of_its_own_width():
    from backend.model.back_prior import inflation_half_thickness

    yy, xx = np.mgrid[:96, :96]
    rho2 = (xx - 48) ** 2 + (yy - 48) ** 2
    h = inflation_half_thickness(rho2 < 30 ** 2)
    ball = np.sqrt(np.clip(30 ** 2 - rho2, 0, None))
    inner = rho2 < 15 ** 2
    assert np.abs(h - ball)[inner].max() < 1.5  # the inner half of the disc is a ball
    assert h[rho2 >= 30 ** 2].max() == 0
    bar = (np.abs(yy - 48) < 6) & (np.abs(xx - 48) < 40)  # 11 px wide, attached to nothing
    hb = inflation_half_thickness(bar)
    assert 5 <= hb[48, 48] <= 6.5  # a tube as thick as the bar is wide, not as the longer side
    assert inflation_half_thickness(np.zeros((8, 8), bool)).max() == 0


def _card(ref, radius_px: float, n: int = 1500, seed: int = 0) -> CanonicalGaussians:
    """What stage 1 leaves without a novel-view prior, made exact: one layer of opaque Gaussians on the plane
    through the object's origin facing the reference camera, covering a disc of ``radius_px`` in the crop."""
    g = torch.Generator().manual_seed(seed)
    S = ref.size
    ang, rad = torch.rand(n, generator=g) * 2 * math.pi, radius_px * torch.rand(n, generator=g).sqrt()
    u, v = S / 2 + rad * torch.cos(ang), S / 2 + rad * torch.sin(ang)
    z = torch.full((n,), float(ref.center_depth))
    cam = torch.stack([(u - ref.K[0, 2]) / ref.K[0, 0] * z, (v - ref.K[1, 2]) / ref.K[1, 1] * z, z], 1)
    R, t = ref.viewmat[:3, :3], ref.viewmat[:3, 3]
    px = float(z[0] / ref.K[0, 0])  # one pixel in object units
    return CanonicalGaussians(means=(cam - t) @ R, log_scales=torch.full((n, 3), math.log(1.5 * px)),
                              colors=torch.rand(n, 3, generator=g), opacities=torch.full((n,), 0.9))


def test_mirrored_back_gives_a_card_the_depth_of_its_width_without_changing_its_reference_view():
    """A card seen face-on gets a body as deep as it is wide (a disc becomes a ball), hidden behind the
    front: the reference render stays what stage 1 fitted, and the originals keep their parameters."""
    import dataclasses

    from backend.model.back_prior import mirror_back
    from backend.optim.stage1 import uses_back_prior

    _, masks = _disc_clip(T=1)
    tr = track_object("001", masks)
    cams = static_cameras(1, 48, 48, 49.1, 0.01, 100.0)
    ref = object_reference(tr, cams, CFG)
    card = _card(ref, radius_px=ref.size * 0.3)
    body = mirror_back(card, ref)
    n = card.num_gaussians
    assert n < body.num_gaussians <= 2 * n
    assert torch.equal(body.means[:n], card.means) and torch.equal(body.color_logits[:n], card.color_logits)

    R, t = ref.viewmat[:3, :3], ref.viewmat[:3, 3]

    def extent(x):
        return float(torch.quantile(x, 0.98) - torch.quantile(x, 0.02))

    with torch.no_grad():
        cam = body.means @ R.T + t
        width = extent((card.means @ R.T + t)[:, 0])
        assert extent((card.means @ R.T + t)[:, 2]) < 1e-3 * width  # the card is flat
        assert 0.7 * width < extent(cam[:, 2]) < 1.4 * width  # a ball of the (blurred) silhouette: depth ≈ width
        assert float(cam[:, 2].min()) >= float(ref.center_depth) - 1e-4  # all of it behind the front

        def render(c):
            return render_object({"means": c.means, "quats": c.quats, "scales": c.log_scales,
                                  "opacities": c.opacity_logits, "colors": c.color_logits},
                                 ref.viewmat[None], ref.K, ref.size)

        (a, alpha_a, _), (b, alpha_b, _) = render(card), render(body)
    covered = alpha_a[0] > 0.99
    assert int(covered.sum()) > 100
    assert float((a[0] - b[0]).abs()[covered].max()) < 0.05  # the copies hide behind the opaque front
    auto = dataclasses.replace(CFG.stage1, back_prior="auto")
    assert uses_back_prior(auto, guided=False) and not uses_back_prior(auto, guided=True)
    assert not uses_back_prior(dataclasses.replace(CFG.stage1, back_prior="none"), guided=False)
    assert uses_back_prior(dataclasses.replace(CFG.stage1, back_prior="mirror"), guided=True)


def test_basis_jerk_is_zero_for_bases_at_a_constant_rate_and_looks_at_withheld_frames():
    """``basis_jerk``: bases whose time layer never bends inside the clip cost nothing; a kink between two
    frames costs its change of slope in pixels (rotations times the radius), at any frame, trained or not."""
    from backend.optim.stage2 import basis_jerk

    cfg = dataclasses.replace(CFG.deformation, num_bases=2, basis_hidden=4, motion_bases="se3")
    T = 9
    field = DeformationField(cfg, T)
    px = torch.tensor(40.0)
    lin, out = field.basis_mlp[0], field.basis_mlp[-1]
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(2.0)  # every hinge at tau = -2, before the clip: straight lines inside it
        out.weight.normal_(0, 0.3)
    assert float(basis_jerk(field, px, 0.5)) == pytest.approx(0, abs=1e-6)

    with torch.no_grad():
        out.weight.zero_()
        lin.bias[0] = -float(field.times(torch.tensor([4]))[0]) - 1.0 / T  # unit 0 bends at frame 4.5
        out.weight[3, 0] = 1.0  # basis 0's x translation: slope change 1 per unit of tau
    step = 2.0 / T  # tau per frame
    # the kink between frames 4 and 5 enters the second differences centred at 4 and 5, half a step each
    expected = 2 * (0.5 * step * 40.0) ** 2 / ((T - 2) * 2)
    assert float(basis_jerk(field, px, 0.5)) == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[0, 0] = 1.0  # the same kink as basis 0's rotation about x: times the radius
    assert float(basis_jerk(field, px, 0.5)) == pytest.approx(expected * 0.25, rel=1e-4)


def test_field_jerk_centres_reach_withheld_frames_and_measure_pixels():
    """``jerk_centres``: each batch frame and the next, within [1, T−2], so a frame withheld after a trained
    one is a centre; ``field_jerk`` is zero while the field is the identity and counts an offset of one
    Gaussian at one frame in pixels."""
    from backend.optim.stage2 import field_jerk, jerk_centres
    assert jerk_centres(torch.tensor([0, 4, 5, 9]), 10).tolist() == [1, 4, 5, 6, 8]
    assert jerk_centres(torch.tensor([0, 1]), 2).numel() == 0

    cfg = dataclasses.replace(CFG.deformation, motion_bases="translation", num_bases=1, basis_hidden=4)
    field = DeformationField(cfg, 6)
    means = torch.zeros(2, 3)
    px = torch.tensor(50.0)
    assert float(field_jerk(field, means, torch.tensor([1, 2, 3]), px)) == 0  # the identity start
    with torch.no_grad():
        lin, out = field.basis_mlp[0], field.basis_mlp[-1]
        out.weight.zero_()
        out.bias.zero_()
        lin.weight.fill_(1.0)
        lin.bias.fill_(0.0)
        lin.bias[0] = -float(field.times(torch.tensor([2]))[0])  # unit 0 bends at frame 2
        out.weight[0, 0] = 1.0  # the one basis moves along x after it: a kink at frame 2
    step = 2.0 / 6  # tau per frame
    # centre 2: x at frames 1, 2, 3 is 0, 0, step; centre 3: 0, step, 2·step (no second difference)
    got = float(field_jerk(field, means, torch.tensor([2, 3]), px))
    assert got == pytest.approx((step * 50.0) ** 2 / 2, rel=1e-4)


def test_basis_hinges_scale_with_the_clip_when_asked():
    from backend.model.deformation_field import basis_hinges
    d = CFG.deformation
    assert d.basis_hinge_frames == 0 and basis_hinges(d, 24) == d.basis_hidden == basis_hinges(d, 500)
    capped = dataclasses.replace(d, basis_hidden=64, basis_hinge_frames=2.0, min_basis_hinges=8)
    assert [basis_hinges(capped, T) for T in (4, 24, 100, 400)] == [8, 12, 50, 64]
    assert DeformationField(capped, 24).basis_mlp[0].out_features == 12


def test_placement_jerk_is_zero_for_smooth_motion_and_counts_wobble_in_pixels():
    """``placement_jerk``: an object gliding at constant image velocity costs nothing whatever its depth; one frame
    a pixel off its neighbours' midpoint costs 6/(T−2) px²; withheld frames read interpolated values and cost
    nothing themselves; a depth factor that wobbles (invisible in the image) costs like a size wobble."""
    from backend.model.dynamic import ScenePlacement
    from backend.optim.stage2 import placement_jerk

    def jerk(p):
        return float(placement_jerk(p, K, 0.5).detach())

    T, f = 10, 200.0
    K = torch.tensor([[f, 0, 64], [0, f, 64], [0, 0, 1]]).expand(T, 3, 3)
    t = torch.arange(T, dtype=torch.float32)
    trans = torch.stack([0.02 * t, -0.01 * t, torch.full((T,), 2.0)], 1)
    glide = ScenePlacement(torch.full((T,), 0.5), trans, torch.full((T,), 1.5))
    assert jerk(glide) == pytest.approx(0, abs=1e-6)

    off = trans.clone()
    off[4, 0] += 1.0 / f * 2.0  # one pixel to the right at frame 4
    wobble = ScenePlacement(torch.full((T,), 0.5), off, torch.full((T,), 1.5))
    assert jerk(wobble) == pytest.approx(6 / (T - 2), rel=1e-4)

    trained = np.ones(T, bool)
    trained[4] = False  # the displaced frame withheld: it reads its neighbours' midpoint
    held = ScenePlacement(torch.full((T,), 0.5), off, torch.full((T,), 1.5), trained)
    assert jerk(held) == pytest.approx(0, abs=1e-6)

    radius_px = f * 0.5 / 2.0 * 0.5  # f · s / T_z · radius
    depth = torch.full((T,), 1.5)
    depth[4] *= math.exp(0.01)
    deep = ScenePlacement(torch.full((T,), 0.5), trans, depth)
    assert jerk(deep) == pytest.approx(6 * (radius_px * 0.01) ** 2 / (T - 2), rel=1e-3)
    deep.depth.requires_grad_(True)
    placement_jerk(deep, K, 0.5).backward()
    assert float(deep.depth.grad[4]) > 0 and float(deep.depth.grad[0]) == 0  # pulls the wobbling frame back
