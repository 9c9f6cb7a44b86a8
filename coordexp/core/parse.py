"""Parse: a rollout's token ids -> the append-ready prefix and the strictly valid objects.

Strict and token-aligned (reference §4): no JSON repair, no re-serialization, no key sorting. The
kept prefix is a token prefix of the rollout; only the single token that straddles the cut may be
re-encoded (a fused ``}}`` or ``},``), and that is checked byte for byte (``coordexp.core.text``).

Steps, each in one pass:
1. the response's exact bytes from ``ctx.piece_bytes`` (no per-call decode), so byte offsets and
   token indices line up, and multi-byte characters split over tokens come out whole;
2. hard stop at the first ``<|im_end|>`` (also when it starts inside a token);
3. ``scan`` (``coordexp.core.scan``) for object spans, coord capture windows, object keys and the
   append-ready cut points;
4. cut after the last object value that closed in the root's entry list (or right after the opening
   container) and map the cut to tokens;
5. validate each scanned object in the order of §4.5.

Every rollout yields an append-ready prefix: SerializeAppend can always continue it (the chain
parse -> prefix policy -> match -> build_target never fails on a rollout). Degraded paths never
raise and never pass silently; each is a field of the result:
- no root ``{``: the prefix is ``ctx.encode("{")`` and ``truncated`` is true (``Fallback.NO_OPEN_BRACE``);
- a cut inside a token whose leading bytes do not re-encode to the same bytes (legacy W11 raised
  here): the cut moves back to the previous cut point, then to the opening brace
  (``CUT_RETOKENIZE_FAILED``), and if none works the prefix is the opening text
  (``CUT_RETOKENIZE_RESET``); objects past the moved cut are dropped as ``key_invalid``;
- the same for ``<|im_end|>`` inside a token: the straddling token is dropped (``ImEndCut.TOKEN_DROPPED``).

What the prefix keeps, and what it cannot keep:
- Text before the root ``{`` (prose, a markdown fence) stays in the prefix as unsupervised context
  (P34); brackets and braces in it do not count.
- A second root object ``{A} {B}``: the answer is the first root; B's objects are scanned and
  dropped as ``key_invalid`` (they lie past the cut), never cut into.
- An object whose bracket never closed (``[... }``): no cut point lies after it, so it and every
  later object are dropped as ``key_invalid``.

Legacy quirks kept so the catalogue scenarios hold:
- P32/P39: ``"object_N": <non-dict>`` leaves N pending, so the next depth-2 dict, whatever its key,
  becomes object_N; N still counts for ``max_object_index`` (FN numbering stays collision-free).
- P33: duplicate ``object_N`` keys are both kept.
- P38: a depth-2 dict under a non-``object_N`` key is ignored (no drop counted).
- Also: ``object_0`` and gaps are fine; whitespace around a coord string is accepted; a bbox written
  as two pairs is a bbox.
"""

from __future__ import annotations

import json

from coordexp.core.coords import parse_coord_token
from coordexp.core.keys import GeomType, Layout
from coordexp.core.parse_records import (
    DroppedObject,
    DropReason,
    Fallback,
    ImEndCut,
    ParsedObject,
    ParseResult,
    Rollout,
)
from coordexp.core.scan import (
    SCAN_LAYOUTS,
    ScanLayout,
    ScannedObject,
    captured_indices,
    cut_candidates,
    max_object_index,
    scan,
)
from coordexp.core.text import TokenText
from coordexp.core.tokens import IM_END, TokenContext
from coordexp.errors import TokenizerError

__all__ = ["parse", "Rollout", "ParseResult", "Layout"]

_IM_END = IM_END.encode()
_GEOMS = {g.value: g for g in GeomType}


def parse(rollout: Rollout, *, ctx: TokenContext, layout: Layout = Layout.OBJECT_N) -> ParseResult:
    """Parse one rollout into its append-ready prefix and valid objects (see the module docstring)."""
    ids = rollout.completion_ids
    _check_ids(ids, ctx, rollout.sample_id)
    resp, im_end = _cut_im_end(TokenText.of(ids, ctx), ctx)
    rules = SCAN_LAYOUTS[layout]
    sc = scan(resp.data, rules)
    if sc.open_end < 0:
        return _open_fallback(resp, im_end, ctx, rules)
    prefix, retok, cut, fallback = _cut_prefix(resp, cut_candidates(sc, len(resp.data)), ctx)
    if fallback is Fallback.CUT_RETOKENIZE_RESET:
        prefix = ctx.encode_fragment(rules.open_text)
        prefix_text = ctx.text_of(prefix)
    else:
        prefix_text = resp.data[:cut].decode("utf-8", errors="replace")  # the prefix ids' bytes, checked
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
        max_object_index=max_object_index(sc, cut),
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


def _cut_im_end(t: TokenText, ctx: TokenContext) -> tuple[TokenText, ImEndCut]:
    """Cut the response at the first ``<|im_end|>``: it and everything after it go."""
    at = t.data.find(_IM_END)
    if at < 0:
        return t, ImEndCut.ABSENT
    kept = t.cut(at, ctx)
    if kept is None:
        i = t.token_at(at)
        while i > 0 and 0x80 <= t.data[t.starts[i]] < 0xC0:
            i -= 1  # drop whole characters, never half of one
        return t.head(i), ImEndCut.TOKEN_DROPPED
    ids, retok = kept
    if not retok:
        return t.head(len(ids)), ImEndCut.TOKEN_BOUNDARY
    return TokenText.of(ids, ctx), ImEndCut.RETOKENIZED


def _cut_prefix(
    t: TokenText, candidates: list[int], ctx: TokenContext
) -> tuple[tuple[int, ...], int, int, Fallback]:
    """Map the latest cut point to prefix ids, moving back to earlier points when re-encoding fails.

    Returns (prefix ids, re-encoded tail count, the byte cut actually used, fallback).
    """
    for n, cut in enumerate(candidates):
        kept = t.cut(cut, ctx)
        if kept is not None:
            return kept[0], kept[1], cut, Fallback.NONE if n == 0 else Fallback.CUT_RETOKENIZE_FAILED
    return (), 0, 0, Fallback.CUT_RETOKENIZE_RESET


def _open_fallback(t: TokenText, im_end: ImEndCut, ctx: TokenContext, layout: ScanLayout) -> ParseResult:
    """No opening container at all: the prefix is the layout's opening text; nothing was scanned."""
    prefix = ctx.encode_fragment(layout.open_text)
    return ParseResult(
        response_ids=t.ids,
        response_text=t.text,
        prefix_ids=prefix,
        prefix_text=ctx.text_of(prefix),
        valid_objects=(),
        dropped=(),
        dropped_by_reason=dict.fromkeys(DropReason, 0),
        truncated=True,
        max_object_index=None,
        fallback=Fallback.NO_OBJECTS_ARRAY if layout.layout is Layout.OBJECTS_ARRAY else Fallback.NO_OPEN_BRACE,
        im_end=im_end,
        cut_retokenized=0,
    )


def _validate_all(
    objects: tuple[ScannedObject, ...], t: TokenText, cut: int, ctx: TokenContext
) -> tuple[tuple[ParsedObject, ...], tuple[DroppedObject, ...]]:
    coord_map, ids = ctx.coord_id_to_bin, t.ids
    coord_idx = [i for i, tid in enumerate(ids) if tid in coord_map]
    coord_starts = [t.starts[i] for i in coord_idx]
    valid: list[ParsedObject] = []
    dropped: list[DroppedObject] = []
    for obj in objects:
        end = obj.end if obj.end >= 0 else len(t.data)
        token_span = (t.token_at(obj.start), t.token_at(max(end - 1, obj.start)) + 1)
        indices = captured_indices(obj, coord_starts, coord_idx)
        out = _validate(obj, t.data, cut, indices)
        if isinstance(out, DropReason):
            dropped.append(DroppedObject(obj.key, obj.index, out, (obj.start, end), token_span))
            continue
        desc, geom = out
        bins = tuple([coord_map[ids[i]] for i in indices])
        valid.append(ParsedObject(obj.key, obj.index, desc, geom, indices, bins, (obj.start, end), token_span))
    return tuple(valid), tuple(dropped)


def _validate(
    obj: ScannedObject, data: bytes, cut: int, indices: tuple[int, ...]
) -> DropReason | tuple[str, GeomType]:
    """Strict per-object checks in the order of §4.5; the first failing check names the reason."""
    if obj.end < 0 or obj.end > cut:
        return DropReason.KEY_INVALID
    try:
        # bytes in: invalid UTF-8 is a UnicodeDecodeError, a ValueError like any other JSON error
        value = json.loads(data[obj.start : obj.end])
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting in a generated value
        return DropReason.KEY_INVALID
    if not isinstance(value, dict):
        return DropReason.KEY_INVALID
    desc = value.get("desc")
    if not isinstance(desc, str) or not desc.strip():
        return DropReason.MISSING_DESC
    if not _is_text(desc):
        return DropReason.KEY_INVALID
    others = [k for k in value if k != "desc"]
    if not others:
        return DropReason.MISSING_GEOM
    geoms = [_GEOMS[k] for k in others if k in _GEOMS]
    if not geoms:
        return DropReason.UNKNOWN_GEOM
    if len(geoms) > 1 or len(others) > 1:
        return DropReason.KEY_INVALID
    geom = geoms[0]
    reason = _check_geometry(geom, value[geom.value], indices)
    return reason if reason is not None else (desc.strip(), geom)


def _is_text(s: str) -> bool:
    """False for a string with an unpaired surrogate (``"\\ud83d"``): JSON allows it, text does not."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flatten(value: object) -> list[object] | None:
    """A flat list, or a list whose items are all ``[x, y]`` pairs -> flat values; else None.

    A list mixing flat values and pairs (``[C, C, [C, C]]``) is neither, hence None (reference §4.5
    step 7; the legacy flattened it).
    """
    if not isinstance(value, list):
        return None
    kinds = {type(item) for item in value}  # json.loads makes plain lists and dicts only
    if dict in kinds:
        return None
    if list in kinds:
        if len(kinds) > 1 or any(len(item) != 2 for item in value):
            return None
        flat = [v for item in value for v in item]
    else:
        flat = value
    return flat if len(flat) % 2 == 0 else None


def _check_geometry(geom: GeomType, value: object, indices: tuple[int, ...]) -> DropReason | None:
    flat = _flatten(value)
    if flat is None:
        return DropReason.WRONG_ARITY
    bins = [parse_coord_token(v.strip()) if isinstance(v, str) else None for v in flat]
    if any(b is None for b in bins):
        return DropReason.NON_COORD_TOKEN
    n = len(indices)
    if geom is GeomType.BBOX:
        if n != 4 or len(bins) != 4:
            return DropReason.WRONG_ARITY
        x1, y1, x2, y2 = bins
        return DropReason.BBOX_INVALID if x2 < x1 or y2 < y1 else None
    if n < 6 or n % 2 or n != len(bins):
        return DropReason.WRONG_ARITY
    return None
