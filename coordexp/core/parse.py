"""Parse: a rollout's token ids -> the append-ready prefix and the strictly valid objects.

Strict and token-aligned (reference §4): no JSON repair, no re-serialization, no key sorting. The
kept prefix is a token prefix of the rollout; only the single token that straddles the cut may be
re-encoded (a fused ``}}`` or ``},``), and that is checked against the piece table.

Steps, each in one pass:
1. pieces from ``ctx.pieces`` (no per-call decode), ``response_text`` = their concatenation, so
   char offsets and token indices line up;
2. hard stop at the first ``<|im_end|>`` text (also when it starts inside a token);
3. ``scan`` (``coordexp.core.scan``) for object spans, coord capture windows, object keys;
4. cut after the last complete object value (or right after the opening container) and map the
   char cut to tokens;
5. validate each scanned object in the order of §4.5.

Degraded paths never raise and never pass silently; each is a field of the result:
- no root ``{``: the prefix is ``ctx.encode("{")`` and ``truncated`` is true (``Fallback.NO_OPEN_BRACE``);
- a cut inside a token whose leading text does not re-encode to the same text (legacy W11 raised
  here): the cut moves back to the previous object boundary, then to the opening brace
  (``CUT_RETOKENIZE_FAILED``), and if none works the prefix is the opening text
  (``CUT_RETOKENIZE_RESET``); objects past the moved cut are dropped as ``key_invalid``;
- the same for ``<|im_end|>`` inside a token: the straddling token is dropped (``ImEndCut.TOKEN_DROPPED``).

Legacy quirks kept so the catalogue scenarios hold (a stricter grammar, W10, may come as an option):
- P32/P39: ``"object_N": <non-dict>`` leaves N pending, so the next depth-2 dict, whatever its key,
  becomes object_N; N still counts for ``max_object_index`` (FN numbering stays collision-free).
- P33: duplicate ``object_N`` keys are both kept.
- P34: text before the root ``{`` (prose, a markdown fence) stays in the prefix; only a suffix is cut.
- P38: a depth-2 dict under a non-``object_N`` key is ignored (no drop counted).
- Also: a second root object ``{A} {B}`` is scanned into the same prefix; ``object_0`` and gaps are
  fine; whitespace around a coord string is accepted; a bbox written as two pairs is a bbox.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from itertools import accumulate

import attrs

from coordexp.core.coordjson import Layout
from coordexp.core.coords import parse_coord_token
from coordexp.core.parse_records import (
    DroppedObject,
    DropReason,
    Fallback,
    ImEndCut,
    ParsedObject,
    ParseResult,
    Rollout,
)
from coordexp.core.scan import SCAN_LAYOUTS, ScanLayout, ScannedObject, ScanResult, captured_indices, scan
from coordexp.core.tokens import IM_END, TokenContext
from coordexp.errors import TokenizerError

__all__ = ["parse", "Rollout", "ParseResult", "Layout"]


@attrs.frozen
class _Text:
    """A response as ids, their concatenated text and each token's start offset (len(ids)+1 entries)."""

    ids: tuple[int, ...]
    text: str
    starts: list[int]

    @classmethod
    def of(cls, ids: tuple[int, ...], pieces: tuple[str, ...]) -> _Text:
        ps = [pieces[i] for i in ids]
        return cls(ids, "".join(ps), list(accumulate(map(len, ps), initial=0)))

    def token_at(self, char: int) -> int:
        """Index of the token whose text contains char offset ``char`` (the last one on ties)."""
        return bisect_right(self.starts, char) - 1


def parse(rollout: Rollout, *, ctx: TokenContext, layout: Layout = Layout.OBJECT_N) -> ParseResult:
    """Parse one rollout into its append-ready prefix and valid objects (see the module docstring)."""
    ids = rollout.completion_ids
    _check_ids(ids, ctx, rollout.sample_id)
    resp, im_end = _cut_im_end(_Text.of(ids, ctx.pieces), ctx)
    rules = SCAN_LAYOUTS[layout.value]
    sc = scan(resp.text, rules)
    if sc.open_end < 0:
        return _open_fallback(resp, im_end, ctx, rules)
    ends = list(sc.closed_ends)
    cut = ends[-1] if ends else sc.open_end
    prefix, retok, cut, fallback = _cut_prefix(resp, cut, ends, sc.open_end, ctx)
    if fallback is Fallback.CUT_RETOKENIZE_RESET:
        prefix = tuple(ctx.encode(rules.open_text))
        prefix_text = "".join(ctx.pieces[i] for i in prefix)
    else:
        prefix_text = resp.text[:cut]  # equal to the prefix ids' pieces: a re-encoded tail was checked
    valid, dropped = _validate_all(sc.objects, resp, cut, ctx)
    by_reason = dict.fromkeys(DropReason, 0)
    for d in dropped:
        by_reason[d.reason] += 1
    return ParseResult(
        response_ids=resp.ids,
        response_text=resp.text,
        prefix_ids=prefix,
        prefix_text=prefix_text,
        valid_objects=valid,
        dropped=dropped,
        dropped_by_reason=by_reason,
        truncated=sc.truncated or fallback is Fallback.CUT_RETOKENIZE_RESET,
        max_object_index=_max_index(sc, cut, rules),
        fallback=fallback,
        im_end=im_end,
        cut_retokenized=retok,
    )


def _check_ids(ids: tuple[int, ...], ctx: TokenContext, sample_id: str | None) -> None:
    if ids and (min(ids) < 0 or max(ids) >= ctx.vocab_size):
        bad = next(i for i in ids if not 0 <= i < ctx.vocab_size)
        where = f" (sample {sample_id})" if sample_id else ""
        raise TokenizerError(
            f"rollout{where} holds token id {bad}, outside the vocabulary of tokenizer {ctx.name!r} "
            f"(size {ctx.vocab_size}); the rollout backend and the learner must share one tokenizer"
        )


def _retokenize(piece_prefix: str, ctx: TokenContext) -> tuple[int, ...] | None:
    """Ids for ``piece_prefix`` whose pieces concatenate to exactly that text, else None."""
    try:
        ids = tuple(ctx.encode(piece_prefix))
    except TokenizerError:
        return None
    if any(not 0 <= i < ctx.vocab_size for i in ids):
        return None
    return ids if "".join(ctx.pieces[i] for i in ids) == piece_prefix else None


def _ids_before(t: _Text, cut: int, ctx: TokenContext) -> tuple[tuple[int, ...], int] | None:
    """Token ids whose text is exactly ``t.text[:cut]`` and the count of re-encoded tail tokens.

    None when the cut falls inside a token whose leading text does not re-encode exactly.
    """
    if cut <= 0:
        return (), 0
    if cut >= len(t.text):
        return t.ids, 0
    i = t.token_at(cut)
    offset = cut - t.starts[i]
    if offset == 0:
        return t.ids[:i], 0
    tail = _retokenize(t.text[t.starts[i] : cut], ctx)
    if tail is None:
        return None
    return t.ids[:i] + tail, len(tail)


def _cut_im_end(t: _Text, ctx: TokenContext) -> tuple[_Text, ImEndCut]:
    """Cut the response at the first ``<|im_end|>`` text: it and everything after it go."""
    at = t.text.find(IM_END)
    if at < 0:
        return t, ImEndCut.ABSENT
    kept = _ids_before(t, at, ctx)
    if kept is None:
        return _Text.of(t.ids[: t.token_at(at)], ctx.pieces), ImEndCut.TOKEN_DROPPED
    ids, retok = kept
    how = ImEndCut.RETOKENIZED if retok else ImEndCut.TOKEN_BOUNDARY
    if not retok:
        i = len(ids)
        return _Text(ids, t.text[:at], t.starts[: i + 1]), how
    return _Text.of(ids, ctx.pieces), how


def _cut_prefix(
    t: _Text, cut: int, ends: list[int], open_end: int, ctx: TokenContext
) -> tuple[tuple[int, ...], int, int, Fallback]:
    """Map the char cut to prefix ids, moving it back to earlier boundaries when re-encoding fails.

    Returns (prefix ids, re-encoded tail count, the char cut actually used, fallback).
    """
    kept = _ids_before(t, cut, ctx)
    if kept is not None:
        return kept[0], kept[1], cut, Fallback.NONE
    earlier = sorted({e for e in ends if e < cut} | {open_end}, reverse=True)
    for c in earlier:
        kept = _ids_before(t, c, ctx)
        if kept is not None:
            return kept[0], kept[1], c, Fallback.CUT_RETOKENIZE_FAILED
    return (), 0, 0, Fallback.CUT_RETOKENIZE_RESET


def _open_fallback(t: _Text, im_end: ImEndCut, ctx: TokenContext, layout: ScanLayout) -> ParseResult:
    """No opening container at all: the prefix is the layout's opening text; nothing was scanned."""
    prefix = tuple(ctx.encode(layout.open_text))
    return ParseResult(
        response_ids=t.ids,
        response_text=t.text,
        prefix_ids=prefix,
        prefix_text="".join(ctx.pieces[i] for i in prefix),
        valid_objects=(),
        dropped=(),
        dropped_by_reason=dict.fromkeys(DropReason, 0),
        truncated=True,
        max_object_index=None,
        fallback=Fallback.NO_OBJECTS_ARRAY if layout.relative_brackets else Fallback.NO_OPEN_BRACE,
        im_end=im_end,
        cut_retokenized=0,
    )


def _max_index(sc: ScanResult, cut: int, layout: ScanLayout) -> int | None:
    """Largest object index whose key lies in the prefix (§4.6), from marks the scan already made.

    objects_array has no keys: the largest 1-based position of an object started before the cut.
    """
    if layout.name == "object_n":
        marks = [n for pos, n in sc.key_marks if pos < cut]
    else:
        marks = [o.index for o in sc.objects if o.start < cut]
    return max(marks) if marks else None


def _validate_all(
    objects: tuple[ScannedObject, ...], t: _Text, cut: int, ctx: TokenContext
) -> tuple[tuple[ParsedObject, ...], tuple[DroppedObject, ...]]:
    coord_idx = [i for i, tid in enumerate(t.ids) if tid in ctx.coord_id_to_bin]
    coord_starts = [t.starts[i] for i in coord_idx]
    valid: list[ParsedObject] = []
    dropped: list[DroppedObject] = []
    for obj in objects:
        end = obj.end if obj.end >= 0 else len(t.text)
        token_span = (t.token_at(obj.start), t.token_at(max(end - 1, obj.start)) + 1)
        indices = captured_indices(obj, coord_starts, coord_idx)
        out = _validate(obj, t.text, cut, indices)
        if isinstance(out, DropReason):
            dropped.append(DroppedObject(obj.key, obj.index, out, (obj.start, end), token_span))
            continue
        desc, geom = out
        bins = tuple(ctx.coord_id_to_bin[t.ids[i]] for i in indices)
        valid.append(ParsedObject(obj.key, obj.index, desc, geom, indices, bins, (obj.start, end), token_span))
    return tuple(valid), tuple(dropped)


def _validate(obj: ScannedObject, text: str, cut: int, indices: tuple[int, ...]) -> DropReason | tuple[str, str]:
    """Strict per-object checks in the order of §4.5; the first failing check names the reason."""
    if obj.end < 0 or obj.end > cut:
        return DropReason.KEY_INVALID
    try:
        value = json.loads(text[obj.start : obj.end])
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting in a generated value
        return DropReason.KEY_INVALID
    if not isinstance(value, dict):
        return DropReason.KEY_INVALID
    desc = value.get("desc")
    if not isinstance(desc, str) or not desc.strip():
        return DropReason.MISSING_DESC
    others = [k for k in value if k != "desc"]
    if not others:
        return DropReason.MISSING_GEOM
    geoms = [k for k in others if k in ("bbox_2d", "poly")]
    if not geoms:
        return DropReason.UNKNOWN_GEOM
    if len(geoms) > 1 or len(others) > 1:
        return DropReason.KEY_INVALID
    geom = geoms[0]
    reason = _check_geometry(geom, value[geom], indices)
    return reason if reason is not None else (desc.strip(), geom)


def _flatten(value: object) -> list[object] | None:
    """A flat list or a list of [x, y] pairs -> flat values; any other shape -> None."""
    if not isinstance(value, list):
        return None
    flat: list[object] = []
    for item in value:
        if isinstance(item, list):
            if len(item) != 2:
                return None
            flat.extend(item)
        elif isinstance(item, dict):
            return None
        else:
            flat.append(item)
    return flat if len(flat) % 2 == 0 else None


def _check_geometry(geom: str, value: object, indices: tuple[int, ...]) -> DropReason | None:
    flat = _flatten(value)
    if flat is None:
        return DropReason.WRONG_ARITY
    bins = [parse_coord_token(v.strip()) if isinstance(v, str) else None for v in flat]
    if any(b is None for b in bins):
        return DropReason.NON_COORD_TOKEN
    n = len(indices)
    if geom == "bbox_2d":
        if n != 4 or len(bins) != 4:
            return DropReason.WRONG_ARITY
        x1, y1, x2, y2 = bins
        return DropReason.BBOX_INVALID if x2 < x1 or y2 < y1 else None
    if n < 6 or n % 2 or n != len(bins):
        return DropReason.WRONG_ARITY
    return None
