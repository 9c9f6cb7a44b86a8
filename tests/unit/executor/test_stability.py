"""What an alarm does to a run: warn, stop, or back b_ratio off (persisted and re-applied on resume)."""

from __future__ import annotations

import json

import attrs

from coordexp.config.schema_guard import StabilityGuardConfig
from coordexp.core.schedule import Channel, RatioPiece, RatioSchedule, channel_for_step
from coordexp.stability import StabilityControl
from coordexp.stages import StepState

AB = "stage2_ab_training"
HOT = RatioSchedule((RatioPiece(0, 0.85),))
TRUNCATED = {"rollout/samples": 8.0, "rollout/parse_truncated": 8.0, "rollout/generated_sequences": 8.0}
HEALTHY = {"rollout/samples": 8.0, "rollout/parse_truncated": 0.0, "rollout/generated_sequences": 8.0}


def control(**kw) -> StabilityControl:
    return StabilityControl(StabilityGuardConfig(enabled=True, patience=1, **kw), variant=AB)


def b_step(step: int, **kw) -> StepState:
    return StepState(step=step, channel=Channel.B, **kw)


def test_off_channel_a_reuse_and_eval_steps_are_not_judged():
    c = control()
    assert c.on_step(StepState(step=0, channel=Channel.A), TRUNCATED, HOT) == ({}, HOT)
    assert c.on_step(b_step(1, reuse=True), TRUNCATED, HOT) == ({}, HOT)
    assert c.on_step(b_step(2, is_eval=True), TRUNCATED, HOT) == ({}, HOT)
    off = StabilityControl(StabilityGuardConfig(enabled=False), variant=AB)
    assert off.on_step(b_step(3), TRUNCATED, HOT) == ({}, HOT)


def test_warn_only_reports():
    c = control()
    metrics, schedule = c.on_step(b_step(4), TRUNCATED, HOT)
    assert metrics == {"guard/alarm/truncation": 1.0} and schedule is HOT and c.stopped_by is None
    assert c.active == ("truncation",)
    c.on_step(b_step(5), HEALTHY, HOT)
    assert c.active == ()


def test_stop_names_the_first_alarm_with_the_logged_step():
    c = control(action="stop")
    c.on_step(b_step(9), TRUNCATED, HOT)
    assert c.stopped_by.name == "truncation" and c.stopped_by.step == 10


def test_backoff_lowers_b_ratio_from_the_next_step_then_stops_when_it_cannot_go_lower():
    c = control(action="backoff", backoff_b_ratio=0.05)
    metrics, cooled = c.on_step(b_step(6), TRUNCATED, HOT)
    assert metrics["guard/backoff"] == 1.0
    assert cooled.pieces == (RatioPiece(0, 0.85), RatioPiece(7, 0.05))
    assert [channel_for_step(s, schedule=cooled) for s in range(7)] == [channel_for_step(s, schedule=HOT)
                                                                        for s in range(7)]
    assert c.stopped_by is None
    _, again = c.on_step(b_step(26), TRUNCATED, cooled)
    assert again is cooled and c.stopped_by is not None  # already at 0.05: the second alarm stops the run


def test_backoffs_and_guard_state_survive_trainer_state_json():
    c = control(action="backoff", backoff_b_ratio=0.05, window=2)
    _, cooled = c.on_step(b_step(6), TRUNCATED, HOT)
    saved = json.loads(json.dumps(c.to_json()))
    fresh = control(action="backoff", backoff_b_ratio=0.05, window=2)
    assert fresh.restore(saved, HOT) == cooled
    assert fresh.state == c.state and fresh.backoffs == c.backoffs
    # the next evaluation pools the restored window exactly as the uninterrupted control does
    assert fresh.on_step(b_step(10), HEALTHY, cooled) == c.on_step(b_step(10), HEALTHY, cooled)
    assert attrs.asdict(fresh.backoffs[0]) == {"start_step": 7, "value": 0.05, "alarms": ("truncation",)}


def test_restore_without_saved_state_keeps_the_config_schedule():
    assert control().restore(None, HOT) is HOT
