"""The run's work plan: expected seconds per stage, sent once the clip is known so that Blender's
progress bar moves at the pace of the run and its ETA covers every stage.

Sent as the ``work`` field of the ``stage`` event that ends ``validate`` (``docs/progress-protocol.md``;
read by ``genmojo_blender/core/run_progress.py``). The figures come from the iteration counts, the
working resolution and the number of objects, times the per-unit costs of ``config.WORK_PLAN_COSTS``;
they are a model, not a promise, and the reader calibrates them by the pace it measures.
"""

from __future__ import annotations

from .config import WORK_PLAN_COSTS, Config, WorkPlanCosts


def work_plan(cfg: Config, *, num_frames: int, num_objects: int, work_size: tuple[int, int], train_frames: int,
              stage2_iterations: int, guidance: bool, costs: WorkPlanCosts = WORK_PLAN_COSTS) -> dict[str, float]:
    """Expected seconds of each stage (``pipeline.STAGES``) of a run with these counts."""
    w, h = work_size
    px = float(w * h)
    g = costs.guidance_step_factor if guidance else 1.0
    if cfg.method == "skeleton":
        objects = 0.0  # lifting the masks: no optimisation
        per_step = costs.stage2_step_per_px * px * cfg.fit.frames_per_step
    else:
        objects = num_objects * cfg.stage1.iterations * costs.stage1_step_per_px * cfg.stage1.crop_size ** 2 * g
        per_step = costs.stage2_step_per_px * px * cfg.stage2.frames_per_batch * cfg.stage2.accumulation * g
    plan = {
        "validate": costs.validate_per_px * px * num_frames,
        "init": costs.flow_per_px * px * max(train_frames - 1, 0),
        "objects": objects,
        "fit": stage2_iterations * per_step,
        "bake": costs.bake_per_px * px * num_frames * max(num_objects, 1),
        "write": costs.write_per_object_frame * num_frames * max(num_objects, 1),
    }
    return {k: round(v, 3) for k, v in plan.items()}
