"""CoordJSON: the answer format, its serializer, the FN append fragment and desc value spans.

The model answers with ONE JSON object whose coordinates are quoted coord tokens. Two layouts:
- ``object_n`` (the legacy default): ``{"object_1": {"desc": ..., "bbox_2d": [...]}, ...}``;
- ``objects_array``: ``{"objects": [{"desc": ..., "bbox_2d": [...]}, ...]}``.
Text is produced with ``json.dumps(..., ensure_ascii=False, separators=(", ", ": "))`` semantics, so
the GT answer, the FN append and the model's own rollouts share one byte-exact format; Parse, Match
and BuildTarget depend on that, which is why it lives in one place.

Also here: the JSONL object -> ``GTObject`` rules of the data contract (reference §1.2), because
they decide what can be serialized.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence

import attrs

from coordexp.core.coords import coord_token, to_bins
from coordexp.core.tokens import TokenContext
from coordexp.errors import AppendError, DataError

SEPARATORS = (", ", ": ")
ARRAY_KEY = "objects"


class GeomType(enum.StrEnum):
    """Geometry key of an object. A ``StrEnum`` so that records holding the plain string compare equal."""

    BBOX = "bbox_2d"
    POLY = "poly"


class Layout(enum.Enum):
    OBJECT_N = "object_n"
    OBJECTS_ARRAY = "objects_array"


@attrs.frozen
class GTObject:
    """One object to serialize (a GT object, or an FN object to append).

    Arity is not checked here on purpose: SerializeAppend must see a malformed bbox to skip it
    (reference §6.2 rule 6); records built from data go through ``gt_object_from_dict``, which checks.
    """

    index: int  # 1-based position in the sample's object order
    desc: str
    geom_type: GeomType
    points: tuple[int, ...] = attrs.field(converter=tuple)  # norm1000 bins, flat x1, y1, x2, y2, ...


def dumps(payload: object) -> str:
    """The one JSON rendering: single line, ``", "`` and ``": "``, non-ASCII kept raw."""
    return json.dumps(payload, ensure_ascii=False, separators=SEPARATORS)


def object_value(obj: GTObject) -> dict[str, object]:
    """``{"desc": ..., <geom>: ...}`` with desc first; bbox flat, poly as ``[x, y]`` pairs of tokens."""
    tokens = [coord_token(k) for k in obj.points]
    if obj.geom_type is GeomType.POLY:
        geometry: list = [tokens[i : i + 2] for i in range(0, len(tokens), 2)]
    else:
        geometry = tokens
    return {"desc": obj.desc, obj.geom_type.value: geometry}


def serialize(objects: Sequence[GTObject], *, layout: Layout = Layout.OBJECT_N) -> str:
    """The GT answer text; objects are keyed ``object_1..N`` in the given order (empty -> ``{}``)."""
    if layout is Layout.OBJECTS_ARRAY:
        return dumps({ARRAY_KEY: [object_value(o) for o in objects]})
    return dumps({f"object_{n}": object_value(o) for n, o in enumerate(objects, start=1)})


# --------------------------------------------------------------------------------------------------
# SerializeAppend
# --------------------------------------------------------------------------------------------------


@attrs.frozen
class PrefixShape:
    """What a string/escape-aware scan of an append prefix found.

    ``open_containers`` is the stack of still-open brackets (``"{["`` = inside the root's array).
    """

    open_containers: str
    in_string: bool
    root_keys: tuple[str, ...]  # keys of the root object, in order
    array_items: int  # objects opened directly inside the root's "objects" array


def append_start_index(max_prefix_index: int | None) -> int:
    """First ``object_N`` number for FN objects: after the largest index the prefix used (or 1)."""
    return 1 if max_prefix_index is None else max_prefix_index + 1


def serialize_append(
    fn_objects: Sequence[GTObject],
    *,
    start_index: int,
    prefix_text: str,
    layout: Layout = Layout.OBJECT_N,
) -> str:
    """The text to put after a rollout prefix so that prefix + text is one valid CoordJSON answer.

    Rules are the legacy SerializeAppend (reference §6.2): the decision is made on the
    right-stripped prefix, which must be append-ready; the leading ``", "`` is emitted only when
    the prefix already holds an entry and does not end with ``,``; a bbox without exactly 4 points
    is skipped without consuming an index. ``start_index`` numbers ``object_N`` keys and is not
    used by the ``objects_array`` layout, whose entries carry no index.

    One deliberate difference: "holds an entry" means any key of the root object, where the legacy
    counted only ``object_N`` keys. They differ only on prefixes Parse never keeps (a root key that
    is not ``object_N``), and there the legacy fragment lacked its comma and made invalid JSON.
    """
    tail = prefix_text.rstrip()
    shape = _check_append_ready(tail, layout)
    last = tail[-1]
    values = [object_value(o) for o in fn_objects if _appendable(o)]
    if layout is Layout.OBJECT_N:
        entries = [f'"object_{n}": {dumps(v)}' for n, v in enumerate(values, start=start_index)]
        has_entries, close = bool(shape.root_keys), "}"
    else:
        entries = [dumps(v) for v in values]
        has_entries, close = shape.array_items > 0, "]}"
        if shape.open_containers == "{":  # bare "{": open the array first
            return f'"{ARRAY_KEY}": [' + ", ".join(entries) + close
    if not entries:
        if last == ",":
            raise AppendError("rollout prefix ends with ',' but FN set is empty; invalid JSON")
        return close
    lead = ", " if has_entries and last != "," else ""
    return lead + ", ".join(entries) + close


def _appendable(obj: GTObject) -> bool:
    return obj.geom_type is not GeomType.BBOX or len(obj.points) == 4


def _check_append_ready(tail: str, layout: Layout) -> PrefixShape:
    """Raise AppendError (legacy messages) unless ``tail`` ends inside the open answer container."""
    if not tail:
        raise AppendError("empty rollout prefix is not append-ready")
    allowed = "{}," if layout is Layout.OBJECT_N else "{}[,"
    if tail[-1] not in allowed:
        raise AppendError(f"rollout prefix is not append-ready; last_char={tail[-1]!r}")
    if not tail.lstrip().startswith("{"):
        raise AppendError("rollout prefix missing top-level '{'")
    shape = scan_prefix(tail)
    if shape.in_string:
        raise AppendError("rollout prefix ends inside a JSON string; it is not append-ready")
    if layout is Layout.OBJECT_N and shape.open_containers != "{":
        raise AppendError("rollout prefix must end with an open top-level object before FN append")
    if layout is Layout.OBJECTS_ARRAY and not _in_objects_array(shape, tail):
        raise AppendError(
            f'rollout prefix must end inside the top-level "{ARRAY_KEY}" array (or right after the '
            "opening '{') before FN append"
        )
    return shape


def _in_objects_array(shape: PrefixShape, tail: str) -> bool:
    if shape.open_containers == "{":
        return not shape.root_keys and tail[-1] == "{"
    return shape.open_containers == "{[" and shape.root_keys[-1:] == (ARRAY_KEY,)


def scan_prefix(text: str) -> PrefixShape:
    """One string/escape-aware pass recording open brackets, root keys and array items.

    A closing bracket that does not match (or closes the root before the end) makes the prefix
    not append-ready: it raises the legacy "open top-level object" error.
    """
    stack: list[str] = []
    expect_key: list[bool] = []  # per open '{': is the next string a key?
    keys: list[str] = []
    items = 0
    for m in _TOKEN.finditer(text):
        ch = m.group(0)
        if ch.startswith('"'):
            if m.group(2) is None:
                return PrefixShape("".join(stack), True, tuple(keys), items)
            if len(stack) == 1 and expect_key[0]:
                keys.append(m.group(1))
        elif ch in "{[":
            if stack == ["{", "["] and ch == "{":
                items += 1
            stack.append(ch)
            expect_key.append(ch == "{")
        elif ch in "}]":
            closes_root_early = len(stack) == 1 and text[m.end() :].strip()
            if not stack or _PAIRS[stack[-1]] != ch or closes_root_early:
                raise AppendError("rollout prefix must end with an open top-level object before FN append")
            stack.pop()
            expect_key.pop()
        elif stack and stack[-1] == "{":
            expect_key[-1] = ch == ","
    return PrefixShape("".join(stack), False, tuple(keys), items)


# A whole JSON string (group 2 is None when it is unterminated) or one structural character.
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)(")?|[{}\[\],:]', re.S)
_PAIRS = {"{": "}", "[": "]"}


# --------------------------------------------------------------------------------------------------
# desc value spans
# --------------------------------------------------------------------------------------------------

_DESC_OPEN = re.compile(r'"desc"\s*:\s*"')
_STRING_BODY = re.compile(r'(?:[^"\\]|\\.)*', re.S)


def desc_value_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Char spans ``[start, end)`` of every desc value (between its quotes, escapes honoured).

    An unterminated value (a truncated rollout) runs to the end of the text: those characters are
    desc text all the same.
    """
    spans = []
    pos = 0
    while (m := _DESC_OPEN.search(text, pos)) is not None:
        end = _STRING_BODY.match(text, m.end()).end()  # always matches (possibly empty)
        spans.append((m.end(), end))
        pos = end + 1
    return tuple(spans)


def token_overlaps(
    ids: Sequence[int], ctx: TokenContext, spans: Sequence[tuple[int, int]]
) -> tuple[int, ...]:
    """Indices of the tokens (in ``ids``) whose decoded chars overlap any span.

    Works on the piece table, so a token fused across a quote boundary (``' "dog'``) counts as a
    whole: it must not be supervised as structure when part of it is desc text.
    """
    out = []
    start = 0
    for i, tid in enumerate(ids):
        end = start + len(ctx.piece(tid))
        if end > start and any(s < end and start < e for s, e in spans):
            out.append(i)
        start = end
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# data contract: JSONL object dict -> GTObject
# --------------------------------------------------------------------------------------------------

_BAD_DESC_PARTS = ("\n", "\r", "\t", " ,", ", ", " /", "/ ", " :", ": ", "  ")


def gt_object_from_dict(obj: Mapping[str, object], *, index: int, where: str = "record") -> GTObject:
    """Validate one data object (reference §1.2) and build its record; ``index`` is 1-based.

    Errors name ``where`` and the object index, so a bad line in a large JSONL file can be found.
    """
    at = f"{where}: objects[{index - 1}] (object_{index})"
    if not isinstance(obj, Mapping):
        raise DataError(f"{at}: an object must be a JSON object, got {type(obj).__name__}")
    if obj.get("line") is not None or obj.get("line_points") is not None:
        raise DataError(f"{at}: line geometry is not supported; use bbox_2d or poly")
    geoms = [g for g in GeomType if obj.get(g.value) is not None]
    if len(geoms) != 1:
        found = "both bbox_2d and poly" if geoms else "neither bbox_2d nor poly"
        raise DataError(f"{at}: exactly one geometry key is required, found {found}")
    geom = geoms[0]
    desc = _check_desc(obj.get("desc"), at)
    return GTObject(index=index, desc=desc, geom_type=geom, points=_check_points(obj, geom, at))


def _check_desc(desc: object, at: str) -> str:
    if not isinstance(desc, str) or not desc.strip():
        raise DataError(f"{at}: desc must be a non-empty string, got {desc!r}")
    bad = [p for p in _BAD_DESC_PARTS if p in desc]
    if bad:
        raise DataError(
            f"{at}: desc {desc!r} contains {bad[0]!r}; descs may not hold newlines, tabs, double spaces "
            "or a space next to ',', '/' or ':' (they would blur the JSON separators)"
        )
    return desc


def _check_points(obj: Mapping[str, object], geom: GeomType, at: str) -> tuple[int, ...]:
    raw = obj[geom.value]
    if not isinstance(raw, list | tuple):
        raise DataError(f"{at}: {geom.value} must be a list, got {type(raw).__name__}")
    try:
        points = to_bins(raw)
    except ValueError as exc:
        raise DataError(
            f"{at}: {geom.value}: {exc} (coordinates must be norm1000 coord tokens or ints)"
        ) from exc
    if geom is GeomType.BBOX and len(points) != 4:
        raise DataError(f"{at}: bbox_2d needs 4 values [x1, y1, x2, y2], got {len(points)}")
    if geom is GeomType.POLY:
        if len(points) < 6 or len(points) % 2:
            raise DataError(
                f"{at}: poly needs an even number of values, at least 6 (3 vertices), got {len(points)}"
            )
        declared = obj.get("poly_points")
        if declared is not None and declared != len(points) // 2:
            raise DataError(f"{at}: poly_points={declared!r} but poly has {len(points) // 2} vertices")
    return points


def gt_objects_from_record(record: Mapping[str, object], *, where: str = "record") -> tuple[GTObject, ...]:
    """All objects of one JSONL record, in record order; checks width/height for pixel recovery."""
    for dim in ("width", "height"):
        value = record.get(dim)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataError(
                f"{where}: record with coord tokens must provide width and height for pixel recovery "
                f"({dim}={value!r}, expected a positive int); add the image's pixel size to the JSONL line"
            )
    objects = record.get("objects")
    if not isinstance(objects, list):
        raise DataError(f"{where}: 'objects' must be a list (it may be empty), got {type(objects).__name__}")
    return tuple(gt_object_from_dict(o, index=i, where=where) for i, o in enumerate(objects, start=1))
