"""Seed 000's hand diagnosis as figures: every ``diagnosis/*`` key of metrics.json, per-sample rows, flags.

The per-sample rules are ``coordexp.core.health`` and the training metrics' own helpers
(``eval.detection``); ratios the metric registry already derives (pred/GT, precision, recall, F1,
matched IoU, truncation rate) are read from the replay's metrics, not computed again. Which figures
are exact depends on the input format: ``EXACTNESS`` says it per format, and the report prints it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from coordexp.config.rules_ranges import ABSENT, value_at
from coordexp.config.schema_root import Config
from coordexp.core.health import (
    HEALTHY,
    NOT_APPLICABLE,
    SlotClass,
    is_valid_json,
    near_duplicate_pairs,
    non_coord_slot_values,
    slot_class,
)
from coordexp.core.parse_records import DropReason
from coordexp.core.tokens import TokenContext
from coordexp.eval.detection import max_desc_duplicates, percentile
from coordexp.replay.pipeline import ReplayedSample, ReplayRun

TOP_SLOT_VALUES = 10
# Figures read from the replay's metrics (registry-derived), under their diagnosis name.
_FROM_METRICS = {
    "diagnosis/precision": "eval_rollout/precision", "diagnosis/recall": "eval_rollout/recall",
    "diagnosis/f1": "eval_rollout/f1", "diagnosis/matched_iou_mean": "eval_rollout/matched_maskiou_mean",
}
_ALL = "every figure"
EXACTNESS: dict[str, tuple[str, str]] = {  # format -> (exact, estimated)
    "rollouts": (_ALL + " (the model's own token ids)", "nothing"),
    "gt_vs_pred": (
        "slot tokens (values as emitted in raw_output_json), max_same_desc, near_duplicate_pairs, pred_gt_ratio, "
        "precision / recall / F1 / matched IoU (up to the pixel -> norm1000 rounding)",
        "valid_json_rate and truncated (from raw_ends_with_im_end: the raw text is not stored), dropped/* (strict "
        "parse of the legacy's best-effort dict: objects its salvage lost are not seen); token counts are not "
        "reported",
    ),
    "vllm_debug": (_ALL + " on unclipped texts", "figures of clipped texts (diagnosis/clipped); token counts are "
                   "re-tokenized, so not reported"),
    "monitor": (_ALL + " on unclipped texts", "figures of clipped texts (diagnosis/clipped); token counts are "
                "re-tokenized, so not reported"),
}


@attrs.frozen
class Finding:
    key: str
    value: float
    healthy: bool
    seed_says: str
    cure: str


@attrs.frozen
class Diagnosis:
    figures: dict[str, float]
    rows: tuple[dict[str, Any], ...]  # samples.jsonl
    top_slot_values: tuple[tuple[str, str, int], ...]  # (value, class, count), most frequent first
    findings: tuple[Finding, ...]
    exact: str
    estimated: str


def sample_row(r: ReplayedSample, ctx: TokenContext) -> dict[str, Any]:
    """One samples.jsonl row: what the diagnosis counted for this rollout."""
    p, o, s = r.item.parsed, r.outcome, r.sample
    row: dict[str, Any] = {"sample_id": s.sample_id, "step": s.step, "mode": s.mode, "source": s.source,
                           "dropped_sample": r.item.dropped, "completion_tokens": len(s.completion_ids),
                           "finish_reason": s.finish_reason, "stop_rule": s.stop_rule, "clipped": s.clipped}
    if p is None:
        return row
    slots = non_coord_slot_values(p, ctx=ctx)
    row.update({
        "valid_json": is_valid_json(p),
        "truncated": o.truncated if o is not None else p.truncated,
        "valid_objects": len(p.valid_objects), "dropped_objects": p.n_dropped,
        "dropped": {d.value: n for d, n in p.dropped_by_reason.items() if n},
        "slot_values": list(slots), "slot_classes": dict(Counter(slot_class(v).value for v in slots)),
        "max_same_desc": max_desc_duplicates(p), "near_duplicate_pairs": near_duplicate_pairs(p.valid_objects),
        "gt_objects": o.n_gt if o is not None else len(r.item.target_sample.gt),
        "pred_objects": o.n_preds if o is not None else None,
        "matched": len(o.match.matched_pairs) if o is not None else None,
        "response_text": p.response_text,
    })
    if s.legacy_valid_preds is not None:
        row["legacy_valid_preds"] = s.legacy_valid_preds
    return row


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def config_value(config: Config, key: str) -> Any:
    """A canonical dotted key's value in ``config``, ``NOT_APPLICABLE`` where its section is absent."""
    value = value_at(config, key)
    return NOT_APPLICABLE if value is ABSENT else value


def diagnose(run: ReplayRun, *, ctx: TokenContext, config: Config) -> Diagnosis:
    """Every figure of seed 000's hand diagnosis over the replayed run; cures are judged against ``config``."""
    max_new_tokens = config.rollout_matching.max_new_tokens
    rows = [sample_row(r, ctx) for r in run.samples]
    parsed = [row for row in rows if "valid_json" in row]
    n = len(rows)
    raw = sum(row["valid_objects"] + row["dropped_objects"] for row in parsed)
    dropped = sum(row["dropped_objects"] for row in parsed)
    slot_counts: Counter[str] = Counter()
    value_counts: Counter[str] = Counter()
    for row in parsed:
        slot_counts.update(row["slot_classes"])
        value_counts.update(row["slot_values"])
    fig: dict[str, float] = {
        "diagnosis/samples": float(n),
        "diagnosis/valid_json_rate": _ratio(sum(row["valid_json"] for row in parsed), n),
        "diagnosis/truncated": float(sum(row["truncated"] for row in parsed)),
        "diagnosis/raw_objects": float(raw),
        "diagnosis/dropped_total": float(dropped),
        "diagnosis/drop_rate": _ratio(dropped, raw),
        **{f"diagnosis/dropped/{r.value}": float(sum(row["dropped"].get(r.value, 0) for row in parsed))
           for r in DropReason},
        **{f"diagnosis/slot_tokens/{c.value}": float(slot_counts.get(c.value, 0)) for c in SlotClass},
        "diagnosis/slot_tokens_total": float(sum(slot_counts.values())),
        "diagnosis/max_same_desc": float(max((row["max_same_desc"] for row in parsed), default=0)),
        "diagnosis/near_duplicate_pairs": float(sum(row["near_duplicate_pairs"] for row in parsed)),
        "diagnosis/dropped_samples": float(sum(row["dropped_sample"] is not None for row in rows)),
        "diagnosis/clipped": float(sum(row["clipped"] for row in rows)),
    }
    m = run.metrics
    ratio = m.get("rollout/pred_gt_ratio", m.get("eval_rollout/pred_gt_ratio"))
    fig["diagnosis/pred_gt_ratio"] = float(ratio) if ratio is not None else 0.0
    fig.update({k: float(m[src]) for k, src in _FROM_METRICS.items() if src in m})
    if run.input.tokens_known:
        lengths = [row["completion_tokens"] for row in rows]
        fig.update({"diagnosis/gen_tokens_p50": percentile(lengths, 50), "diagnosis/gen_tokens_p90": percentile(lengths, 90),
                    "diagnosis/gen_tokens_p99": percentile(lengths, 99),
                    "diagnosis/gen_tokens_max": float(max(lengths, default=0)),
                    "diagnosis/max_new_tokens": float(max_new_tokens),
                    "diagnosis/gen_tokens_p90_over_cap": _ratio(percentile(lengths, 90), max_new_tokens)})
    legacy = [row["legacy_valid_preds"] for row in rows if "legacy_valid_preds" in row]
    if legacy:
        fig["diagnosis/legacy_valid_pred_objects"] = float(sum(legacy))
    merged = {**m, **fig}
    cure_of = {h.key: h.cure(lambda key: config_value(config, key)) for h in HEALTHY}
    findings = tuple(Finding(h.key, float(merged[h.key]), h.holds(float(merged[h.key])), h.seed_says, cure_of[h.key])
                     for h in HEALTHY if h.key in merged)
    top = tuple((v, slot_class(v).value, c) for v, c in value_counts.most_common(TOP_SLOT_VALUES))
    exact, estimated = EXACTNESS[run.input.format]
    return Diagnosis(fig, tuple(rows), top, findings, exact, estimated)
