"""MetricWindow: every step of a window counts once, by the key's rule; ranks reduce in one fixed layout."""

from __future__ import annotations

import math

import pytest

from coordexp.errors import TelemetryError
from coordexp.telemetry.keys import AB, RM
from coordexp.telemetry.window import (
    MetricWindow,
    finalize,
    merge_metrics,
    reduce_across_ranks,
    reduce_states,
)


def _window(steps, variant=RM, mode="train"):
    w = MetricWindow(variant=variant, mode=mode)
    for i, metrics in enumerate(steps):
        w.add(metrics, i)
    return w


def test_each_rule_over_three_steps():
    rec = _window([
        {"rollout/samples": 2, "learning_rate": 0.3, "rollout/gen_new_tokens_p90": 10, "loss": 1.0},
        {"rollout/samples": 3, "learning_rate": 0.2, "rollout/gen_new_tokens_p90": 30},
        {"rollout/samples": 5, "learning_rate": 0.1, "rollout/gen_new_tokens_p90": 20, "loss": 3.0},
    ]).reduce()
    assert rec == {"loss": 2.0, "learning_rate": 0.1, "rollout/samples": 10.0, "rollout/gen_new_tokens_p90": 30.0}


def test_ratios_are_ratios_of_window_sums():
    # step 0: 1 of 1 prediction supervised, step 1: 0 of 9 -> 1/10, not the mean of 1.0 and 0.0
    rec = _window([
        {"rollout/matched_for_supervision": 1, "rollout/valid_pred_objects": 1, "rollout/gt_objects": 1},
        {"rollout/matched_for_supervision": 0, "rollout/valid_pred_objects": 9, "rollout/gt_objects": 1},
    ]).reduce()
    assert rec["rollout/precision"] == pytest.approx(0.1)
    assert rec["rollout/recall"] == pytest.approx(0.5)
    assert rec["rollout/f1"] == pytest.approx(2 * 1 / (10 + 2))


def test_a_ratio_needs_its_counts_and_helpers_are_not_logged():
    rec = _window([{"rollout/matched_for_supervision": 2, "rollout/matched_iou_sum": 1.5,
                    "rollout/matched_maskiou_count": 2}]).reduce()
    assert "rollout/precision" not in rec  # valid_pred_objects was never reported
    assert rec["rollout/matched_maskiou_mean"] == pytest.approx(0.75)
    assert "rollout/matched_iou_sum" not in rec
    empty = _window([{"rollout/generated_sequences": 0, "rollout/gen_new_tokens_total": 0}]).reduce()
    assert "rollout/gen_new_tokens_mean" not in empty  # den 0 and if_zero None: absent, not 0


def test_window_is_empty_after_a_log():
    w = _window([{"rollout/samples": 1}, {"rollout/samples": 2}])
    assert w.pending_steps == 2
    assert w.reduce() == {"rollout/samples": 3.0}
    assert w.pending_steps == 0 and w.reduce() == {}
    w.add({"rollout/samples": 4}, 7)  # steps continue after a log
    assert w.reduce() == {"rollout/samples": 4.0}


@pytest.mark.parametrize(("metrics", "match"), [
    ({"rollout/nope": 1}, "'rollout/nope' is not registered"),
    ({"rollout/precision": 0.5}, "is derived"),
    ({"eval_rollout/fp": 1}, "belongs to mode eval"),
    ({"stage2/channel_a": 1}, r"variants \['stage2_ab_training'\]"),
    ({"rollout/samples": True}, "must be a number"),
    ({"rollout/samples": "3"}, "must be a number"),
])
def test_add_refuses_what_the_registry_does_not_allow(metrics, match):
    w = MetricWindow(variant=RM)
    with pytest.raises(TelemetryError, match=match):
        w.add(metrics, 0)
    assert w.pending_steps == 0  # nothing half-added


def test_a_step_is_added_once():
    w = _window([{"rollout/samples": 1}])
    with pytest.raises(TelemetryError, match="step 0 after step 0"):
        w.add({"rollout/samples": 1}, 0)


def test_dense_mean_must_cover_the_window_and_sparse_need_not():
    w = _window([{"stage2/channel_b": 1, "stage2/channel_a": 0, "loss/bbox_ciou": 2.0},
                 {"stage2/channel_b": 0, "stage2/channel_a": 1}], variant=AB)
    assert w.reduce() == {"loss/bbox_ciou": 2.0, "stage2/channel_a": 0.5, "stage2/channel_b": 0.5}
    w = _window([{"stage2/channel_b": 1}, {"stage2/channel_a": 1}], variant=AB)
    with pytest.raises(TelemetryError, match="'stage2/channel_b' is a per-step mean"):
        w.drain()


def test_nan_propagates_to_the_record():
    rec = _window([{"loss": 1.0}, {"loss": math.nan}]).reduce()
    assert math.isnan(rec["loss"])


def test_merge_keeps_every_key_and_later_parts_win():
    assert merge_metrics({"rollout/max_new_tokens": 64, "rollout/samples": 2},
                         {"rollout/max_new_tokens": 128}) == {"rollout/max_new_tokens": 128, "rollout/samples": 2}
    with pytest.raises(TelemetryError, match="derived"):
        merge_metrics({"rollout/f1": 1.0})
    with pytest.raises(TelemetryError, match="not registered"):
        merge_metrics({"rollout/f2": 1.0})


def test_rank_rules():
    rank0 = _window([{"time/forward_s": 2.0, "learning_rate": 0.1, "rollout/samples": 4, "loss": 1.0},
                     {"time/forward_s": 1.0, "loss": 3.0}])
    rank1 = _window([{"time/forward_s": 5.0, "learning_rate": 0.3, "rollout/samples": 6, "loss": 5.0}])
    state = reduce_states([rank0.drain(), rank1.drain()])
    assert state.n_steps == 3 and (state.first_step, state.last_step) == (0, 1)
    rec = finalize(state)
    assert rec["time/forward_s"] == 5.0  # summed over a rank's steps (3.0), slowest rank (5.0)
    assert rec["learning_rate"] == pytest.approx(0.2)  # last value, mean over ranks
    assert rec["rollout/samples"] == 10.0
    assert rec["loss"] == pytest.approx(3.0)  # (1 + 3 + 5) / 3 reporting steps


def test_desc_encoder_flag_is_one_only_if_every_rank_had_it():
    on = _window([{"rollout/desc_sem_enabled": 1}])
    off = _window([{"rollout/desc_sem_enabled": 0}])
    assert finalize(reduce_states([on.drain(), off.drain()]))["rollout/desc_sem_enabled"] == 0.0


def test_a_key_seen_by_one_rank_only_is_reduced_too():
    a, b = _window([{"rollout/samples": 3}]), _window([{"rollout/samples": 1, "rollout/gen_new_tokens_max": 9}])
    rec = finalize(reduce_states([a.drain(), b.drain()]))
    assert rec["rollout/samples"] == 4.0 and rec["rollout/gen_new_tokens_max"] == 9.0


def test_without_a_process_group_reduce_is_the_identity():
    state = _window([{"rollout/samples": 3}]).drain()
    assert reduce_across_ranks(state) is state


def test_states_of_different_variants_do_not_mix():
    with pytest.raises(TelemetryError, match="one mode and variant"):
        reduce_states([_window([]).drain(), _window([], variant=AB).drain()])
