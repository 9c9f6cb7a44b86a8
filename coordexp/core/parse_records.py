"""Records of the Parse transition: what goes in (``Rollout``) and what comes out (``ParseResult``).

Kept apart from the scanner so that downstream transitions (match, target, telemetry) can import
the records without pulling in parsing code, and so the records stay readable on one screen.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from coordexp.core.keys import GeomType


class DropReason(enum.StrEnum):
    """Why a scanned object was excluded. Closed set: telemetry reports one counter per value."""

    KEY_INVALID = "key_invalid"
    MISSING_DESC = "missing_desc"
    MISSING_GEOM = "missing_geom"
    UNKNOWN_GEOM = "unknown_geom"
    WRONG_ARITY = "wrong_arity"
    NON_COORD_TOKEN = "non_coord_token"
    BBOX_INVALID = "bbox_invalid"


class Fallback(enum.StrEnum):
    """How the append-ready prefix was obtained when the normal cut was not possible.

    Every value other than ``none`` is a degraded path; it is a field (not a log line) so the
    telemetry can count it per step.
    """

    NONE = "none"
    # No root ``{`` (object_n layout): the prefix is the tokens of ``{``.
    NO_OPEN_BRACE = "no_open_brace"
    # No ``"objects": [`` array (objects_array layout): the prefix is the tokens of ``{"objects": [``.
    NO_OBJECTS_ARRAY = "no_objects_array"
    # The cut fell inside a token whose leading part does not re-tokenize to the same text (legacy
    # bug W11 raised here); the cut moved back to an earlier object boundary or the opening brace.
    CUT_RETOKENIZE_FAILED = "cut_retokenize_failed"
    # ... and no earlier boundary could be cut either: the prefix is the layout's opening text.
    CUT_RETOKENIZE_RESET = "cut_retokenize_reset"


class ImEndCut(enum.StrEnum):
    """Whether and how the response was cut at the first ``<|im_end|>`` text."""

    ABSENT = "absent"
    # The marker starts on a token boundary (the usual case: it is one special token).
    TOKEN_BOUNDARY = "token_boundary"
    # It starts inside a token; the token's leading text was re-tokenized exactly.
    RETOKENIZED = "retokenized"
    # It starts inside a token whose leading text does not re-tokenize exactly: that token is
    # dropped whole (a few characters lost before the marker) instead of crashing the step.
    TOKEN_DROPPED = "token_dropped"


def _span(value: tuple[int, int]) -> tuple[int, int]:
    start, end = value
    if not 0 <= start <= end:
        raise ValueError(f"span must satisfy 0 <= start <= end, got {value}")
    return (int(start), int(end))


@attrs.frozen
class Rollout:
    """One generated completion, token-in/token-out, as every rollout backend returns it."""

    completion_ids: tuple[int, ...] = attrs.field(converter=tuple)  # assistant tokens only
    prompt_ids: tuple[int, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    finish_reason: str | None = None  # backend's word: "stop", "length", "repeat", ...
    sample_id: str | None = None  # for error messages and dumps


@attrs.frozen
class ParsedObject:
    """A predicted object that passed strict validation."""

    key: str  # "object_7" (object_n layout) or "objects[6]" (objects_array layout)
    index: int  # N of object_N, or the 1-based array position
    desc: str  # stripped
    geom_type: GeomType = attrs.field(converter=GeomType)
    coord_token_indices: tuple[int, ...]  # assistant-local token idx into response_ids
    coord_bins: tuple[int, ...]  # norm1000, same order (bbox: x1 y1 x2 y2; poly: x y x y ...)
    value_span: tuple[int, int] = attrs.field(converter=_span)  # [start, end) bytes of the response
    token_span: tuple[int, int] = attrs.field(converter=_span)  # [start, end) token idx in response_ids


@attrs.frozen
class DroppedObject:
    """A scanned object that failed validation (or lies past the cut); kept for inspection."""

    key: str
    index: int | None
    reason: DropReason
    value_span: tuple[int, int] = attrs.field(converter=_span)  # [start, end) bytes; an unclosed value runs to the end
    token_span: tuple[int, int] = attrs.field(converter=_span)  # [start, end) token idx in response_ids


@attrs.frozen
class ParseResult:
    """Everything downstream needs from one rollout: the append-ready prefix and the valid objects.

    ``prefix_ids`` equals ``response_ids[:k]`` followed by ``cut_retokenized`` re-encoded tokens
    (0 unless the cut fell inside a fused token such as ``}}``), except when ``fallback`` is
    ``no_open_brace`` / ``no_objects_array`` / ``cut_retokenize_reset`` (then it is the layout's
    opening text).

    Spans (``value_span``) are byte offsets into the response's exact bytes,
    ``ctx.bytes_of(response_ids)`` (``coordexp.core.text.TokenText``): a byte-level tokenizer splits
    characters, so only bytes say where a token starts. The texts are those bytes decoded once.
    """

    response_ids: tuple[int, ...]  # after the <|im_end|> cut
    response_text: str  # the bytes of response_ids decoded (invalid bytes shown as U+FFFD)
    prefix_ids: tuple[int, ...]
    prefix_text: str  # the bytes of prefix_ids decoded
    valid_objects: tuple[ParsedObject, ...]  # appearance order, never sorted
    dropped: tuple[DroppedObject, ...]  # appearance order
    dropped_by_reason: Mapping[DropReason, int]  # every DropReason, zeros included
    truncated: bool
    max_object_index: int | None  # over every object key in the prefix, dropped or non-dict included
    fallback: Fallback
    im_end: ImEndCut
    cut_retokenized: int  # number of re-encoded tokens at the end of prefix_ids

    @property
    def valid(self) -> tuple[int, ...]:
        """Indices of the valid objects in appearance order (how the catalogue states results)."""
        return tuple(o.index for o in self.valid_objects)

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)

    @property
    def im_end_cut(self) -> bool:
        return self.im_end is not ImEndCut.ABSENT
