"""Detection metrics from core records: per-step rollout metrics (training) and production-style eval.

Both read one ``SampleOutcome`` per rollout (Parse, Match, and in training BuildTarget results) and
return base keys of the metric registry: counts, sums, per-step percentiles. Rates, means, precision,
recall and F1 are not computed here: they are derived keys that ``MetricWindow`` computes from the
window's (and the ranks') summed counts, so a window of many steps, or an eval set split over many
batches and ranks, gives the micro-averaged value of the whole set (reference rollout §11.1).

Definitions that correct the legacy:
- a rollout that a stop rule ended is never counted as truncated (stability-controls spec);
- an empty ``{}`` answer is not an invalid rollout (AB §11); a zero-GT sample is an ordinary sample
  (rollout §15 W23);
- the gating-rejection rate divides by the candidate pairs actually scored (rollout §15 W14).

Torch-free on purpose: evaluation and offline replay run these without a model.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import attrs

from coordexp.core.duplicates import norm_desc
from coordexp.core.health import non_coord_slot_values
from coordexp.core.match import MatchResult
from coordexp.core.parse_records import Fallback, ImEndCut, ParseResult
from coordexp.core.repeat import StopRule, stop_metrics
from coordexp.core.target_records import CutReason, PrefixCut, TrainTarget
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError
from coordexp.telemetry.keys import REGISTRY, Mode

BEAM = "beam"
FINISH_LENGTH = "length"  # finish reason of a rollout that used its whole max_new_tokens budget


@attrs.frozen
class SampleOutcome:
    """One rollout as the metrics see it; the executor fills it from the step's records."""

    sample_id: str
    parse: ParseResult  # as Parse returned it (before the prefix policy)
    match: MatchResult  # over the predictions Match saw (after the prefix policy / bbox-only rule)
    completion_len: int  # tokens the backend generated (Rollout.completion_ids)
    prompt_len: int = 0  # tokens
    finish_reason: str | None = None  # backend's word; "length" = budget exhausted
    # the stop rule that forced EOS (StopOutcome.rule), None when none fired
    stop_rule: StopRule | None = attrs.field(default=None, converter=attrs.converters.optional(StopRule))
    decode_mode: str = "greedy"
    cut: PrefixCut = PrefixCut()  # what the prefix policy removed (PrefixView.cut)
    target: TrainTarget | None = None  # training only; None when the sample was dropped or in eval

    @property
    def n_preds(self) -> int:
        return len(self.match.matched_pairs) + len(self.match.fp_pred_indices)

    @property
    def n_gt(self) -> int:
        return len(self.match.matched_pairs) + len(self.match.fn_gt_indices)

    @property
    def truncated(self) -> bool:
        """Cut mid-structure by the budget: a stop rule's forced EOS is a decision, not a truncation."""
        return self.parse.truncated and self.stop_rule is None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method); 0.0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def is_parse_valid(parse: ParseResult) -> bool:
    """A complete answer: one strict JSON object, every object valid, nothing cut, no fallback.

    What a user means by "the model answers in the format": the whole response (after the ``<|im_end|>``
    cut) loads with ``json.loads`` and the strict parser dropped nothing.
    """
    if parse.truncated or parse.fallback is not Fallback.NONE or parse.dropped:
        return False
    try:
        return isinstance(json.loads(parse.response_text), dict)
    except json.JSONDecodeError:
        return False


def is_invalid_rollout(parse: ParseResult) -> bool:
    """No object at all and not a complete answer: the prefix fell back to the bare opening text."""
    return not parse.valid_objects and (parse.fallback is not Fallback.NONE or parse.truncated)


def invalid_coord_slots(parse: ParseResult, *, ctx: TokenContext) -> int:
    """Geometry slots of dropped objects that hold anything but a coord token (digits, words, CJK...).

    The rule is ``coordexp.core.health.non_coord_slot_values`` (the offline diagnosis classifies the
    same slots).
    """
    return len(non_coord_slot_values(parse, ctx=ctx))


def max_desc_duplicates(parse: ParseResult) -> int:
    """Largest number of valid objects sharing one desc (the near-duplicate rule's desc key)."""
    counts = Counter(norm_desc(o.desc) for o in parse.valid_objects)
    return max(counts.values(), default=0)


def _common(o: SampleOutcome, ctx: TokenContext) -> Counter[str]:
    """Counts shared by training and evaluation, under suffix names (prefix added by the caller)."""
    c: Counter[str] = Counter()
    c["samples"] += 1
    c["parse_truncated"] += o.truncated
    c["parse_dropped_invalid"] += o.parse.n_dropped
    for reason, n in o.parse.dropped_by_reason.items():
        c[f"parse_dropped/{reason.value}"] += n
    c["parse_dropped/poly_unsupported"] += o.cut.poly_unsupported
    c["gating_rejections"] += o.match.gating_rejections
    c["matched_iou_sum"] += o.match.matched_iou_sum
    c["samples_with_valid_pred"] += o.n_preds > 0
    c["parse_valid"] += is_parse_valid(o.parse)
    c["invalid_coord_slots"] += invalid_coord_slots(o.parse, ctx=ctx)
    c["gen_new_tokens_total"] += o.completion_len
    return c


def _train(o: SampleOutcome, ctx: TokenContext) -> Counter[str]:
    c = _common(o, ctx)
    counters = o.target.counters if o.target is not None else None
    matched = len(o.match.matched_pairs)
    supervised = counters.matched_for_supervision if counters else matched
    c.update({
        "valid_pred_objects": o.n_preds, "gt_objects": o.n_gt, "matched": matched,
        "matched_for_supervision": supervised,
        "excluded_from_supervision": counters.excluded_from_supervision if counters else 0,
        "fn_appended": counters.fn_appended if counters else len(o.match.fn_gt_indices),
        "fp": max(0, o.n_preds - supervised), "fn": max(0, o.n_gt - supervised),
        "candidate_pairs": o.match.candidate_pairs_evaluated, "matched_maskiou_count": o.match.matched_iou_count,
        "samples_with_match": supervised > 0, "invalid_rollouts": is_invalid_rollout(o.parse),
        "decode_beam_count": o.decode_mode == BEAM, "decode_non_beam_count": o.decode_mode != BEAM,
        "budget_exhausted": o.finish_reason == FINISH_LENGTH,
        "match_center_fallback_preds": o.match.center_fallback_preds,
        "match_repaired_polygons": o.match.repaired_polygons,
        "im_end_token_dropped": o.parse.im_end is ImEndCut.TOKEN_DROPPED,
        "prefix_objects_cut": o.cut.objects_cut, "prompt_len_total": o.prompt_len,
    })
    if o.parse.fallback is not Fallback.NONE:
        c[f"parse_fallback/{o.parse.fallback.value}"] += 1
    if o.cut.reason is not CutReason.NONE:
        c[f"prefix_cut/{o.cut.reason.value}"] += 1
    if o.target is not None:
        t = o.target
        c.update({
            "targets": 1, "prefix_coord_targets_total": t.counters.prefix_coord_targets,
            "tail_ignore_tokens": t.counters.tail_ignore_count, "tail_tokens": t.train_len - t.prefix_len,
            "prefix_len_total": t.prefix_len, "append_len_total": t.append_len, "train_len_total": t.train_len,
            "drop_multiplier_applied": t.counters.drop_multiplier_applied,
        })
    return c


# Counts whose zero is noise (closed families, and rule flags): emitted only when non-zero.
_FAMILIES = ("parse_dropped/", "parse_fallback/", "prefix_cut/")


def _emit(
    counts: Counter[str], prefix: str, keep: Iterable[str], outcomes: Sequence[SampleOutcome]
) -> dict[str, float]:
    out = {f"{prefix}{name}": float(counts.get(name, 0)) for name in keep}
    for name, v in counts.items():
        if name.startswith(_FAMILIES) and v:
            out[f"{prefix}{name}"] = float(v)
    # trigger counts follow the stop rules' own rule (every rule reported, zeros included)
    for name, v in stop_metrics(o.stop_rule for o in outcomes).items():
        out[prefix + name.removeprefix("rollout/")] = v
    return out


_TRAIN_KEYS = (
    "samples", "parse_valid", "parse_truncated", "parse_dropped_invalid", "valid_pred_objects", "gt_objects", "matched",
    "matched_for_supervision", "excluded_from_supervision", "fn_appended", "fp", "fn", "gating_rejections",
    "candidate_pairs", "matched_maskiou_count", "matched_iou_sum", "samples_with_valid_pred", "samples_with_match",
    "prefix_coord_targets_total", "tail_ignore_tokens", "tail_tokens", "targets", "invalid_rollouts",
    "invalid_coord_slots", "decode_non_beam_count", "decode_beam_count",
    "match_center_fallback_preds", "match_repaired_polygons", "im_end_token_dropped", "drop_multiplier_applied",
    "prefix_objects_cut", "prompt_len_total", "prefix_len_total", "append_len_total", "train_len_total",
)


def rollout_metrics(
    outcomes: Sequence[SampleOutcome], *, ctx: TokenContext, generated: bool = True
) -> dict[str, float]:
    """The ``rollout/*`` base keys of one optimizer step's rollouts.

    ``generated`` is False on buffer-reuse steps: the cached rollouts were not generated again, so
    the generation keys (lengths, budget, tokens) are left out and cannot inflate the window.
    """
    if not outcomes:
        return {}
    counts: Counter[str] = Counter()
    for o in outcomes:
        counts.update(_train(o, ctx))
    out = _emit(counts, "rollout/", _TRAIN_KEYS, outcomes)
    out["rollout/max_desc_duplicates"] = float(max(max_desc_duplicates(o.parse) for o in outcomes))
    out["rollout/prompt_len_p90"] = percentile([o.prompt_len for o in outcomes], 90)
    targets = [o.target for o in outcomes if o.target is not None]
    if targets:
        out["rollout/append_len_p90"] = percentile([t.append_len for t in targets], 90)
        out["rollout/train_len_p90"] = percentile([t.train_len for t in targets], 90)
    if not generated:
        return out
    lengths = [o.completion_len for o in outcomes]
    out.update({
        "rollout/generated_sequences": float(len(outcomes)),
        "rollout/gen_new_tokens_total": float(sum(lengths)),
        "rollout/gen_new_tokens_p50": percentile(lengths, 50),
        "rollout/gen_new_tokens_p90": percentile(lengths, 90),
        "rollout/gen_new_tokens_p99": percentile(lengths, 99),
        "rollout/gen_new_tokens_max": float(max(lengths)),
        "rollout/budget_exhausted": float(counts["budget_exhausted"]),
    })
    return out


_EVAL_KEYS = (
    "samples", "parse_valid", "pred_objects", "gt_objects", "matched", "fp", "fn", "gating_rejections", "parse_dropped_invalid",
    "parse_truncated", "invalid_coord_slots", "gen_new_tokens_total",
    "matched_iou_sum", "samples_with_valid_pred", "samples_with_match",
)


def eval_metrics(outcomes: Sequence[SampleOutcome], *, ctx: TokenContext) -> dict[str, float]:
    """The ``eval_rollout/*`` base keys of a set of evaluated rollouts (one rank's, or one batch's).

    ``matched`` counts Hungarian pairs (no target is built at evaluation). Give a rank's whole eval
    set at once where possible: the generated-length percentile is then that of the set.
    """
    if not outcomes:
        return {}
    counts: Counter[str] = Counter()
    for o in outcomes:
        c = _common(o, ctx)
        c.update({
            "pred_objects": o.n_preds, "gt_objects": o.n_gt, "matched": len(o.match.matched_pairs),
            "fp": len(o.match.fp_pred_indices), "fn": len(o.match.fn_gt_indices),
            "samples_with_match": bool(o.match.matched_pairs),
        })
        counts.update(c)
    out = _emit(counts, "eval_rollout/", _EVAL_KEYS, outcomes)
    out["eval_rollout/max_desc_duplicates"] = float(max(max_desc_duplicates(o.parse) for o in outcomes))
    out["eval_rollout/gen_new_tokens_p90"] = percentile([o.completion_len for o in outcomes], 90)
    return out


def best_metric_key(metric_for_best_model: str) -> str:
    """The eval key ``training.metric_for_best_model`` names (written with or without ``eval_``)."""
    name = metric_for_best_model if metric_for_best_model.startswith("eval_") else f"eval_{metric_for_best_model}"
    k = REGISTRY.keys.get(name)
    if k is None or k.mode is not Mode.EVAL or k.internal:
        known = ", ".join(x.name.removeprefix("eval_") for x in REGISTRY.for_mode(Mode.EVAL) if x.derived)
        raise ConfigError(
            f"training.metric_for_best_model: {metric_for_best_model!r} is not an evaluation metric; "
            f"use one of: {known}"
        )
    return name


def is_better(metric: str, value: float, best: float | None, greater_is_better: bool) -> bool:
    """Whether an eval ``value`` of ``metric`` beats the best so far (``best`` None: nothing yet).

    A non-finite value never wins (a NaN would otherwise compare False both ways and keep or replace
    the best by accident); ties keep the earlier checkpoint.
    """
    best_metric_key(metric)
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if greater_is_better else value < best
