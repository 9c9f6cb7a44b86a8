"""The stability guard's rules on metric streams: quiet when healthy, named alarms on the seed's collapse."""

from __future__ import annotations

import attrs
import pytest

from coordexp.config.schema_guard import StabilityGuardConfig
from coordexp.telemetry.guard import INPUTS, GuardState, observe, rollout_inputs
from coordexp.telemetry.keys import REGISTRY

AB = "stage2_ab_training"
ON = StabilityGuardConfig(enabled=True, patience=1)


def step(**over: float) -> dict[str, float]:
    """One Channel-B step of 64 rollouts, healthy like the seed's baseline at step 100 unless overridden."""
    healthy = {"rollout/samples": 64, "rollout/parse_truncated": 1, "rollout/gen_new_tokens_p90": 711,
               "rollout/max_new_tokens": 2048, "rollout/valid_pred_objects": 83, "rollout/gt_objects": 64,
               "rollout/parse_dropped_invalid": 0, "rollout/max_desc_duplicates": 4, "rollout/invalid_coord_slots": 0}
    return {**healthy, **over}


def run(stream, cfg=ON):
    state, raised = GuardState(), []
    for i, metrics in enumerate(stream):
        state, alarms = observe(state, i, metrics, cfg, variant=AB)
        raised.append(tuple(a.name for a in alarms))
    return state, raised


def test_inputs_are_registered_base_keys():
    for name in INPUTS:
        assert not REGISTRY.get(name).derived


def test_healthy_stream_raises_nothing():
    _, raised = run([step(**{"rollout/parse_truncated": s % 3}) for s in range(30)])
    assert raised == [()] * 30


def test_truncation_and_length_saturation_at_the_cap():
    # the continue run at step 800: p90 pegged at the budget, ~0.39 truncated
    _, raised = run([step(**{"rollout/parse_truncated": 25, "rollout/gen_new_tokens_p90": 3084,
                             "rollout/max_new_tokens": 3084})])
    assert raised == [("length_saturation", "truncation")]


def test_object_spam_raises_over_generation_and_duplicate_spam():
    spam = step(**{"rollout/valid_pred_objects": 154, "rollout/max_desc_duplicates": 90})
    _, raised = run([step(), spam])
    assert raised == [(), ("over_generation", "duplicate_spam")]


def test_malformed_objects_raise_drops_and_contamination():
    bad = step(**{"rollout/parse_dropped_invalid": 30, "rollout/invalid_coord_slots": 880})
    _, raised = run([bad])
    assert raised == [("invalid_drops", "coord_slot_contamination")]


def test_patience_needs_consecutive_breaches_and_a_healthy_step_resets_it():
    trunc = step(**{"rollout/parse_truncated": 20})
    _, raised = run([trunc, step(), trunc, trunc, trunc], attrs.evolve(ON, patience=2))
    assert raised == [(), (), (), ("truncation",), ("truncation",)]


def test_window_pools_counts_before_judging_a_rate():
    # 4 truncated of 64 is above 0.05 alone; pooled with a clean step it is 4 / 128 = 0.031
    _, raised = run([step(**{"rollout/parse_truncated": 0}), step(**{"rollout/parse_truncated": 4})],
                    attrs.evolve(ON, window=2))
    assert raised == [(), ()]
    _, raised = run([step(**{"rollout/parse_truncated": 4})], attrs.evolve(ON, window=2))
    assert raised == [("truncation",)]


def test_a_null_threshold_turns_its_alarm_off():
    _, raised = run([step(**{"rollout/parse_truncated": 40})], attrs.evolve(ON, max_truncated_rate=None))
    assert raised == [()]


def test_ratios_without_a_denominator_never_breach():
    _, raised = run([step(**{"rollout/gt_objects": 0, "rollout/valid_pred_objects": 9})])
    assert raised == [()]  # pred_gt_ratio has no value without GT (its ratio is 0 by the registry rule)


def test_state_round_trips_through_json_and_resumes_identically():
    stream = [step(**{"rollout/parse_truncated": 9 if i % 3 else 0}) for i in range(9)]
    cfg = attrs.evolve(ON, window=2, patience=2)
    _, straight = run(stream, cfg)
    state, first = run(stream[:5], cfg)
    state = GuardState.from_json(state.to_json())
    rest = []
    for i, metrics in enumerate(stream[5:], start=5):
        state, alarms = observe(state, i, metrics, cfg, variant=AB)
        rest.append(tuple(a.name for a in alarms))
    assert first + rest == straight
    assert any(straight)


@pytest.mark.parametrize("metrics,expected", [
    ({"rollout/generated_sequences": 0.0, "rollout/samples": 4.0}, None),  # buffer reuse: nothing generated
    ({"rollout/generated_sequences": 4.0, "rollout/samples": 4.0, "loss": 1.0}, {"rollout/samples": 4.0}),
])
def test_rollout_inputs_skip_steps_without_generation(metrics, expected):
    assert rollout_inputs(metrics) == expected


def test_alarm_message_names_the_alarm_metric_and_threshold():
    state, _ = GuardState(), None
    _, alarms = observe(state, 7, step(**{"rollout/parse_truncated": 32}), ON, variant=AB)
    text = alarms[0].message()
    assert "`truncation`" in text and "step 7" in text and "rollout/parse_truncated_rate = 0.5 > 0.05" in text
