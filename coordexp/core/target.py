"""BuildTarget: one teacher-forced target per sample, ``Y_train = prefix + SerializeAppend(FN) + EOS``.

Token-level and pure. The rollout prefix is kept verbatim (its token ids, never re-encoded); the FN
append is encoded on its own; the EOS (``<|im_end|>``) is appended and supervised, which fixes the
legacy trainer that never taught the model to stop (reference 15.1 W1).

What each part of ``Y_train`` teaches (reference §6, AB §3.3 / §3.5):
- matched prefix objects: coord targets at their own coord positions. bbox/bbox pairs copy the GT
  bins; any pair with a polygon uses Sinkhorn OT + barycentric projection (``coordexp.core.ot``).
  A pair whose targets cannot be built (wrong arity) is excluded and its GT appended as FN.
  With ``matched_prefix_structure_ce`` their key/brace/quote tokens also get CE (AB Channel B).
- FP and dropped prefix objects: nothing (they stay as context only, reference 15.1 W3).
- tail: every structure token gets CE; coord tokens get their own bin as coord target (never CE);
  FN desc value tokens are masked, or get ``fn_desc_ce_weight``; the top-level ``}`` and the EOS
  get CE when ``closure_supervision`` is on; with dropped objects, tail non-desc CE weights are
  multiplied by ``drop_invalid_struct_ce_multiplier``.

The order of the step is ``parse -> prefix_policy -> match -> build_target``; ``build_target`` takes
the parse result or the prefix policy's view of it (the one Match saw).
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from coordexp.core.coordjson import GTObject, append_start_index, serialize_append
from coordexp.core.coords import MAX_BIN
from coordexp.core.keys import GeomType, Layout
from coordexp.core.labels import assistant_labels
from coordexp.core.match import MatchResult
from coordexp.core.ot import barycentric_projection
from coordexp.core.parse_records import ParsedObject, ParseResult
from coordexp.core.prefix_policy import PrefixCut, PrefixView
from coordexp.core.scan import closing_brace, desc_value_spans
from coordexp.core.target_records import TargetConfig, TargetCounters, TargetSample, TrainTarget
from coordexp.core.text import TokenText
from coordexp.core.tokens import TokenContext
from coordexp.errors import AppendError, TargetError

__all__ = ["build_target", "closure_positions", "pair_targets", "token_kinds"]


def build_target(
    parse: ParseResult | PrefixView, match: MatchResult, sample: TargetSample, *, ctx: TokenContext, cfg: TargetConfig
) -> TrainTarget:
    """The TrainTarget of one sample (see the module docstring)."""
    view = parse if isinstance(parse, PrefixView) else PrefixView(parse, PrefixCut())
    pr, sid = view.parse, sample.sample_id
    _check_match(match, len(pr.valid_objects), len(sample.gt), sid)
    supervised, matched_gt = _supervised_pairs(pr.valid_objects, match, sample, cfg)
    fn = tuple(g for g in range(len(sample.gt)) if g not in matched_gt)
    append_text = _append_text(pr, [sample.gt[g] for g in fn], sample)
    append = TokenText.of(ctx.encode(append_text), ctx)
    if append.data != append_text.encode("utf-8"):
        raise TargetError(
            f"sample {sid}: tokenizer {ctx.name!r} does not reproduce the append text from its ids "
            f"(it gives {append.text[:60]!r} for {append_text[:60]!r})"
        )
    append_ids = append.ids
    prefix_len = len(pr.prefix_ids)
    y = (*pr.prefix_ids, *append_ids, ctx.im_end_id)
    closure = closure_positions(y[prefix_len:], ctx=ctx, depth=1, sample_id=sid)
    desc_rel = append.overlapping(desc_value_spans(append.data))
    n_dropped = pr.n_dropped + view.cut.poly_unsupported
    mult = cfg.drop_invalid_struct_ce_multiplier if n_dropped else 1.0
    tail_ignore, tail_weights = _tail_weights(len(y) - prefix_len, desc_rel, closure, cfg, mult)
    prefix_coord = [(pos, t) for obj, targets in supervised for pos, t in zip(obj.coord_token_indices, targets)]
    prefix_ce = []
    if cfg.matched_prefix_structure_ce:
        struct = _prefix_structure_positions(pr, [o for o, _ in supervised], ctx, sample.layout)
        prefix_ce = [(pos, 1.0) for pos in struct]
    lab = assistant_labels(
        y,
        prefix_len=prefix_len,
        coord_id_to_bin=ctx.coord_id_to_bin,
        prefix_coord=prefix_coord,
        prefix_ce=prefix_ce,
        tail_ignore=tail_ignore,
        tail_weights=tail_weights,
        sample_id=sid,
    )
    counters = TargetCounters(
        gt_objects=len(sample.gt),
        valid_preds=len(pr.valid_objects),
        matched_pairs=len(match.matched_pairs),
        matched_for_supervision=len(supervised),
        excluded_from_supervision=len(match.matched_pairs) - len(supervised),
        fn_appended=len(fn),
        fp=len(match.fp_pred_indices),
        dropped=n_dropped,
        poly_unsupported=view.cut.poly_unsupported,
        prefix_coord_targets=len(prefix_coord),
        tail_coord_targets=sum(1 for pre in lab.coord_is_prefix if not pre),
        prefix_struct_ce=len(prefix_ce),
        tail_ce=sum(1 for v in lab.labels[prefix_len:] if v >= 0),
        tail_ignore_count=len(tail_ignore),
        drop_multiplier_applied=mult != 1.0,
        prefix_cut_reason=view.cut.reason,
        objects_cut=view.cut.objects_cut,
    )
    return TrainTarget(
        sample_id=sid,
        y_train_ids=y,
        prefix_len=prefix_len,
        append_len=len(append_ids),
        train_len=len(y),
        prefix_text=pr.prefix_text,
        append_text=append_text,
        labels=lab.labels,
        ce_weights=lab.weights,
        coord_positions=lab.coord_positions,
        coord_target_bins=lab.coord_bins,
        coord_is_prefix=lab.coord_is_prefix,
        tail_desc_positions=tuple(prefix_len + r for r in desc_rel),
        closure_positions=(prefix_len + closure[0], prefix_len + closure[1]),
        matched_gt_indices=tuple(sorted(matched_gt)),
        fn_gt_indices=fn,
        counters=counters,
    )


def _supervised_pairs(
    preds: tuple[ParsedObject, ...], match: MatchResult, sample: TargetSample, cfg: TargetConfig
) -> tuple[list[tuple[ParsedObject, tuple[int, ...]]], set[int]]:
    """Matched pairs whose coord targets could be built, and the GT indices they supervise."""
    supervised: list[tuple[ParsedObject, tuple[int, ...]]] = []
    matched_gt: set[int] = set()
    for p, g in match.matched_pairs:
        targets = pair_targets(preds[p], sample.gt[g], cfg)
        if targets is not None:
            supervised.append((preds[p], targets))
            matched_gt.add(g)
    return supervised, matched_gt


def _check_match(match: MatchResult, n_pred: int, n_gt: int, sid: str) -> None:
    """The match must have been computed on this view's predictions and this sample's GT."""
    for p, g in match.matched_pairs:
        if not (0 <= p < n_pred and 0 <= g < n_gt):
            raise TargetError(
                f"sample {sid}: matched pair ({p}, {g}) is out of range for {n_pred} predictions and {n_gt} GT "
                "objects; match the prefix policy's view, not the raw parse"
            )


def _append_text(pr: ParseResult, fn: list[GTObject], sample: TargetSample) -> str:
    try:
        return serialize_append(
            fn,
            start_index=append_start_index(pr.max_object_index),
            prefix_text=pr.prefix_text,
            layout=sample.layout,
        )
    except AppendError as exc:
        raise TargetError(
            f"sample {sample.sample_id}: cannot append FN objects after the rollout prefix "
            f"(prefix ends {pr.prefix_text[-40:]!r}): {exc}"
        ) from exc


def _tail_weights(
    tail_n: int, desc_rel: tuple[int, ...], closure: tuple[int, int], cfg: TargetConfig, mult: float
) -> tuple[list[int], list[float]]:
    """Tail-relative ignore list and CE weights (coord tokens are handled by ``assistant_labels``)."""
    desc = set(desc_rel)
    ignore = set(desc) if cfg.fn_desc_ce_weight == 0 else set()
    if not cfg.closure_supervision:
        ignore.update(closure)
    weights = [cfg.fn_desc_ce_weight if rel in desc else mult for rel in range(tail_n)]
    return sorted(ignore), weights


# ------------------------------------------------------------------------------------------------
# coord targets of a matched pair
# ------------------------------------------------------------------------------------------------


def _corners_or_vertices(geom: GeomType, bins: tuple[int, ...]) -> np.ndarray:
    pts = np.asarray(bins, dtype=np.float64)
    if geom is GeomType.BBOX:
        xs, ys = pts[0::2], pts[1::2]
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    return pts.reshape(-1, 2)


def _to_bins(values: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.rint(values), 0, MAX_BIN))


def pair_targets(pred: ParsedObject, gt: GTObject, cfg: TargetConfig) -> tuple[int, ...] | None:
    """Target bins for the pred's coord slots, or None when they cannot be built (pair excluded)."""
    n_slots = len(pred.coord_token_indices)
    pgeom, ggeom = pred.geom_type, GeomType(gt.geom_type)
    if len(gt.points) < 4 or len(gt.points) % 2 or len(pred.coord_bins) != n_slots:
        return None
    if pgeom is GeomType.BBOX and ggeom is GeomType.BBOX:
        # plain ints: this path runs for most pairs of a dense sample, numpy would cost more than it saves
        return tuple(min(max(int(v), 0), MAX_BIN) for v in gt.points) if n_slots == 4 and len(gt.points) == 4 else None
    if pgeom is GeomType.BBOX and n_slots != 4:
        return None
    proj = barycentric_projection(
        _corners_or_vertices(pgeom, pred.coord_bins),
        _corners_or_vertices(ggeom, gt.points),
        cost=cfg.ot_cost,
        epsilon=cfg.ot_epsilon,
        iters=cfg.ot_iters,
    )
    if pgeom is GeomType.BBOX:
        xs, ys = proj[:, 0], proj[:, 1]
        return _to_bins(np.array([xs.min(), ys.min(), xs.max(), ys.max()]))
    flat = _to_bins(proj.reshape(-1))
    return flat if len(flat) == n_slots else None


# ------------------------------------------------------------------------------------------------
# closure and matched-prefix structure positions
# ------------------------------------------------------------------------------------------------

def closure_positions(
    tail_ids: tuple[int, ...], *, ctx: TokenContext, depth: int = 1, sample_id: str = "?"
) -> tuple[int, int]:
    """Tail-relative (token of the ``}`` closing the answer, first EOS token after it).

    The scanner's string-aware brace count, starting at brace ``depth`` (1 after an append-ready
    prefix): braces inside desc strings are not closures, and an ``<|im_end|>`` inside a string or
    before the closing brace is not the turn end (reference AB 3.3 step 9).
    """
    tail = TokenText.of(tail_ids, ctx)
    close_at = closing_brace(tail.data, depth)
    if close_at is None:
        raise TargetError(f"sample {sample_id}: the target tail never closes the top-level object")
    brace = tail.token_at(close_at)
    eos = next((i for i in range(brace + 1, len(tail_ids)) if tail_ids[i] == ctx.im_end_id), None)
    if eos is None:
        raise TargetError(f"sample {sample_id}: no {ctx.piece(ctx.im_end_id)} token after the closing brace")
    return brace, eos


def _prefix_structure_positions(
    pr: ParseResult, matched: list[ParsedObject], ctx: TokenContext, layout: Layout
) -> list[int]:
    """Prefix tokens of matched entries' structure (AB 3.3 step 8): key quote to value end, minus desc.

    Tokens are taken when they overlap the byte range (a fused token at the edge counts), then those
    overlapping the entry's desc value bytes and coord tokens are removed.
    """
    if not matched:
        return []
    prefix = TokenText.of(pr.prefix_ids, ctx)
    data, starts = prefix.data, prefix.starts
    out: set[int] = set()
    for obj in matched:
        v_start, v_end = obj.value_span
        start = v_start
        if layout is Layout.OBJECT_N:
            key_at = data.rfind(b'"' + obj.key.encode() + b'"', 0, v_start)
            start = key_at if key_at >= 0 else v_start
        first, last = prefix.token_at(start), bisect_left(starts, v_end)
        desc = [(start + s, start + e) for s, e in desc_value_spans(data[start:v_end])]
        for i in range(max(first, 0), min(last, len(pr.prefix_ids))):
            a, b = starts[i], starts[i + 1]
            if b <= a or pr.prefix_ids[i] in ctx.coord_id_to_bin:
                continue
            if not any(s < b and a < e for s, e in desc):
                out.add(i)
    return sorted(out)


def token_kinds(target: TrainTarget) -> tuple[str, ...]:
    """What each Y_train token teaches, for reports: one of

    ``prefix`` (context only), ``prefix_ce`` (matched-prefix structure CE), ``coord_target``,
    ``ce`` (tail structure, closure, EOS), ``desc_masked``, ``desc_ce`` (FN desc with a weight),
    ``masked`` (a tail token without CE, e.g. closure when switched off).
    """
    coords = set(target.coord_positions)
    desc = set(target.tail_desc_positions)
    kinds = []
    for pos, label in enumerate(target.labels):
        if pos in coords:
            kinds.append("coord_target")
        elif label >= 0:
            kinds.append("prefix_ce" if pos < target.prefix_len else "desc_ce" if pos in desc else "ce")
        else:
            kinds.append("prefix" if pos < target.prefix_len else "desc_masked" if pos in desc else "masked")
    return tuple(kinds)
