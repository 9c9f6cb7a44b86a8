"""Registry table: production-style evaluation keys (``eval_rollout/*``, ``eval_time/*``).

Reference rollout §11.1 and seed 002 "Evaluation": rollout -> strict parse -> Hungarian match, sums over
the whole eval set and every rank, micro precision / recall / F1 from those sums, no teacher-forced loss
and no ``eval_loss``. Unlike training, ``matched`` counts Hungarian pairs (no target is built).
``training.metric_for_best_model`` names these keys without the ``eval_`` prefix (``rollout/f1``).
"""

from __future__ import annotations

import attrs

from coordexp.telemetry.keymodel import Across, Agg, Emitter, Key, Mode, key, ratio, template
from coordexp.telemetry.keys_rollout import DROP_BUCKETS, STOP_RULES

E = Emitter.EVALUATOR

_COUNTS: tuple[Key, ...] = (
    key("eval_rollout/samples", Agg.SUM, "samples", "Evaluated samples.", E),
    key("eval_rollout/parse_valid", Agg.SUM, "samples", "Rollouts that are one strict JSON object, all objects valid.", E),
    key("eval_rollout/pred_objects", Agg.SUM, "objects", "Valid predictions.", E),
    key("eval_rollout/gt_objects", Agg.SUM, "objects", "GT objects.", E),
    key("eval_rollout/matched", Agg.SUM, "pairs", "Hungarian pairs above the gate.", E),
    key("eval_rollout/fp", Agg.SUM, "objects", "Unmatched predictions.", E),
    key("eval_rollout/fn", Agg.SUM, "objects", "Unmatched GT objects.", E),
    key("eval_rollout/gating_rejections", Agg.SUM, "pairs", "Candidate pairs below maskiou_gate.", E),
    key("eval_rollout/parse_dropped_invalid", Agg.SUM, "objects", "Predicted objects the strict parser dropped.", E),
    key("eval_rollout/parse_truncated", Agg.SUM, "samples",
        "Rollouts cut mid-structure by the budget (not by a stop rule).", E),
    key("eval_rollout/invalid_coord_slots", Agg.SUM, "slots",
        "Geometry slots of dropped objects holding a non-coord token.", E),
    key("eval_rollout/max_desc_duplicates", Agg.MAX, "objects",
        "Largest same-desc count of valid objects in one rollout.", E),
    key("eval_rollout/repeat_terminate_triggered_sequences", Agg.SUM, "samples", "Rollouts a stop rule ended.", E),
    key("eval_rollout/gen_new_tokens_total", Agg.SUM, "tokens", "Generated tokens.", E),
    key("eval_rollout/gen_new_tokens_p90", Agg.MAX, "tokens",
        "90th percentile of generated lengths (max over ranks).", E),
    key("eval_rollout/matched_iou_sum", Agg.SUM, "IoU", "Sum of matched-pair IoUs.", E, internal=True),
    key("eval_rollout/samples_with_valid_pred", Agg.SUM, "samples", "Samples with >= 1 valid prediction.", E,
        internal=True),
    key("eval_rollout/samples_with_match", Agg.SUM, "samples", "Samples with >= 1 matched pair.", E, internal=True),
    *template("eval_rollout/parse_dropped/{}", DROP_BUCKETS, Agg.SUM, "objects", "Predictions dropped for `{}`.", E),
    *template("eval_rollout/stop_rule/{}", STOP_RULES, Agg.SUM, "samples", "Rollouts ended by the `{}` stop rule.", E,
              optional=False),
    key("eval_time/runtime_s", Agg.SUM, "s", "Evaluation wall time (the slowest rank's).", Emitter.EXECUTOR,
        across=Across.MAX),
    key("eval_time/steps", Agg.SUM, "batches", "Evaluation decode batches.", Emitter.EXECUTOR, internal=True),
)

_DERIVED: tuple[Key, ...] = (
    ratio("eval_rollout/precision", ["eval_rollout/matched"], ["eval_rollout/pred_objects"], "fraction",
          "matched / pred_objects (0 without predictions)."),
    ratio("eval_rollout/recall", ["eval_rollout/matched"], ["eval_rollout/gt_objects"], "fraction",
          "matched / gt_objects (0 without GT)."),
    ratio("eval_rollout/f1", [(2.0, "eval_rollout/matched")], ["eval_rollout/pred_objects", "eval_rollout/gt_objects"],
          "fraction", "2PR/(P+R), micro over the eval set (0 when P+R is 0)."),
    ratio("eval_rollout/pred_gt_ratio", ["eval_rollout/pred_objects"], ["eval_rollout/gt_objects"], "ratio",
          "pred_objects / gt_objects (0.0 without GT); should move toward 1."),
    ratio("eval_rollout/parse_valid_rate", ["eval_rollout/parse_valid"], ["eval_rollout/samples"], "fraction",
          "Rollouts that are one strict JSON object with every object valid, uncut / samples."),
    ratio("eval_rollout/parse_truncated_rate", ["eval_rollout/parse_truncated"], ["eval_rollout/samples"], "fraction",
          "Truncated rollouts / samples."),
    ratio("eval_rollout/sample_valid_pred_rate", ["eval_rollout/samples_with_valid_pred"], ["eval_rollout/samples"],
          "fraction", "Samples with >= 1 valid prediction / samples."),
    ratio("eval_rollout/sample_any_match_rate", ["eval_rollout/samples_with_match"], ["eval_rollout/samples"],
          "fraction", "Samples with >= 1 matched pair / samples."),
    ratio("eval_rollout/matched_maskiou_mean", ["eval_rollout/matched_iou_sum"], ["eval_rollout/matched"], "IoU",
          "Mean IoU of matched pairs (the configured iou_mode; exact by default)."),
    ratio("eval_rollout/gen_new_tokens_mean", ["eval_rollout/gen_new_tokens_total"], ["eval_rollout/samples"], "tokens",
          "Mean generated length."),
    ratio("eval_time/samples_per_s", ["eval_rollout/samples"], ["eval_time/runtime_s"], "samples/s",
          "Samples / runtime (absent when the runtime is 0).", if_zero=None),
    ratio("eval_time/steps_per_s", ["eval_time/steps"], ["eval_time/runtime_s"], "batches/s",
          "Batches / runtime (absent when the runtime is 0).", if_zero=None),
)

_DESC: tuple[Key, ...] = (
    key("eval_rollout/desc_pairs_total", Agg.SUM, "pairs", "Matched pairs checked by the desc monitor.",
        Emitter.DESC_MONITOR, requires=["desc_monitor"]),
    key("eval_rollout/desc_exact_ok", Agg.SUM, "pairs", "Pairs with equal normalized descs.", Emitter.DESC_MONITOR,
        internal=True, requires=["desc_monitor"]),
    key("eval_rollout/desc_sem_ok", Agg.SUM, "pairs", "Pairs exact or above the semantic threshold.",
        Emitter.DESC_MONITOR, internal=True, requires=["desc_monitor"]),
    key("eval_rollout/desc_sem_sim_sum", Agg.SUM, "cosine", "Sum of pair cosine similarities.", Emitter.DESC_MONITOR,
        internal=True, requires=["desc_monitor"]),
    key("eval_rollout/desc_sem_sim_count", Agg.SUM, "pairs", "Pairs with a semantic similarity.",
        Emitter.DESC_MONITOR, requires=["desc_monitor"], optional=True),
    key("eval_rollout/desc_sem_enabled", Agg.MIN, "flag", "1 when the sentence encoder ran on every rank.",
        Emitter.DESC_MONITOR, requires=["desc_monitor"]),
    ratio("eval_rollout/desc_exact_acc_on_matched", ["eval_rollout/desc_exact_ok"], ["eval_rollout/desc_pairs_total"],
          "fraction", "Exact desc agreement on matched pairs (1.0 without pairs).", if_zero=1.0,
          requires=["desc_monitor"]),
    ratio("eval_rollout/desc_sem_acc_on_matched", ["eval_rollout/desc_sem_ok"], ["eval_rollout/desc_pairs_total"],
          "fraction", "Semantic desc agreement on matched pairs (1.0 without pairs).", if_zero=1.0,
          requires=["desc_monitor"], optional=True),
    ratio("eval_rollout/desc_sem_sim_mean", ["eval_rollout/desc_sem_sim_sum"], ["eval_rollout/desc_sem_sim_count"],
          "cosine", "Mean desc cosine similarity.", if_zero=None, requires=["desc_monitor"], optional=True),
)

KEYS: tuple[Key, ...] = tuple(attrs.evolve(k, mode=Mode.EVAL) for k in (*_COUNTS, *_DERIVED, *_DESC))
