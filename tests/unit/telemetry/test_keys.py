"""The key registry: its table is consistent, every seed key is in it, lookups and parity behave."""

from __future__ import annotations

import pytest

from coordexp.errors import TelemetryError
from coordexp.telemetry.keymodel import Agg, Emitter, Mode, build_registry, key, ratio, template
from coordexp.telemetry.keys import AB, REGISTRY, RETIRED, RM, check_parity

# Every metric key the runbooks (seeds 000-003) tell users to watch, as the seeds spell them.
SEED_KEYS = (
    "rollout/gen_new_tokens_mean", "rollout/gen_new_tokens_p90", "rollout/gen_new_tokens_p99",
    "rollout/gen_tokens_per_s", "rollout/parse_truncated_rate", "rollout/parse_truncated",
    "rollout/repeat_terminate_triggered_sequences", "rollout/parse_dropped_invalid",
    "rollout/parse_dropped_ambiguous", "rollout/parse_obj_valid_frac", "rollout/valid_pred_objects",
    "rollout/matched_for_supervision", "rollout/excluded_from_supervision", "rollout/fn_appended",
    "rollout/gating_rejections", "rollout/gating_rejection_rate", "rollout/precision", "rollout/recall",
    "rollout/match_rate", "rollout/f1", "rollout/matched_maskiou_mean", "rollout/sample_valid_pred_rate",
    "rollout/buffer_reuse", "rollout/buffer_window_step0", "rollout/buffer_completed_steps", "rollout/buffer_micro_idx",
    "time/rollout_generate_s", "time/forward_s", "loss/ce", "loss/coord",
    "loss/coord_prefix", "loss/coord_tail", "stage2/channel_a", "stage2/channel_b", "stage2/raw_rollouts",
    "stage2/invalid_rollout", "stage2_ab/channel_b/strict_drop/N_drop_invalid",
    "eval_rollout_precision", "eval_rollout_recall", "eval_rollout_f1", "eval_rollout_pred_objects",
    "eval_rollout_gt_objects", "eval_rollout_matched", "eval_rollout_fp", "eval_rollout_fn",
    "eval_rollout_parse_truncated_rate", "eval_rollout_parse_dropped_invalid",
    "eval_rollout_parse_dropped_ambiguous", "eval_rollout_sample_valid_pred_rate",
    "eval_rollout_sample_any_match_rate", "eval_rollout_matched_maskiou_mean", "eval_rollout_desc_pairs_total",
    "eval_rollout_desc_exact_acc_on_matched", "eval_rollout_desc_sem_enabled", "eval_rollout_desc_sem_acc_on_matched",
    "eval_rollout_desc_sem_sim_mean",
)


@pytest.mark.parametrize("name", SEED_KEYS)
def test_every_seed_key_is_registered_or_retired_with_a_reason(name):
    # the seeds write eval keys HF-style (eval_rollout_f1); coordexp logs eval_ + the rollout key name
    if name.startswith("eval_rollout_"):
        name = "eval_rollout/" + name.removeprefix("eval_rollout_")
    if name in RETIRED:
        assert len(RETIRED[name]) > 20
    else:
        assert not REGISTRY.get(name).internal


def test_every_key_documents_itself():
    for k in REGISTRY.keys.values():
        assert k.doc.endswith(".") and len(k.doc) > 10, k.name
        assert (k.mode is Mode.EVAL) == k.name.startswith("eval_"), k.name
        if k.derived:
            assert k.emitter is Emitter.DERIVED and k.num, k.name
        else:
            assert k.across is not None, k.name


def test_ratios_read_registered_base_keys_of_their_variants():
    for k in REGISTRY.keys.values():
        for name in k.inputs():
            src = REGISTRY.keys[name]
            assert not src.derived and src.mode is k.mode and k.variants <= src.variants, (k.name, name)


def test_templates_expand_over_closed_suffix_sets():
    stop = sorted(n for n, k in REGISTRY.keys.items() if k.family == "rollout/stop_rule/{}")
    assert stop == sorted(f"rollout/stop_rule/{r}" for r in
                          ("consecutive_repeat", "ngram_repeat", "max_object_keys", "duplicate_object"))
    reasons = [n for n, k in REGISTRY.keys.items() if k.family == "stage2_ab/channel_b/strict_drop/reason/{}"]
    assert "stage2_ab/channel_b/strict_drop/reason/poly_unsupported" in reasons and len(reasons) == 8
    assert REGISTRY.get("stage2_ab/channel_b/strict_drop/reason/wrong_arity").num == (
        (1.0, "rollout/parse_dropped/wrong_arity"),)


def test_lookup_errors_name_the_key_and_help():
    with pytest.raises(TelemetryError, match=r"'rollout/precison' is not registered; did you mean rollout/precision"):
        REGISTRY.get("rollout/precison")
    with pytest.raises(TelemetryError, match="retired: the canonical name is rollout/decode_non_beam_count"):
        REGISTRY.get("rollout/decode_greedy")


@pytest.mark.parametrize(("keys", "problem"), [
    ((key("a/x", Agg.SUM, "", "A.", Emitter.EXECUTOR), key("a/x", Agg.SUM, "", "A.", Emitter.EXECUTOR)),
     "registered twice"),
    ((ratio("a/r", ["a/missing"], [], "", "R."),), "must be a registered base key"),
    ((key("a/x", Agg.SUM, "", "A.", Emitter.EXECUTOR, mode=Mode.EVAL),), "start with 'eval_'"),
    ((key("A/Bad Name", Agg.SUM, "", "A.", Emitter.EXECUTOR),), "not a lower-case"),
    ((key("a/x", Agg.MEAN, "", "A.", Emitter.EXECUTOR, across="max"),), "across rule allowed"),
    ((key("a/x", Agg.SUM, "", "A.", Emitter.EXECUTOR, variants=[AB]),
      ratio("a/r", ["a/x"], [], "", "R.")), "not logged in every mode/variant"),
])
def test_inconsistent_tables_are_refused(keys, problem):
    with pytest.raises(TelemetryError, match=problem):
        build_registry(keys, {})


def test_template_fills_doc_and_inputs():
    made = template("x/{}", ("a", "b"), Agg.RATIO, "", "Share of `{}`.", Emitter.DERIVED, num=["y/{}"])
    assert [(k.name, k.doc, k.num, k.optional) for k in made] == [
        ("x/a", "Share of `a`.", ((1.0, "y/a"),), True), ("x/b", "Share of `b`.", ((1.0, "y/b"),), True)]


def _expected(mode, variant, features):
    return {k.name for k in REGISTRY.for_mode(mode) if variant in k.variants and not k.internal
            and not k.optional and k.requires <= set(features)}


def test_parity_of_a_complete_run_is_ok_and_features_make_keys_expected():
    logged = _expected(Mode.TRAIN, RM, {"rollouts"})
    assert check_parity(logged, registry=REGISTRY, mode=Mode.TRAIN, variant=RM, features={"rollouts"}).ok
    with_packing = check_parity(logged, registry=REGISTRY, mode=Mode.TRAIN, variant=RM,
                                features={"rollouts", "packing"})
    assert "packing/post_rollout_fill" in with_packing.missing and not with_packing.unregistered
    # an AB run also owes the schedule keys and may log the AB aliases; an RM run may not
    ab = check_parity(logged, registry=REGISTRY, mode=Mode.TRAIN, variant=AB, features={"rollouts"})
    assert {"stage2/channel_a", "stage2/channel_b", "stage2/raw_rollouts"} <= set(ab.missing)
    rm = check_parity(logged | {"stage2/raw_rollouts"}, registry=REGISTRY, mode=Mode.TRAIN, variant=RM,
                      features={"rollouts"})
    assert rm.wrong_variant == ("stage2/raw_rollouts",)


def test_parity_flags_internal_and_unknown_keys_as_unregistered():
    logged = _expected(Mode.EVAL, RM, ()) | {"eval_rollout/matched_iou_sum", "eval_rollout/lvis/f1"}
    report = check_parity(logged, registry=REGISTRY, mode=Mode.EVAL, variant=RM)
    assert report.unregistered == ("eval_rollout/lvis/f1", "eval_rollout/matched_iou_sum")
    assert "unregistered: eval_rollout/lvis/f1" in report.describe()
