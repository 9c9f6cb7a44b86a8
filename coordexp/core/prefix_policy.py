"""Prefix policy: which part of a parsed rollout the teacher keeps, applied between Parse and Match.

Order of the Channel-B step: ``parse -> apply_prefix_policy -> match -> build_target``.

Why: with the legacy prefix (``keep``) an invalid object is dropped from matching but stays in the
context unsupervised, and every valid object after it is still trained as a good continuation. A
model can then "escape" into malformed output at no cost (seed runbook 000, section 4.3). Cutting the
prefix right before the first invalid object makes the teacher take over from there: the objects
after the cut leave the prefix, their GT become FN and are appended with full supervision, so the
malformed continuation is replaced by a supervised correct one. ``cut_at_first_duplicate`` does the
same at the first valid object that nearly duplicates an earlier valid one (the rule of
``coordexp.core.duplicates``, shared with the stop rule), the seed's "spam plausible objects" failure
(section 4.4 / 5.5).

The cut lands on one of Parse's own append-ready cut points (``coordexp.core.scan``): the end of the
last object value before the offending one that closed in the root's entry list, or right after the
root ``{``. It maps to tokens with the one cut rule of ``coordexp.core.text``: whole tokens are kept,
and only a token straddling the cut (BPE fuses ``"]},`` and ``{"``) has its leading bytes re-encoded,
checked byte for byte. If that re-encoding fails, the cut moves back to the previous cut point; if no
point works, the prefix becomes the layout's opening text and ``PrefixCut.reset`` says so. The policy
never raises on a rollout.

With ``bbox_only`` (Stage-2 AB v1) valid polygon predictions are hidden from matching here as
``poly_unsupported``; they stay in the context unsupervised, like dropped objects.
"""

from __future__ import annotations

import enum

import attrs

from coordexp.core.duplicates import NearDuplicates
from coordexp.core.keys import GeomType, Layout
from coordexp.core.parse_records import Fallback, ParsedObject, ParseResult
from coordexp.core.scan import SCAN_LAYOUTS, cut_candidates, max_object_index, scan
from coordexp.core.text import TokenText
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError


class PrefixPolicy(enum.StrEnum):
    """Which part of the rollout prefix the teacher keeps (``rollout_matching.prefix_policy``)."""

    KEEP = "keep"
    CUT_AT_FIRST_INVALID = "cut_at_first_invalid"
    CUT_AT_FIRST_DUPLICATE = "cut_at_first_duplicate"


class CutReason(enum.StrEnum):
    NONE = "none"
    INVALID = "invalid"
    DUPLICATE = "duplicate"


def _check_iou(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ConfigError(
            f"rollout_matching.repeat_terminate.duplicate_object.iou_threshold must be in (0, 1], got {value!r}"
        )


@attrs.frozen
class PrefixPolicyConfig:
    """``rollout_matching.prefix_policy`` plus the near-duplicate rule it shares with the stop rule.

    Built by ``coordexp.bind.bind_prefix_policy``; no defaults here (they live in the config schema).
    """

    policy: PrefixPolicy = attrs.field(converter=PrefixPolicy)
    duplicate_iou: float = attrs.field(validator=_check_iou)
    same_desc: bool


@attrs.frozen
class PrefixCut:
    """What the prefix policy removed (``reason`` none: nothing)."""

    reason: CutReason = CutReason.NONE
    objects_cut: int = 0  # objects (valid or dropped) that left the prefix
    cut_retokenized: int = 0  # tokens re-encoded at the new cut (fused "]}," style tokens)
    poly_unsupported: int = 0  # valid polygons hidden from matching by the bbox-only rule
    # no cut point before the offending object mapped to tokens: the prefix is the layout's opening text
    reset: bool = False


@attrs.frozen
class PrefixView:
    """The parse result Match and BuildTarget see, and what the policy removed to get it."""

    parse: ParseResult
    cut: PrefixCut


# Parse fallbacks whose prefix is the layout's opening text, not a prefix of the response.
_OPENING_TEXT = frozenset({Fallback.NO_OPEN_BRACE, Fallback.NO_OBJECTS_ARRAY, Fallback.CUT_RETOKENIZE_RESET})


def apply_prefix_policy(
    parsed: ParseResult,
    *,
    ctx: TokenContext,
    cfg: PrefixPolicyConfig,
    layout: Layout = Layout.OBJECT_N,
    bbox_only: bool = False,
    sample_id: str = "?",
) -> PrefixView:
    """Apply the policy to one parse result (see the module docstring).

    ``sample_id`` is kept for callers' symmetry with the other transitions; the policy has no error
    path left to name it in.
    """
    valid, polys = _split_polys(parsed.valid_objects, bbox_only)
    base = attrs.evolve(parsed, valid_objects=valid) if polys else parsed
    if parsed.fallback in _OPENING_TEXT or cfg.policy is PrefixPolicy.KEEP:
        return PrefixView(base, PrefixCut(poly_unsupported=len(polys)))
    prefix = TokenText.of(parsed.prefix_ids, ctx)
    reason, offending = _offending_start(parsed, valid, polys, cfg, len(prefix.data))
    if offending is None:
        return PrefixView(base, PrefixCut(poly_unsupported=len(polys)))
    rules = SCAN_LAYOUTS[layout]
    sc = scan(prefix.data, rules)
    cut, ids, retok = _cut_tokens(prefix, cut_candidates(sc, offending), ctx)
    if ids is None:
        ids, retok = ctx.encode_fragment(rules.open_text), 0
    old_cut = len(prefix.data)
    spans = [o.value_span for o in (*parsed.valid_objects, *parsed.dropped)]
    view = attrs.evolve(
        parsed,
        prefix_ids=ids,
        prefix_text=ctx.text_of(ids),
        valid_objects=tuple(o for o in valid if o.value_span[1] <= cut),
        max_object_index=max_object_index(sc, cut),
        cut_retokenized=retok,
    )
    removed = sum(1 for s, e in spans if s >= cut and e <= old_cut)
    kept_polys = sum(1 for o in polys if o.value_span[1] <= cut)
    return PrefixView(view, PrefixCut(reason, removed, retok, kept_polys, reset=cut == 0))


def _split_polys(
    objects: tuple[ParsedObject, ...], bbox_only: bool
) -> tuple[tuple[ParsedObject, ...], tuple[ParsedObject, ...]]:
    if not bbox_only:
        return objects, ()
    return (
        tuple(o for o in objects if o.geom_type is GeomType.BBOX),
        tuple(o for o in objects if o.geom_type is not GeomType.BBOX),
    )


def _offending_start(
    parsed: ParseResult,
    valid: tuple[ParsedObject, ...],
    polys: tuple[ParsedObject, ...],
    cfg: PrefixPolicyConfig,
    prefix_end: int,
) -> tuple[CutReason, int | None]:
    """Byte offset where the first offending object's value starts, or None.

    Only objects inside the prefix (``[0, prefix_end)``) can offend: a drop past Parse's cut is
    already out of the prefix.
    """
    if cfg.policy is PrefixPolicy.CUT_AT_FIRST_INVALID:
        starts = [d.value_span[0] for d in parsed.dropped if d.value_span[1] <= prefix_end]
        starts += [o.value_span[0] for o in polys]
        return CutReason.INVALID, min(starts, default=None)
    return CutReason.DUPLICATE, _first_duplicate(valid, cfg)


def _first_duplicate(objects: tuple[ParsedObject, ...], cfg: PrefixPolicyConfig) -> int | None:
    """Value start of the first object that nearly duplicates an earlier one."""
    seen = NearDuplicates(iou_threshold=cfg.duplicate_iou, same_desc=cfg.same_desc)
    for obj in objects:
        if seen.add(obj.desc, obj.geom_type, obj.coord_bins):
            return obj.value_span[0]
    return None


def _cut_tokens(
    prefix: TokenText, candidates: list[int], ctx: TokenContext
) -> tuple[int, tuple[int, ...] | None, int]:
    """(byte cut, prefix ids, re-encoded tail count) at the latest candidate that maps to tokens.

    ``(0, None, 0)`` when none does.
    """
    for cut in candidates:
        kept = prefix.cut(cut, ctx)
        if kept is not None:
            return cut, kept[0], kept[1]
    return 0, None, 0
