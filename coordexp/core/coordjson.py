"""CoordJSON: the answer format, its serializer and the FN append fragment.

The model answers with ONE JSON object whose coordinates are quoted coord tokens. Two layouts:
- ``object_n`` (the legacy default): ``{"object_1": {"desc": ..., "bbox_2d": [...]}, ...}``;
- ``objects_array``: ``{"objects": [{"desc": ..., "bbox_2d": [...]}, ...]}``.
Text is produced with ``json.dumps(..., ensure_ascii=False, separators=(", ", ": "))`` semantics, so
the GT answer, the FN append and the model's own rollouts share one byte-exact format; Parse, Match
and BuildTarget depend on that, which is why it lives in one place. Descs are written in Unicode NFC,
the form Qwen's tokenizer normalises to, so the ids of an append decode to exactly its text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence

import attrs

from coordexp.core.coords import coord_token
from coordexp.core.keys import ARRAY_KEY, GeomType, Layout
from coordexp.core.scan import SCAN_LAYOUTS, ScanResult, scan
from coordexp.errors import AppendError

__all__ = [
    "ARRAY_KEY", "SEPARATORS", "GTObject", "GeomType", "Layout", "append_start_index", "dumps",
    "object_value", "serialize", "serialize_append",
]

SEPARATORS = (", ", ": ")


@attrs.frozen
class GTObject:
    """One object to serialize (a GT object, or an FN object to append).

    Arity is not checked here on purpose: SerializeAppend must see a malformed bbox to skip it
    (reference §6.2 rule 6); records built from data go through ``coordexp.data.jsonl``, which checks.
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
    return {"desc": unicodedata.normalize("NFC", obj.desc), obj.geom_type.value: geometry}


def serialize(objects: Sequence[GTObject], *, layout: Layout = Layout.OBJECT_N) -> str:
    """The GT answer text; objects are keyed ``object_1..N`` in the given order (empty -> ``{}``)."""
    if layout is Layout.OBJECTS_ARRAY:
        return dumps({ARRAY_KEY: [object_value(o) for o in objects]})
    return dumps({f"object_{n}": object_value(o) for n, o in enumerate(objects, start=1)})


# --------------------------------------------------------------------------------------------------
# SerializeAppend
# --------------------------------------------------------------------------------------------------


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
    """The text to put after a rollout prefix so that prefix + text is one CoordJSON answer.

    Rules are the legacy SerializeAppend (reference §6.2): the decision is made on the
    right-stripped prefix, which must be append-ready; the leading ``", "`` is emitted only when
    the prefix already holds an entry and does not end with ``,``; a bbox without exactly 4 points
    is skipped without consuming an index. ``start_index`` numbers ``object_N`` keys and is not
    used by the ``objects_array`` layout, whose entries carry no index.

    "Append-ready" is decided by Parse's own scanner (``coordexp.core.scan``), so every prefix Parse
    or the prefix policy keeps is accepted, and the appended entries are read back by Parse as
    entries of the same root object. Text before the root ``{`` (prose kept by Parse) is allowed; it
    is context, not part of the JSON.

    One deliberate difference: "holds an entry" means any key of the root object, where the legacy
    counted only ``object_N`` keys. They differ only on prefixes Parse never keeps (a root key that
    is not ``object_N``), and there the legacy fragment lacked its comma and made invalid JSON.
    """
    tail = prefix_text.rstrip()
    state = _check_append_ready(tail, layout)
    last = tail[-1]
    values = [object_value(o) for o in fn_objects if _appendable(o)]
    if layout is Layout.OBJECT_N:
        entries = [f'"object_{n}": {dumps(v)}' for n, v in enumerate(values, start=start_index)]
        has_entries, close = state.root_keys > 0, "}"
    else:
        entries = [dumps(v) for v in values]
        has_entries, close = state.array_items > 0, "]}"
        if not state.in_entry_list:  # bare "{": open the array first
            return f'"{ARRAY_KEY}": [' + ", ".join(entries) + close
    if not entries:
        if last == ",":
            raise AppendError("rollout prefix ends with ',' but FN set is empty; invalid JSON")
        return close
    lead = ", " if has_entries and last != "," else ""
    return lead + ", ".join(entries) + close


def _appendable(obj: GTObject) -> bool:
    return obj.geom_type is not GeomType.BBOX or len(obj.points) == 4


def _check_append_ready(tail: str, layout: Layout) -> ScanResult:
    """Raise AppendError (legacy messages) unless ``tail`` ends inside the open answer container."""
    if not tail:
        raise AppendError("empty rollout prefix is not append-ready")
    allowed = "{}," if layout is Layout.OBJECT_N else "{}[,"
    if tail[-1] not in allowed:
        raise AppendError(f"rollout prefix is not append-ready; last_char={tail[-1]!r}")
    state = scan(tail.encode("utf-8"), SCAN_LAYOUTS[layout])
    if not state.roots:
        raise AppendError("rollout prefix missing top-level '{'")
    if state.in_string:
        raise AppendError("rollout prefix ends inside a JSON string; it is not append-ready")
    if state.in_entry_list:
        return state
    if layout is Layout.OBJECT_N:
        raise AppendError("rollout prefix must end with an open top-level object before FN append")
    if not (state.depth == 1 and state.roots == 1 and state.root_keys == 0 and tail[-1] == "{"):
        raise AppendError(
            f'rollout prefix must end inside the top-level "{ARRAY_KEY}" array (or right after the '
            "opening '{') before FN append"
        )
    return state
