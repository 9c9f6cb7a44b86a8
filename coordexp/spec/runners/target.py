"""Runner for ``target``: rollout + GT -> parse, prefix policy, match and the TrainTarget.

Input: one case or ``{"cases": [case, ...]}``. A case is one of three modes:

``"mode": "build"`` (default)::

    {"tokenizer": "char" | {"char_fuse": [...]} | "fixture-bpe",     (as the parse runner)
     "text": "..." | "ids": [...],                                   (the rollout)
     "gt": [JSONL object dicts] | null,                              (null: the record has no GT payload)
     "match": {every MatchConfig field}, "target": {every TargetConfig field},
     "prefix_policy": {"policy", "duplicate_iou", "same_desc"},     (the records have no defaults:
                                                                    a fixture states its whole config)
     "layout": "object_n", "sample_id": "s0", "label": "..."}

``"mode": "closure"``: ``{"tokenizer", "text", "depth"}`` -> the tail-relative closure positions of
``text`` (the tail) scanned from brace ``depth``.

``"mode": "bbox_only_gt"``: ``{"gt": [...], "sample_id"}`` -> the GT accepted by the Stage-2 AB rule.

Build output: texts, spans, the per-token table (``"pos kind 'text' [-> bin] [w=...]"``), match,
counters and ``valid_json`` (prefix + append parses as JSON). Errors are reported per case.
"""

from __future__ import annotations

from typing import Any

from coordexp.core.coordjson import GeomType, Layout
from coordexp.core.match import MatchConfig
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import PrefixPolicyConfig
from coordexp.core.scan import scan
from coordexp.core.target import closure_positions, token_kinds
from coordexp.core.target_pipeline import TargetTrace, run_target_step
from coordexp.core.target_records import (
    TargetConfig,
    TargetSample,
    TrainTarget,
)
from coordexp.core.text import TokenText
from coordexp.core.tokens import TokenContext
from coordexp.data.jsonl import gt_objects
from coordexp.errors import CoordexpError, SpecError
from coordexp.serde import structure, unstructure
from coordexp.spec.runners import each_case, expected_error, is_json
from coordexp.spec.runners.parse import context_for

TRANSITION = "target"

_BUILD_KEYS = {"mode", "tokenizer", "text", "ids", "gt", "match", "target", "prefix_policy", "layout", "sample_id", "label"}


def _record(case: dict[str, Any], key: str, cls: type) -> Any:
    """A transition record stated in full by the fixture (the records carry no defaults)."""
    if key not in case:
        raise SpecError(f"target fixture case: '{key}' is required and states every {cls.__name__} field")
    return structure(case[key], cls)


def _rollout_ids(case: dict[str, Any], ctx: TokenContext) -> tuple[int, ...]:
    if ("text" in case) == ("ids" in case):
        raise SpecError("target fixture case needs exactly one of text/ids")
    return tuple(ctx.encode(case["text"]) if "text" in case else case["ids"])


def token_table(trace: TargetTrace, ctx: TokenContext) -> list[str]:
    """One line per Y_train token: position, kind, text, target bin, weight when not 1."""
    t = trace.target
    bins = dict(zip(t.coord_positions, t.coord_target_bins))
    rows = []
    for pos, kind in enumerate(token_kinds(t)):
        row = f"{pos:>4} {kind:<12} {ctx.piece(t.y_train_ids[pos])!r}"
        if pos in bins:
            row += f" -> {bins[pos]}"
        if t.labels[pos] >= 0 and t.ce_weights[pos] != 1.0:
            row += f" w={t.ce_weights[pos]:g}"
        rows.append(row)
    return rows


def describe_trace(trace: TargetTrace, ctx: TokenContext) -> dict[str, Any]:
    """Plain data of one sample's parse / policy / match / target (also used by inspect --json)."""
    t, m, view = trace.target, trace.match, trace.view.parse
    texts = TokenText.of(t.y_train_ids, ctx).token_texts()  # merged pieces: whole characters
    ce_text = "".join(texts[p] for p in range(t.train_len) if t.labels[p] >= 0)
    return {
        "parse": {
            "valid": list(trace.parse.valid),
            "dropped_by_reason": {r.value: n for r, n in trace.parse.dropped_by_reason.items() if n},
            "truncated": trace.parse.truncated,
            "max_object_index": trace.parse.max_object_index,
        },
        "prefix_view": {**unstructure(trace.view.cut), "valid": list(view.valid), "max_object_index": view.max_object_index},
        "match": {
            "pairs": [list(p) for p in m.matched_pairs],
            "ious": [round(v, 6) for v in m.matched_ious],
            "fp": list(m.fp_pred_indices),
            "fn": list(m.fn_gt_indices),
            "gating_rejections": m.gating_rejections,
        },
        "prefix_text": t.prefix_text,
        "append_text": t.append_text,
        "y_train_text": ctx.text_of(t.y_train_ids),
        "valid_json": is_json(answer_text(ctx.bytes_of(t.y_train_ids[:-1]))),
        "spans": {"prefix_len": t.prefix_len, "append_len": t.append_len, "train_len": t.train_len},
        "ce_text": ce_text,
        "prefix_coord_targets": [[p, b] for p, b, pre in zip(t.coord_positions, t.coord_target_bins, t.coord_is_prefix) if pre],
        "tail_coord_targets": [b for b, pre in zip(t.coord_target_bins, t.coord_is_prefix) if not pre],
        "closure_positions": list(t.closure_positions),
        "closure_positions_tail": [p - t.prefix_len for p in t.closure_positions],
        "prefix_ce_text": "".join(texts[p] for p in range(t.prefix_len) if t.labels[p] >= 0),
        "desc_masked_runs": _runs(t, texts, "desc_masked"),
        "matched_gt_indices": list(t.matched_gt_indices),
        "fn_gt_indices": list(t.fn_gt_indices),
        "counters": unstructure(t.counters),
        "tokens": token_table(trace, ctx),
    }


def answer_text(data: bytes) -> str:
    """The answer from its root ``{`` on: prose Parse keeps before it is context, not JSON."""
    root = scan(data).root_start
    return data[max(root, 0) :].decode("utf-8", errors="replace")


def _runs(t: TrainTarget, texts: tuple[str, ...], kind: str) -> list[str]:
    """Texts of maximal runs of consecutive tokens of one kind (e.g. each masked desc value)."""
    runs: list[str] = []
    prev = -2
    for pos, k in enumerate(token_kinds(t)):
        if k != kind:
            continue
        piece = texts[pos]
        if pos == prev + 1:
            runs[-1] += piece
        else:
            runs.append(piece)
        prev = pos
    return runs


def _build(case: dict[str, Any]) -> dict[str, Any]:
    unknown = set(case) - _BUILD_KEYS
    if unknown:
        raise SpecError(f"target fixture case: unknown keys {sorted(unknown)}; known {sorted(_BUILD_KEYS)}")
    ctx = context_for(case.get("tokenizer"))
    cfg = _record(case, "target", TargetConfig)
    sid = case.get("sample_id", "s0")
    layout = Layout(case.get("layout", "object_n"))
    gt = () if case.get("gt") is None else gt_objects(case["gt"], where=f"sample {sid}", bbox_only=cfg.bbox_only)
    sample = TargetSample(sid, gt, layout)
    trace = run_target_step(
        Rollout(_rollout_ids(case, ctx), sample_id=sid),
        sample,
        ctx=ctx,
        match_cfg=_record(case, "match", MatchConfig),
        target_cfg=cfg,
        policy_cfg=_record(case, "prefix_policy", PrefixPolicyConfig),
    )
    return describe_trace(trace, ctx)


def _closure(case: dict[str, Any]) -> dict[str, Any]:
    ctx = context_for(case.get("tokenizer"))
    ids = _rollout_ids(case, ctx)
    brace, eos = closure_positions(ids, ctx=ctx, depth=case.get("depth", 1), sample_id=case.get("sample_id", "s0"))
    return {"closure_positions": [brace, eos], "tail_len": len(ids), "brace_piece": ctx.piece(ids[brace])}


def _bbox_only_gt(case: dict[str, Any]) -> dict[str, Any]:
    gt = gt_objects(case["gt"], where=f"sample {case.get('sample_id', 's0')}", bbox_only=True)
    return {"gt": [{"desc": g.desc, GeomType.BBOX.value: list(g.points)} for g in gt]}


_MODES = {"build": _build, "closure": _closure, "bbox_only_gt": _bbox_only_gt}


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    mode = case.get("mode", "build")
    if mode not in _MODES:
        raise SpecError(f"target fixture: mode must be one of {sorted(_MODES)}, got {mode!r}")
    try:
        out = _MODES[mode](case)
    except CoordexpError as exc:
        out = expected_error(exc)
    return {"label": case["label"], **out} if "label" in case else out


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
