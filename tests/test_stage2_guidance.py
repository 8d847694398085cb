"""Stage 2's novel-view guidance: object-centric renders of the deformed objects, per-frame
conditioning (never from withheld frames), gradients into the fields only, the pipeline wiring and
its checkpoint (CPU, the tiny random Zero123 of test_zero123)."""

import io
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend import pipeline
from backend.config import get_preset, with_overrides
from backend.errors import Cancelled
from backend.model.deformation_field import DeformationField
from backend.model.dynamic import DynamicObject, ScenePlacement
from backend.model.gaussians import CanonicalGaussians
from backend.model.camera import static_cameras
from backend.model.crops import CropBox
from backend.model.object_camera import reference_camera
from backend.optim.knn import knn_table
from backend.optim.stage1 import _render_offsets
from backend.optim.stage2 import MethodScene, guidance_losses, guidance_render_size, render_object_views
from backend.priors import zero123 as Z
from backend.progress import Reporter
from genmojo_blender.core.bundle import open_bundle
from genmojo_blender.core.protocol import decode_event
from test_zero123 import TINY_SIZE, model, model_dir, one_thread  # noqa: F401 (fixtures)

BASE = get_preset("cpu-tiny")
T = 4


def _canonical(n=60, seed=0) -> CanonicalGaussians:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 0.8
    return CanonicalGaussians(means=means, log_scales=torch.full((n, 3), np.log(0.06)),
                              colors=torch.rand(n, 3, generator=g) * 0.8 + 0.1,
                              opacities=torch.full((n,), 0.8), quats=torch.randn(n, 4, generator=g))


def _scene(k=2) -> MethodScene:
    objs = []
    for i in range(k):
        c = _canonical(seed=i)
        pl = ScenePlacement(torch.ones(T), torch.tensor([[0.0, 0.0, 2.0]]).repeat(T, 1), torch.ones(T))
        objs.append(DynamicObject(c, DeformationField(BASE.deformation, T), pl))
    tables = [knn_table(o.means, 4, BASE.stage2.knn_weight_scale) for o in objs]
    refs = [_reference() for _ in objs]
    return MethodScene([f"00{i + 1}" for i in range(k)], objs, torch.eye(4)[None].repeat(T, 1, 1), tables, refs)


def _reference(S=24):
    """The reference camera of an object low on the left of a 64² frame (its orbit is turned)."""
    K = static_cameras(1, 64, 64, 49.1, 0.01, 100.0).K[0]
    return reference_camera("scene", CropBox(cx=14.0, cy=44.0, side=30.0), K, S, 49.1, BASE.stage1.camera_radius)


def _params(c: CanonicalGaussians) -> dict:
    """Stage 1's parameter dict (raw values) for the same canonical Gaussians."""
    return {"means": c.means, "quats": c.quats, "scales": c.log_scales, "opacities": c.opacity_logits,
            "colors": c.color_logits}


def test_render_size_follows_the_step_ratio():
    c = get_preset("lite").sds
    assert [guidance_render_size(c, r) for r in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [128, 128, 256, 256, 512, 512]


def test_identity_object_view_is_stage_one_reference_render():
    """At the identity deformation, the object-centric views of every frame are stage 1's orbit renders
    of the canonical Gaussians from the same offsets about the same reference camera (frame-major, views
    in order)."""
    c = _canonical()
    obj = DynamicObject(c, DeformationField(BASE.deformation, T),
                        ScenePlacement(torch.full((T,), 0.3), torch.randn(T, 3), torch.full((T,), 2.0)))
    S = 24
    ref = _reference(S)
    assert ref.azimuth_deg > 5 and ref.elevation_deg > 5  # the orbit starts off the object's axis
    frames = torch.tensor([3, 0, 2])
    with torch.no_grad():
        front = _render_offsets(_params(c), torch.zeros(1, 3), ref)[0]
        zero = render_object_views(obj.object_space(frames), torch.zeros(3, 1, 3), ref, S)
        offsets = torch.tensor([[[10.0, -40.0, 0.0], [-20.0, 170.0, 0.3]]]).repeat(3, 1, 1)
        views = render_object_views(obj.object_space(frames), offsets, ref, S)
        expect = _render_offsets(_params(c), offsets[0], ref)
    assert zero.shape == (3, S, S, 3) and (front < 0.95).any()  # the object is in view
    for b in range(3):
        torch.testing.assert_close(zero[b], front, atol=1e-5, rtol=0)
        torch.testing.assert_close(views[2 * b:2 * b + 2], expect, atol=1e-5, rtol=0)
    assert not torch.allclose(expect[0], expect[1], atol=1e-3)  # the two views differ, so the order is tested


def test_stage_two_guidance_reaches_the_fields_and_never_the_model(model):
    cfg = replace(BASE, sds=replace(BASE.sds, image_size=TINY_SIZE, stage2_views=2, stage2_render_sizes=(16, 16, 16)))
    g = Z.Zero123Guidance(model, cfg.sds, seed=0)
    scene = _scene(2)
    conds = [g.condition(np.random.default_rng(k).random((T, 20, 20, 3)).astype(np.float32)) for k in range(2)]
    frames = torch.tensor([1, 3])
    total = guidance_losses(scene, g, conds, frames, cfg, step_ratio=0.7, scale=0.5)
    assert total.ndim == 0 and torch.isfinite(total) and float(total) != 0.0
    assert g.last.timestep == 300  # stage 2's τ for step_ratio 0.7
    for o in scene.objects:
        field_grads = [p.grad for p in o.field.parameters() if p.grad is not None]
        assert field_grads and any(bool(gr.abs().sum() > 0) for gr in field_grads)
        assert o.color_logits.grad is not None and bool(o.color_logits.grad.abs().sum() > 0)
        # object-centric views do not see the scene placement
        assert o.placement.translation.grad is None and o.placement.depth.grad is None
    for m in model.modules():
        assert all(p.grad is None and not p.requires_grad for p in m.parameters())


def test_withheld_frames_never_condition_stage_two(sample_clip_master, tmp_path):
    cfg = with_overrides(BASE, sds={"image_size": TINY_SIZE})
    req = pipeline.RunRequest(data_dir=sample_clip_master / "JPEGImages",
                              mask_dir=sample_clip_master / "Annotations", out_dir=tmp_path, save_name="h",
                              holdout=2, device="cpu")
    prep = pipeline.prepare(req, cfg)
    held, train = prep.held, prep.train
    assert held
    seen = []

    class Spy:
        def condition(self, crops):
            seen.append(np.array(crops))
            n = len(crops)
            return Z.Conditioning(clip=torch.zeros(n, 2), latents=torch.zeros(n, 4, 2, 2))

    sides = [40.0] * prep.clip.num_objects
    conds = pipeline.stage2_conditioning(Spy(), prep, cfg, sides, chunk=3)
    assert [len(c) for c in conds] == [prep.clip.num_frames] * len(sides)
    first = np.concatenate(seen)
    # the withheld frames' pixels (and masks) play no part: scrambling them changes no crop
    prep.clip.frames[held] = np.random.default_rng(0).integers(0, 256, prep.clip.frames[held].shape, np.uint8)
    prep.clip.masks[:, held] = True
    seen.clear()
    pipeline.stage2_conditioning(Spy(), prep, cfg, sides, chunk=3)
    np.testing.assert_array_equal(np.concatenate(seen), first)
    for k in range(len(sides)):
        crops = pipeline.stage2_crops(prep, cfg, k, sides[k])
        for t in held:  # a withheld frame borrows a training frame's crop
            assert any(np.array_equal(crops[t], crops[u]) for u in train)


STAGE1_ITERS, ITERS, EVERY, RENDER = 2, 4, 2, 16


def _config(model_dir):
    """cpu-tiny with the tiny guidance model: what the CLI flags of the straight run below resolve to."""
    return replace(with_overrides(BASE, stage1={"iterations": STAGE1_ITERS}, fit={"checkpoint_every": EVERY},
                                  sds={"model": str(model_dir), "image_size": TINY_SIZE,
                                       "stage2_render_sizes": (RENDER,) * 3}), guidance=True)


def test_a_run_distils_in_stage_two_and_resumes_exactly(sample_clip_master, model_dir, tmp_path, monkeypatch):
    from test_pipeline import backend, clip_args

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as this process (one_thread): same float sums, same result
    code, events, err = backend(*clip_args(sample_clip_master, tmp_path, "straight"), "--preset", "cpu-tiny",
                                "--device", "cpu", "--iters", ITERS, "--checkpoint_every", EVERY,
                                "--progress_every_s", 0, "--guidance_model", model_dir, "--set", f"sds.image_size={TINY_SIZE}",
                                "--set", f"sds.stage2_render_sizes=[{RENDER},{RENDER},{RENDER}]",
                                "--set", f"stage1.iterations={STAGE1_ITERS}")
    assert code == 0, err
    assert "stage-2 conditioning" in err
    bundle = open_bundle(tmp_path / "straight")
    run = bundle.manifest.run
    assert "stage 2" in run.guidance and "stage 1" in run.guidance and str(model_dir) in run.guidance
    assert run.final_losses["guidance"] > 0
    fit = [e for e in events if e.type == "progress" and e.get("stage") == "fit"]
    assert len(fit) == ITERS and all(e.get("losses")["guidance"] > 0 for e in fit)

    # the same run stopped after step 2 (checkpointed there), then resumed: the straight run's result
    cfg = _config(model_dir)
    req = pipeline.RunRequest(data_dir=sample_clip_master / "JPEGImages", mask_dir=sample_clip_master / "Annotations",
                              out_dir=tmp_path, save_name="resumed", iterations=ITERS, device="cpu")
    out = io.StringIO()

    def stop():
        return any(e.type == "progress" and e.get("stage") == "fit" and e.get("step") >= EVERY
                   for e in map(decode_event, out.getvalue().splitlines()))

    with pytest.raises(Cancelled):
        pipeline.run(req, cfg, Reporter(pipeline.STAGES, out=out, log=io.StringIO(), every_s=0), stop)
    ckpt = torch.load(tmp_path / ".resumed.checkpoint" / "state.pt", weights_only=True)
    assert {"guidance_generator1", "guidance_generator2"} <= set(ckpt) and ckpt["fit"]["step"] == EVERY
    path = pipeline.run(replace(req, resume=True), cfg, Reporter(pipeline.STAGES, out=io.StringIO(), log=io.StringIO()))
    b = open_bundle(path)
    for oa, ob in zip(bundle.manifest.objects, b.manifest.objects):
        np.testing.assert_allclose(b.load_frames(ob).means, bundle.load_frames(oa).means, atol=1e-5)
    assert b.manifest.run.final_losses["guidance"] == pytest.approx(run.final_losses["guidance"], rel=1e-4)
