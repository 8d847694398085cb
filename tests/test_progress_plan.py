"""The backend's work plan: expected seconds per stage, on the validate stage's end event."""

from __future__ import annotations

import io
import json

import pytest

from backend.config import WORK_PLAN_COSTS, get_preset
from backend.pipeline import STAGES
from backend.progress import Reporter
from backend.progress_plan import work_plan
from genmojo_blender.core.protocol import decode_event
from genmojo_blender.core.run_progress import RunProgress

# the measured cpu-tiny run the costs come from (backend/config.py WorkPlanCosts)
MEASURED = {"objects": 149.8, "fit": 666.7, "bake": 33.8}


def _sample_plan(cfg, guidance=False):
    return work_plan(cfg, num_frames=8, num_objects=3, work_size=(64, 64), train_frames=8,
                     stage2_iterations=cfg.stage2.iterations(8), guidance=guidance)


def test_the_plan_reproduces_the_measured_run_it_was_calibrated_on():
    plan = _sample_plan(get_preset("cpu-tiny"))
    assert list(plan) == STAGES
    for stage, seconds in MEASURED.items():
        assert plan[stage] == pytest.approx(seconds, rel=0.02), stage
    lite = _sample_plan(get_preset("lite"))
    assert lite["fit"] / lite["objects"] != pytest.approx(plan["fit"] / plan["objects"])  # counts matter
    guided = _sample_plan(get_preset("cpu-tiny"), guidance=True)
    assert guided["fit"] == pytest.approx(plan["fit"] * WORK_PLAN_COSTS.guidance_step_factor, rel=1e-3)


def test_the_plan_travels_on_the_validate_end_event_and_weights_the_bar():
    out = io.StringIO()
    rep = Reporter(list(STAGES), out=out, log=io.StringIO())
    plan = _sample_plan(get_preset("cpu-tiny"))
    rep.start(run_id="r", save_name="s")
    rep.begin("validate")
    rep.end("validate", work=plan)
    events = [decode_event(line) for line in out.getvalue().splitlines()]
    assert json.loads(out.getvalue().splitlines()[-1])["work"] == plan
    progress = RunProgress()
    for e in events:
        progress.apply(e)
    assert progress.planned and progress.fraction == pytest.approx(plan["validate"] / sum(plan.values()))
