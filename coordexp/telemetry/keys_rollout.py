"""Registry table: per-step ``rollout/*`` keys (parse, match, target, generation, stop rules, desc monitor).

Definitions follow reference rollout §12.2 and AB §8.3 with the corrections of rollout §15 W4/W14: every
mean and rate is a ratio of window sums, the gating-rejection rate divides by the candidate pairs that
were actually scored, and the semantic-similarity mean has its numerator. Precision/recall count the
pairs that were supervised (``matched_for_supervision``), as the legacy trainers did; evaluation counts
Hungarian pairs (``keys_eval``).
"""

from __future__ import annotations

import attrs

from coordexp.core.parse_records import DropReason, Fallback
from coordexp.core.repeat import StopRule
from coordexp.core.target_records import CutReason
from coordexp.telemetry.keymodel import AB, Agg, Emitter, Key, key, ratio, template

R = Emitter.ROLLOUT
STOP_RULES: tuple[str, ...] = tuple(r.value for r in StopRule)
# Object drop buckets: the parser's reasons plus the Stage-2 AB bbox-only rule.
DROP_BUCKETS: tuple[str, ...] = (*(r.value for r in DropReason), "poly_unsupported")
FALLBACKS: tuple[str, ...] = tuple(f.value for f in Fallback if f is not Fallback.NONE)
PREFIX_CUTS: tuple[str, ...] = tuple(c.value for c in CutReason if c is not CutReason.NONE)

_COUNTS: tuple[Key, ...] = (
    key("rollout/samples", Agg.SUM, "rollouts", "Rollouts parsed this step (the denominator of per-sample rates).", R),
    key("rollout/parse_valid", Agg.SUM, "rollouts", "Rollouts that are one strict JSON object, all objects valid.", R),
    key("rollout/parse_truncated", Agg.SUM, "rollouts",
        "Rollouts cut mid-structure by the token budget. A rollout a stop rule ended is never counted here.", R),
    key("rollout/parse_dropped_invalid", Agg.SUM, "objects",
        "Predicted objects the strict parser dropped (all reasons).", R),
    key("rollout/valid_pred_objects", Agg.SUM, "objects", "Valid predictions given to matching.", R),
    key("rollout/gt_objects", Agg.SUM, "objects", "GT objects of the rolled-out samples.", R),
    key("rollout/matched", Agg.SUM, "pairs", "Hungarian pairs above the gate.", R),
    key("rollout/matched_for_supervision", Agg.SUM, "pairs", "Matched pairs whose coord targets were built.", R),
    key("rollout/excluded_from_supervision", Agg.SUM, "pairs",
        "Matched pairs whose targets could not be built; their GT was appended instead.", R),
    key("rollout/fn_appended", Agg.SUM, "objects", "GT objects serialized into the FN append.", R),
    key("rollout/fp", Agg.SUM, "objects", "Per sample max(0, preds - supervised pairs), summed.", R),
    key("rollout/fn", Agg.SUM, "objects", "Per sample max(0, GT - supervised pairs), summed.", R),
    key("rollout/gating_rejections", Agg.SUM, "pairs", "Candidate pairs whose IoU fell below maskiou_gate.", R),
    key("rollout/candidate_pairs", Agg.SUM, "pairs", "Candidate (pred, GT) pairs whose IoU was computed.", R),
    key("rollout/matched_maskiou_count", Agg.SUM, "pairs", "Matched pairs averaged by matched_maskiou_mean.", R),
    key("rollout/matched_iou_sum", Agg.SUM, "IoU", "Sum of matched-pair IoUs.", R, internal=True),
    key("rollout/samples_with_valid_pred", Agg.SUM, "rollouts", "Rollouts with >= 1 valid prediction.", R,
        internal=True),
    key("rollout/samples_with_match", Agg.SUM, "rollouts", "Rollouts with >= 1 supervised pair.", R, internal=True),
    key("rollout/prefix_coord_targets_total", Agg.SUM, "slots", "Coord slots supervised inside the rollout prefix.", R),
    key("rollout/tail_ignore_tokens", Agg.SUM, "tokens", "Tail tokens without CE (desc values, closure when off).", R,
        internal=True),
    key("rollout/tail_tokens", Agg.SUM, "tokens", "Tail tokens (append + EOS) of the built targets.", R, internal=True),
    key("rollout/targets", Agg.SUM, "samples", "Rollouts that produced a training target.", R),
    key("rollout/invalid_rollouts", Agg.SUM, "rollouts",
        "Rollouts that fell back to the bare opening brace (no root brace, or cut before any object "
        "completed); a complete empty answer `{}` is not invalid.", R),
    key("rollout/invalid_coord_slots", Agg.SUM, "slots",
        "Geometry slots of dropped objects that hold something other than a coord token "
        "(plain digits, words): the seed's coord-slot contamination.", R),
    key("rollout/max_desc_duplicates", Agg.MAX, "objects",
        "Largest count of valid objects sharing one desc within a single rollout (duplicate spam).", R),
    key("rollout/decode_non_beam_count", Agg.SUM, "rollouts", "Rollouts decoded greedily or by sampling.", R),
    key("rollout/decode_beam_count", Agg.SUM, "rollouts", "Rollouts decoded by beam search.", R),
    key("rollout/budget_exhausted", Agg.SUM, "rollouts", "Rollouts that used the whole max_new_tokens budget.", R),
    key("rollout/repeat_terminate_triggered_sequences", Agg.SUM, "rollouts",
        "Rollouts a stop rule ended (forced EOS).", R),
    key("rollout/match_center_fallback_preds", Agg.SUM, "preds",
        "Predictions whose GT candidates came from centre distance (no box overlap).", R),
    key("rollout/match_repaired_polygons", Agg.SUM, "polygons", "Invalid polygons repaired before exact IoU.", R),
    key("rollout/im_end_token_dropped", Agg.SUM, "rollouts",
        "Rollouts whose <|im_end|> started inside a token that could not be re-tokenized (token dropped).", R),
    key("rollout/drop_multiplier_applied", Agg.SUM, "samples", "Targets whose structure CE was scaled for drops.", R),
    key("rollout/prefix_objects_cut", Agg.SUM, "objects", "Objects the prefix policy removed from the prefix.", R),
)

_LENGTHS: tuple[Key, ...] = (
    key("rollout/prompt_len_total", Agg.SUM, "tokens", "Prompt tokens of the rollouts.", R, internal=True),
    key("rollout/prompt_len_p90", Agg.MAX, "tokens",
        "90th percentile of prompt lengths (max over steps and ranks).", R),
    key("rollout/prefix_len_total", Agg.SUM, "tokens", "Prefix tokens kept in the targets.", R, internal=True),
    key("rollout/append_len_total", Agg.SUM, "tokens", "FN-append tokens of the targets.", R, internal=True),
    key("rollout/append_len_p90", Agg.MAX, "tokens",
        "90th percentile of append lengths (max over steps and ranks).", R),
    key("rollout/train_len_total", Agg.SUM, "tokens", "Y_train tokens of the targets.", R, internal=True),
    key("rollout/train_len_p90", Agg.MAX, "tokens",
        "90th percentile of Y_train lengths (max over steps and ranks).", R),
    key("rollout/generated_sequences", Agg.SUM, "rollouts",
        "Sequences generated this step (0 on buffer-reuse steps): the denominator of gen_new_tokens_mean.", R),
    key("rollout/gen_new_tokens_total", Agg.SUM, "tokens", "Tokens generated this step.", R),
    key("rollout/gen_new_tokens_p50", Agg.MAX, "tokens", "Median generated length (max over steps and ranks).", R),
    key("rollout/gen_new_tokens_p90", Agg.MAX, "tokens",
        "90th percentile of generated lengths, linear interpolation (max over steps and ranks).", R),
    key("rollout/gen_new_tokens_p99", Agg.MAX, "tokens",
        "99th percentile of generated lengths, linear interpolation (max over steps and ranks).", R),
    key("rollout/gen_new_tokens_max", Agg.MAX, "tokens", "Longest generated rollout.", R),
)

_TEMPLATES: tuple[Key, ...] = (
    *template("rollout/stop_rule/{}", STOP_RULES, Agg.SUM, "rollouts", "Rollouts ended by the `{}` stop rule.", R,
              optional=False),
    *template("rollout/parse_dropped/{}", DROP_BUCKETS, Agg.SUM, "objects",
              "Predicted objects dropped for `{}` (only non-zero buckets are emitted).", R),
    *template("rollout/parse_fallback/{}", FALLBACKS, Agg.SUM, "rollouts",
              "Rollouts whose append-ready prefix came from the `{}` fallback.", R),
    *template("rollout/prefix_cut/{}", PREFIX_CUTS, Agg.SUM, "samples",
              "Targets whose prefix the prefix policy cut at the first `{}` object.", R),
)

_DERIVED: tuple[Key, ...] = (
    ratio("rollout/parse_valid_rate", ["rollout/parse_valid"], ["rollout/samples"], "fraction",
          "Rollouts that are one strict JSON object with every object valid, uncut / rollouts."),
    ratio("rollout/parse_truncated_rate", ["rollout/parse_truncated"], ["rollout/samples"], "fraction",
          "Truncated rollouts / rollouts."),
    ratio("rollout/parse_obj_total", ["rollout/valid_pred_objects", "rollout/parse_dropped_invalid"], [], "objects",
          "Valid plus dropped predicted objects."),
    ratio("rollout/parse_obj_valid_frac", ["rollout/valid_pred_objects"],
          ["rollout/valid_pred_objects", "rollout/parse_dropped_invalid"], "fraction",
          "Valid / all predicted objects."),
    ratio("rollout/parse_obj_drop_frac", ["rollout/parse_dropped_invalid"],
          ["rollout/valid_pred_objects", "rollout/parse_dropped_invalid"], "fraction",
          "Dropped / all predicted objects."),
    ratio("rollout/sample_valid_pred_rate", ["rollout/samples_with_valid_pred"], ["rollout/samples"], "fraction",
          "Rollouts with >= 1 valid prediction / rollouts."),
    ratio("rollout/sample_any_match_rate", ["rollout/samples_with_match"], ["rollout/samples"], "fraction",
          "Rollouts with >= 1 supervised pair / rollouts."),
    ratio("rollout/precision", ["rollout/matched_for_supervision"], ["rollout/valid_pred_objects"], "fraction",
          "Supervised pairs / valid predictions (0 without predictions)."),
    ratio("rollout/recall", ["rollout/matched_for_supervision"], ["rollout/gt_objects"], "fraction",
          "Supervised pairs / GT objects (0 without GT)."),
    ratio("rollout/f1", [(2.0, "rollout/matched_for_supervision")],
          ["rollout/valid_pred_objects", "rollout/gt_objects"], "fraction", "2PR/(P+R) = 2 matched / (preds + GT), micro over the window."),
    ratio("rollout/gt_per_sample", ["rollout/gt_objects"], ["rollout/samples"], "objects", "GT objects per rollout."),
    ratio("rollout/pred_per_sample", ["rollout/valid_pred_objects"], ["rollout/samples"], "objects",
          "Valid predictions per rollout."),
    ratio("rollout/fp_per_sample", ["rollout/fp"], ["rollout/samples"], "objects", "FP per rollout."),
    ratio("rollout/fn_per_sample", ["rollout/fn"], ["rollout/samples"], "objects", "FN per rollout."),
    ratio("rollout/pred_gt_ratio", ["rollout/valid_pred_objects"], ["rollout/gt_objects"], "ratio",
          "Valid predictions / GT objects; over-generation shows as > 1."),
    ratio("rollout/gating_rejection_rate", ["rollout/gating_rejections"], ["rollout/candidate_pairs"], "fraction",
          "Rejected / scored candidate pairs (the legacy divided by preds x top_k, rollout §15 W14)."),
    ratio("rollout/matched_maskiou_mean", ["rollout/matched_iou_sum"], ["rollout/matched_maskiou_count"], "IoU",
          "Mean IoU of matched pairs (the configured iou_mode; exact by default), norm1000 space."),
    ratio("rollout/excluded_rate", ["rollout/excluded_from_supervision"],
          ["rollout/matched_for_supervision", "rollout/excluded_from_supervision"], "fraction",
          "Excluded / (supervised + excluded) pairs."),
    ratio("rollout/prefix_coord_targets_per_matched", ["rollout/prefix_coord_targets_total"],
          ["rollout/matched_for_supervision"], "slots", "Prefix coord targets per supervised pair."),
    ratio("rollout/tail_ignore_frac", ["rollout/tail_ignore_tokens"], ["rollout/tail_tokens"], "fraction",
          "Tail tokens without CE / tail tokens (a ratio of sums, not a mean of per-rank ratios)."),
    ratio("rollout/prompt_len_mean", ["rollout/prompt_len_total"], ["rollout/samples"], "tokens",
          "Mean prompt length."),
    ratio("rollout/prefix_len_mean", ["rollout/prefix_len_total"], ["rollout/targets"], "tokens",
          "Mean kept prefix length (absent without targets).", if_zero=None),
    ratio("rollout/append_len_mean", ["rollout/append_len_total"], ["rollout/targets"], "tokens",
          "Mean FN-append length (absent without targets).", if_zero=None),
    ratio("rollout/train_len_mean", ["rollout/train_len_total"], ["rollout/targets"], "tokens",
          "Mean Y_train length (absent without targets).", if_zero=None),
    ratio("rollout/gen_new_tokens_mean", ["rollout/gen_new_tokens_total"], ["rollout/generated_sequences"], "tokens",
          "Mean generated length; absent when nothing was generated.", if_zero=None),
    ratio("rollout/gen_tokens_per_s", ["rollout/gen_new_tokens_total"], ["time/rollout_generate_s"], "tokens/s",
          "Generated tokens / generation wall time (the slowest rank's); absent without generation time.",
          if_zero=None),
    ratio("rollout/budget_exhausted_rate", ["rollout/budget_exhausted"], ["rollout/generated_sequences"], "fraction",
          "Rollouts that used the whole budget / generated rollouts.", if_zero=None),
)

# Stage-2 AB names of the same counts (reference AB 8.2, seed 000 6.1); copies, so the rule stays above.
_AB_ALIASES: tuple[Key, ...] = (
    ratio("stage2/raw_rollouts", ["rollout/samples"], [], "rollouts", "Raw rollouts this step (Channel B).",
          variants=[AB]),
    ratio("stage2/invalid_rollout", ["rollout/invalid_rollouts"], [], "rollouts",
          "Rollouts that fell back to the bare `{` (an empty `{}` answer is not invalid).", variants=[AB]),
    ratio("stage2_ab/channel_b/strict_drop/N_valid_pred", ["rollout/valid_pred_objects"], [], "objects",
          "Valid predictions after the strict parse.", variants=[AB]),
    ratio("stage2_ab/channel_b/strict_drop/N_drop_invalid",
          ["rollout/parse_dropped_invalid", "rollout/parse_dropped/poly_unsupported"], [], "objects",
          "Dropped predictions, bbox-only refusals included.", variants=[AB]),
    *template("stage2_ab/channel_b/strict_drop/reason/{}", DROP_BUCKETS, Agg.RATIO, "objects",
              "Predictions dropped for `{}` (only non-zero buckets).", Emitter.DERIVED,
              num=["rollout/parse_dropped/{}"], variants=[AB]),
)

_DESC: tuple[Key, ...] = (
    key("rollout/desc_pairs_total", Agg.SUM, "pairs", "Matched pairs with both descs non-empty that were checked.",
        Emitter.DESC_MONITOR, requires=["desc_monitor"]),
    key("rollout/desc_exact_ok", Agg.SUM, "pairs", "Pairs with equal normalized descs.", Emitter.DESC_MONITOR,
        internal=True, requires=["desc_monitor"]),
    key("rollout/desc_sem_ok", Agg.SUM, "pairs", "Pairs exact or above the semantic threshold.", Emitter.DESC_MONITOR,
        internal=True, requires=["desc_monitor"]),
    key("rollout/desc_sem_sim_sum", Agg.SUM, "cosine", "Sum of pair cosine similarities.", Emitter.DESC_MONITOR,
        internal=True, requires=["desc_monitor"]),
    key("rollout/desc_sem_sim_count", Agg.SUM, "pairs", "Pairs with a semantic similarity.", Emitter.DESC_MONITOR,
        requires=["desc_monitor"], optional=True),
    key("rollout/desc_sem_enabled", Agg.MIN, "flag", "1 when the sentence encoder ran on every rank.",
        Emitter.DESC_MONITOR, requires=["desc_monitor"]),
    ratio("rollout/desc_exact_acc_on_matched", ["rollout/desc_exact_ok"], ["rollout/desc_pairs_total"], "fraction",
          "Exact desc agreement on matched pairs (1.0 without pairs).", if_zero=1.0, requires=["desc_monitor"]),
    ratio("rollout/desc_sem_acc_on_matched", ["rollout/desc_sem_ok"], ["rollout/desc_pairs_total"], "fraction",
          "Semantic desc agreement on matched pairs (1.0 without pairs).", if_zero=1.0, requires=["desc_monitor"],
          optional=True),
    ratio("rollout/desc_sem_sim_mean", ["rollout/desc_sem_sim_sum"], ["rollout/desc_sem_sim_count"], "cosine",
          "Mean desc cosine similarity (the legacy lost its numerator, rollout §15 W4).", if_zero=None,
          requires=["desc_monitor"], optional=True),
)

_GAUGES: tuple[Key, ...] = (
    key("rollout/repeat_terminate_active", Agg.MAX, "flag", "1 when stop rules were armed for this step's rollouts.",
        Emitter.EXECUTOR),
    key("rollout/max_new_tokens", Agg.LAST, "tokens", "Generation budget in effect.", Emitter.EXECUTOR),
    key("rollout/do_sample", Agg.LAST, "flag", "1 when decoding samples (temperature > 0).", Emitter.EXECUTOR),
    key("rollout/temperature", Agg.LAST, "", "Effective sampling temperature (1.0 when greedy).", Emitter.EXECUTOR),
    key("rollout/top_p", Agg.LAST, "", "Effective nucleus mass (1.0 when greedy).", Emitter.EXECUTOR),
    key("rollout/top_k", Agg.LAST, "", "Effective top-k (0 = off).", Emitter.EXECUTOR),
    key("rollout/seed_base", Agg.LAST, "", "vLLM server seed base of this step (reference rollout 10.3).",
        Emitter.BACKEND, requires=["vllm_server"]),
)


def _needs_rollouts(k: Key) -> Key:
    """Every key here describes rollouts: a run (or an all-Channel-A AB run) without any is not missing them."""
    return attrs.evolve(k, requires=k.requires | {"rollouts"})


KEYS: tuple[Key, ...] = tuple(
    _needs_rollouts(k) for k in (*_COUNTS, *_LENGTHS, *_TEMPLATES, *_DERIVED, *_AB_ALIASES, *_DESC, *_GAUGES)
)
