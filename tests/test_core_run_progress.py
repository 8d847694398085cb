"""The run's overall progress and time left, weighted by the backend's work plan."""

from __future__ import annotations

import pytest

from genmojo_blender.core.protocol import Event
from genmojo_blender.core.run_progress import RunProgress

STAGES = ["validate", "init", "objects", "fit", "bake", "write"]
PLAN = {"validate": 1.0, "init": 4.0, "objects": 20.0, "fit": 70.0, "bake": 4.0, "write": 1.0}


def ev(type_, t, **data):
    return Event(type_, dict(data, type=type_, time=t))


def stage(name, status, t, **extra):
    return ev("stage", t, stage=name, index=STAGES.index(name), total_stages=len(STAGES), status=status, **extra)


def fold(events):
    p = RunProgress()
    for e in events:
        p.apply(e)
    return p


def through_objects(plan=PLAN):
    """A run at the pace of 2 s per planned second, to the end of stage 1."""
    return [ev("start", 100.0, stages=STAGES, run_id="r", save_name="s"),
            stage("validate", "begin", 100.0), stage("validate", "end", 102.0, **({"work": plan} if plan else {})),
            stage("init", "begin", 102.0), stage("init", "end", 110.0),
            stage("objects", "begin", 110.0),
            ev("progress", 130.0, stage="objects", step=10, total=20, losses={}, eta_s=20.0),
            ev("progress", 150.0, stage="objects", step=20, total=20, losses={}, eta_s=0.0),
            stage("objects", "end", 150.0)]


def test_fraction_follows_the_planned_work_not_the_stage_count():
    p = fold(through_objects()[:7])  # half-way through stage 1
    assert p.fraction == pytest.approx((1 + 4 + 10) / 100)
    p = fold(through_objects() + [stage("fit", "begin", 150.0),
                                  ev("progress", 220.0, stage="fit", step=50, total=100, losses={}, eta_s=70.0)])
    assert p.fraction == pytest.approx((25 + 35) / 100)  # an equal share per stage would say 58 %


def test_every_stage_has_a_real_eta_and_none_is_zero_before_the_end():
    events = through_objects() + [stage("fit", "begin", 150.0),
                                  ev("progress", 290.0, stage="fit", step=100, total=100, losses={}, eta_s=0.0),
                                  stage("fit", "end", 290.0), stage("bake", "begin", 290.0)]
    p = fold(events)
    # 95 planned seconds took 190 s: 2 s each; bake (4) and write (1) are left
    assert p.eta_s == pytest.approx(2 * 5)
    p.apply(stage("bake", "end", 298.0))
    p.apply(stage("write", "begin", 298.0))
    assert p.eta_s == pytest.approx((298 - 100) / 99 * 1)
    p.apply(ev("done", 300.0, bundle="/x"))
    assert (p.fraction, p.eta_s) == (1.0, 0.0)


def test_within_a_stepped_stage_the_backends_own_eta_counts_for_that_stage():
    p = fold(through_objects()[:7])  # objects at 10/20 with the backend's eta 20 s
    pace = (130 - 100) / 15
    assert p.eta_s == pytest.approx(20.0 + pace * (70 + 4 + 1))


def test_without_a_plan_stages_weigh_the_same_and_only_the_stage_eta_is_given():
    p = fold(through_objects(plan=None)[:7])
    assert p.fraction == pytest.approx((2 + 0.5) / 6)
    assert p.eta_s == 20.0
    p = fold(through_objects(plan=None) + [stage("bake", "begin", 150.0)])
    assert p.eta_s is None  # unknown, not 0


def test_nothing_done_yet_means_no_eta_and_a_bad_plan_is_ignored():
    p = fold([ev("start", 100.0, stages=STAGES, run_id="r", save_name="s"), stage("validate", "begin", 100.0)])
    assert p.eta_s is None and p.fraction == 0.0
    p.apply(stage("validate", "end", 101.0, work={"init": "lots", "fit": -3, "other": 5}))
    assert not p.planned and p.fraction == pytest.approx(1 / 6)


def test_the_fraction_never_steps_back_when_the_plan_arrives():
    seen = []
    p = RunProgress()
    for e in through_objects():
        p.apply(e)
        seen.append(p.fraction)
    assert seen == sorted(seen) and seen[2] == pytest.approx(0.01)  # validate's planned share
