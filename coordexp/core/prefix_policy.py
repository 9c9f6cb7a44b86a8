"""Prefix policy: which part of a parsed rollout the teacher keeps, applied between Parse and Match.

Order of the Channel-B step: ``parse -> apply_prefix_policy -> match -> build_target``.

Why: with the legacy prefix (``keep``) an invalid object is dropped from matching but stays in the
context unsupervised, and every valid object after it is still trained as a good continuation. A
model can then "escape" into malformed output at no cost (seed runbook 000, section 4.3). Cutting the
prefix right before the first invalid object makes the teacher take over from there: the objects
after the cut leave the prefix, their GT become FN and are appended with full supervision, so the
malformed continuation is replaced by a supervised correct one. ``cut_at_first_duplicate`` does the
same at the first near-duplicate object (same normalised desc and IoU at or above the threshold with
an earlier valid object), the seed's "spam plausible objects" failure (section 4.4 / 5.5).

The cut lands at the end of the previous complete object value, or right after the root ``{`` when
the first object is the offending one, and maps to tokens like Parse's own cut (reference §4.4):
whole tokens are kept, and only a token straddling the cut (BPE fuses ``"]},`` and ``{"``) has its
leading text re-encoded, with an exact round-trip check. The kept prefix is otherwise never decoded
and re-encoded. If that re-encoding fails, the cut moves back to the previous object boundary.

With ``bbox_only`` (Stage-2 AB v1) valid polygon predictions are hidden from matching here as
``poly_unsupported``; they stay in the context unsupervised, like dropped objects.
"""

from __future__ import annotations

from itertools import accumulate

import attrs

from coordexp.core.coordjson import Layout
from coordexp.core.geometry import IouMode, Shape, iou
from coordexp.core.parse_records import ParsedObject, ParseResult
from coordexp.core.scan import SCAN_LAYOUTS, scan
from coordexp.core.target_records import KEEP_POLICY, CutReason, PrefixCut, PrefixPolicy, PrefixPolicyConfig
from coordexp.core.tokens import TokenContext
from coordexp.errors import TargetError, TokenizerError


@attrs.frozen
class PrefixView:
    """The parse result Match and BuildTarget see, and what the policy removed to get it."""

    parse: ParseResult
    cut: PrefixCut


def apply_prefix_policy(
    parsed: ParseResult,
    *,
    ctx: TokenContext,
    cfg: PrefixPolicyConfig = KEEP_POLICY,
    layout: Layout = Layout.OBJECT_N,
    bbox_only: bool = False,
    sample_id: str = "?",
) -> PrefixView:
    """Apply the policy to one parse result (see the module docstring)."""
    valid, polys = _split_polys(parsed.valid_objects, bbox_only)
    base = attrs.evolve(parsed, valid_objects=valid) if polys else parsed
    old_cut = len(parsed.prefix_text)
    if not parsed.response_text.startswith(parsed.prefix_text):
        # Parse's own fallbacks ("{" with no object): nothing to cut.
        return PrefixView(base, PrefixCut(poly_unsupported=len(polys)))
    reason, offending = _offending_start(parsed, valid, polys, cfg, old_cut)
    if offending is None:
        return PrefixView(base, PrefixCut(poly_unsupported=len(polys)))
    cut, ids, retok = _cut_tokens(parsed, offending, ctx, layout, sample_id)
    sc = scan(parsed.prefix_text[:cut], SCAN_LAYOUTS[layout.value])
    marks = [n for pos, n in sc.key_marks if pos < cut]
    if layout is Layout.OBJECTS_ARRAY:
        marks = [o.index for o in sc.objects if o.start < cut]
    spans = [o.value_span for o in (*parsed.valid_objects, *parsed.dropped)]
    removed = sum(1 for s, e in spans if s >= cut and e <= old_cut)
    view = attrs.evolve(
        parsed,
        prefix_ids=ids,
        prefix_text=parsed.prefix_text[:cut],
        valid_objects=tuple(o for o in valid if o.value_span[1] <= cut),
        max_object_index=max(marks) if marks else None,
        cut_retokenized=retok,
    )
    kept_polys = sum(1 for o in polys if o.value_span[1] <= cut)
    return PrefixView(view, PrefixCut(reason, removed, retok, kept_polys))


def _split_polys(
    objects: tuple[ParsedObject, ...], bbox_only: bool
) -> tuple[tuple[ParsedObject, ...], tuple[ParsedObject, ...]]:
    if not bbox_only:
        return objects, ()
    return (
        tuple(o for o in objects if o.geom_type == "bbox_2d"),
        tuple(o for o in objects if o.geom_type != "bbox_2d"),
    )


def _offending_start(
    parsed: ParseResult,
    valid: tuple[ParsedObject, ...],
    polys: tuple[ParsedObject, ...],
    cfg: PrefixPolicyConfig,
    old_cut: int,
) -> tuple[CutReason, int | None]:
    """Char offset where the first offending object's value starts, or None."""
    if cfg.policy is PrefixPolicy.CUT_AT_FIRST_INVALID:
        starts = [d.value_span[0] for d in parsed.dropped if d.value_span[1] <= old_cut]
        starts += [o.value_span[0] for o in polys]
        return CutReason.INVALID, min(starts, default=None)
    if cfg.policy is PrefixPolicy.CUT_AT_FIRST_DUPLICATE:
        return CutReason.DUPLICATE, _first_duplicate(valid, cfg)
    return CutReason.NONE, None


def _norm_desc(desc: str) -> str:
    return desc.strip().lower()


def _first_duplicate(objects: tuple[ParsedObject, ...], cfg: PrefixPolicyConfig) -> int | None:
    """Value start of the first object that nearly duplicates an earlier one (stop-rule definition)."""
    seen: list[tuple[str, ParsedObject]] = []
    for obj in objects:
        desc = _norm_desc(obj.desc)
        for other_desc, other in seen:
            if cfg.same_desc and other_desc != desc:
                continue
            if _iou(obj, other) >= cfg.duplicate_iou:
                return obj.value_span[0]
        seen.append((desc, obj))
    return None


def _iou(a: ParsedObject, b: ParsedObject) -> float:
    """Exact IoU; two boxes with area are done inline (the dense case: 60 objects, 1770 pairs)."""
    if a.geom_type == b.geom_type == "bbox_2d":
        ax1, ay1, ax2, ay2 = a.coord_bins
        bx1, by1, bx2, by2 = b.coord_bins
        area_a, area_b = (ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1)
        if area_a > 0 and area_b > 0:
            inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
            return inter / (area_a + area_b - inter)
    return iou(Shape(a.geom_type, a.coord_bins), Shape(b.geom_type, b.coord_bins), mode=IouMode.EXACT)


def _cut_tokens(
    parsed: ParseResult, offending: int, ctx: TokenContext, layout: Layout, sample_id: str
) -> tuple[int, tuple[int, ...], int]:
    """(char cut, prefix ids, re-encoded tail count) at the last object boundary before ``offending``."""
    sc = scan(parsed.prefix_text, SCAN_LAYOUTS[layout.value])
    candidates = sorted({e for e in sc.closed_ends if e <= offending}, reverse=True)
    if sc.open_end >= 0:
        candidates.append(sc.open_end)
    starts = list(accumulate((len(ctx.pieces[i]) for i in parsed.prefix_ids), initial=0))
    for cut in candidates:
        kept = _ids_before(parsed.prefix_ids, starts, parsed.prefix_text, cut, ctx)
        if kept is not None:
            return cut, kept[0], kept[1]
    raise TargetError(
        f"sample {sample_id}: prefix policy found no object boundary before char {offending} that maps "
        "to tokens exactly; use prefix_policy: keep for this tokenizer"
    )


def _ids_before(
    ids: tuple[int, ...], starts: list[int], text: str, cut: int, ctx: TokenContext
) -> tuple[tuple[int, ...], int] | None:
    """Ids whose text is exactly ``text[:cut]``: whole tokens plus a re-encoded straddling token."""
    from bisect import bisect_right

    i = bisect_right(starts, cut) - 1
    if i >= len(ids) or starts[i] == cut:
        return ids[: min(i, len(ids))], 0
    piece_prefix = text[starts[i] : cut]
    try:
        tail = tuple(ctx.encode(piece_prefix))
    except TokenizerError:
        return None
    if "".join(ctx.piece(t) for t in tail) != piece_prefix:
        return None
    return ids[:i] + tail, len(tail)
