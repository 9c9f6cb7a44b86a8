"""The one JSON structure scanner: Parse, SerializeAppend, BuildTarget and the prefix policy read it.

It works on bytes (a rollout's joined token bytes, ``coordexp.core.text``), in one pass, and finds
where each predicted object's value starts and ends, which coord tokens sit in its geometry array,
which object keys appear, where the prefix may be cut so that an append continues it, and the state
the text ends in. It does not validate objects (``coordexp.core.parse`` does, after the cut).

Speed matters (a dense rollout has ~60 objects and ~2k tokens, parsed every step), so the scan
walks one regex over structural events only: a whole JSON string is one event (its content is only
looked at when it is a key), and the other events are the six bytes ``{ } [ ] , :``. Every other
reader of JSON structure in the core (the append-readiness check, desc value spans, the closing
brace of a target) uses the same event regex, so they agree on what is inside a string.

Rules (reference §4.3, with the corrections listed after them):
- object_n layout: a depth-1 key ``object_N`` is remembered as *pending* until the next depth-2
  dict, even across a non-dict value or another key, so ``{"object_4": 123, "foo": {...}}``
  attributes the ``foo`` dict to object_4 (P39, P32). A depth-2 dict with no pending key is
  ignored (P38).
- Keys, ``,`` and ``:`` are recognised only when no bracket is open inside the root (object_n; the
  legacy bracket depth is global), or at the bracket depth their dict opened at (objects_array).
- ``last_key`` is global across depths, so a nested dict's key can arm capture.
- Coord capture is a byte window: the geometry array's ``[`` to its matching ``]``; the coord tokens
  inside are found by bisecting the sorted start offsets of the response's coord tokens (coord
  pieces hold no structural byte, so a token starting inside the window was "seen while capture was
  active").

Corrections of the legacy scanner, each with a scenario:
- A key is matched on its raw bytes: ``"objec\\t_7"`` or ``"\\object_7"`` is not object 7 (the legacy
  unescaped first, and a JSON tab escape became the letter t).
- Two arrays under the same geometry key in one object: capture follows the last one, which is the
  one ``json.loads`` keeps and validation checks (the legacy captured the first).
- Brackets outside the root object (prose before it, text after it) do not count, and each root
  starts with no bracket open; a preamble ``[`` no longer hides every key of the answer.
- The append-ready cut points (``boundaries``) are the ends of object values that close with no
  other bracket open, inside the first root object. A second root ``{A} {B}``, or an object whose
  array never closed, is scanned (its objects are reported) but never cut into, so the kept prefix
  always continues as the first root's entry list.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator

import attrs

from coordexp.core.keys import ARRAY_KEY, GeomType, Layout

EVENT = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)(")?|[{}\[\],:]', re.S)
"""A whole JSON string (group 1 its raw content, group 2 None when unterminated) or one structural byte."""

_OBJECT_KEY = re.compile(rb"object_([0-9]+)")
_GEOMETRY = frozenset(g.value.encode() for g in GeomType)  # keys, as raw bytes
_ARRAY_KEY = ARRAY_KEY.encode()
_QUOTE, _COMMA, _COLON, _LBRACE, _RBRACE, _LBRACKET = 34, 44, 58, 123, 125, 91
_DESC = b"desc"

# capture states of one object
_NOT_ARMED, _ACTIVE, _DONE = 0, 1, 2


@attrs.frozen
class ScanLayout:
    """Scanner rules of one answer layout: where objects live, and the empty append-ready prefix.

    ``relative_brackets``: whether keys are recognised relative to the bracket depth at which their
    dict was opened (needed when objects sit inside an array) or only with no bracket open inside
    the root (the legacy object_n rule, kept for scenario parity).
    """

    layout: Layout
    open_text: str  # the fallback prefix when the opening container is missing
    relative_brackets: bool


OBJECT_N = ScanLayout(Layout.OBJECT_N, "{", relative_brackets=False)
OBJECTS_ARRAY = ScanLayout(Layout.OBJECTS_ARRAY, '{"objects": [', relative_brackets=True)
SCAN_LAYOUTS: dict[Layout, ScanLayout] = {lay.layout: lay for lay in (OBJECT_N, OBJECTS_ARRAY)}


class ScannedObject:
    """One object value as the scanner saw it (mutable while scanning, then read by validation)."""

    __slots__ = ("key", "index", "start", "end", "cap_state", "cap_target", "cap_from", "cap_to")

    def __init__(self, key: str, index: int, start: int) -> None:
        self.key = key
        self.index = index
        self.start = start  # byte offset of the value's "{"
        self.end = -1  # byte offset after its "}", -1 while unclosed
        self.cap_state = _NOT_ARMED
        self.cap_target = 0
        self.cap_from = 0  # capture window [cap_from, cap_to) in bytes
        self.cap_to = 0


@attrs.frozen
class ScanResult:
    """What one pass found; offsets are bytes into the scanned text."""

    layout: Layout
    objects: tuple[ScannedObject, ...]
    key_marks: tuple[tuple[int, int], ...]  # (offset of the key's closing quote, N), in order
    boundaries: tuple[int, ...]  # append-ready cut points: ends of object values, ascending
    open_end: int  # offset after the opening container ("{" or the objects "["), -1 if none
    root_start: int  # offset of the first root "{", -1 if none (text before it is a preamble)
    truncated: bool
    # the state the text ends in (what SerializeAppend checks)
    depth: int
    roots: int  # root objects opened
    in_string: bool
    in_entry_list: bool  # inside the first root's entry list (object_n: depth 1, no bracket open)
    root_keys: int  # keys of the first root object
    array_items: int  # objects opened inside the objects array


class IncrementalScanner:
    """State of one scan that can resume as more bytes arrive; ``scan`` runs it once over a whole text.

    The stop rules (``coordexp.core.repeat``) feed it a rollout token by token and read, between
    tokens: ``objects`` and ``key_marks`` (as in ``ScanResult``, growing), ``depth`` and ``bdepth``
    (braces and brackets open now) and ``expects_root_key()``. The other attributes are the scan's
    own. The hot loop lives in ``run`` and rare events go to small methods.
    """

    def __init__(self, layout: ScanLayout) -> None:
        self.array = layout.layout is Layout.OBJECTS_ARRAY
        self.relative = layout.relative_brackets
        self.depth = 0
        self.bdepth = 0
        self.expect = [False]  # expecting_key per brace depth (index = depth)
        self.base = [0]  # bracket depth at which keys count, per brace depth
        self.last_key: bytes | None = None
        self.pending: tuple[str, int] | None = None
        self.current: ScannedObject | None = None
        self.objects: list[ScannedObject] = []
        self.key_marks: list[tuple[int, int]] = []
        self.boundaries: list[int] = []
        self.open_end = -1
        self.root_start = -1
        self.roots = 0  # root objects opened so far
        self.root_closed = False  # the first root object has closed
        self.root_keys = 0
        self.array_level = 0  # bracket depth of the "objects" array, 0 when not inside it
        self.n_array = 0

    def run(self, data: bytes, start: int = 0) -> int:
        """Scan ``data[start:]``; returns the offset of an unterminated string's quote, -1 if none.

        That string is not consumed, so ``run(longer_data, offset)`` resumes the same scan when more
        bytes arrive: the stop rules (``coordexp.core.repeat``) scan a rollout token by token this way.
        """
        expect = self.expect
        for m in EVENT.finditer(data, start):
            pos = m.start()
            ch = data[pos]
            if ch == _QUOTE:
                if m.group(2) is None:
                    return pos
                depth = self.depth
                if expect[depth] and self.bdepth == self.base[depth]:
                    self._key(m.group(1), m.end() - 1)
            elif ch == _COMMA or ch == _COLON:
                depth = self.depth
                if depth and self.bdepth == self.base[depth]:
                    expect[depth] = ch == _COMMA
            elif ch == _LBRACE:
                self._open_brace(pos)
            elif ch == _RBRACE:
                self._close_brace(pos)
            elif ch == _LBRACKET:
                self._open_bracket(pos)
            else:
                self._close_bracket(pos)
        return -1

    def expects_root_key(self) -> bool:
        """Whether a string opening here is a key of the root object (after its ``{`` or a ``,``)."""
        return self.depth == 1 and self.bdepth == self.base[1] and self.expect[1]

    def _key(self, raw: bytes, quote_pos: int) -> None:
        self.last_key = raw
        if self.depth != 1:
            return
        if self.roots == 1 and not self.root_closed:
            self.root_keys += 1
        if not self.array and (m := _OBJECT_KEY.fullmatch(raw)) is not None:
            n = int(m.group(1))
            self.key_marks.append((quote_pos, n))
            self.pending = (raw.decode("ascii"), n)

    def _open_brace(self, pos: int) -> None:
        self.depth += 1
        if self.depth == 1:
            self.bdepth = 0  # brackets outside a root object do not count
            self.roots += 1
            if self.root_start < 0:
                self.root_start = pos
            if self.open_end < 0 and not self.array:
                self.open_end = pos + 1
        self.expect.append(True)
        self.base.append(self.bdepth if self.relative else 0)
        if self.depth == 2:
            self.current = self._start_object(pos)

    def _start_object(self, pos: int) -> ScannedObject | None:
        if self.array:
            if not self.array_level or self.bdepth != self.array_level:
                return None
            self.n_array += 1
            obj = ScannedObject(f"objects[{self.n_array - 1}]", self.n_array, pos)
        else:
            if self.pending is None:
                return None
            obj = ScannedObject(self.pending[0], self.pending[1], pos)
            self.pending = None
        self.last_key = None
        self.objects.append(obj)
        return obj

    def _close_brace(self, pos: int) -> None:
        cur = self.current
        if self.depth == 2 and cur is not None:
            cur.end = pos + 1
            if cur.cap_state == _ACTIVE:
                cur.cap_state, cur.cap_to = _DONE, pos
            if self._at_entry_level():
                self.boundaries.append(pos + 1)
            self.current = None
        if self.depth > 0:
            self.expect.pop()
            self.base.pop()
            self.depth -= 1
            if self.depth == 0:
                self.root_closed = True

    def _open_bracket(self, pos: int) -> None:
        if self.depth == 0:
            return
        self.bdepth += 1
        cur = self.current
        if self.depth == 2 and cur is not None and cur.cap_state != _ACTIVE and self.last_key in _GEOMETRY:
            # a later array under a geometry key replaces an earlier one, as json.loads does
            cur.cap_state, cur.cap_target, cur.cap_from = _ACTIVE, self.bdepth - 1, pos + 1
        elif (
            self.array
            and self.depth == 1
            and not self.array_level
            and self.last_key == _ARRAY_KEY
            and self.bdepth == self.base[1] + 1
        ):
            self.array_level = self.bdepth
            if self.open_end < 0 and self.roots == 1:
                self.open_end = pos + 1

    def _close_bracket(self, pos: int) -> None:
        if self.depth == 0 or self.bdepth == 0:
            return
        self.bdepth -= 1
        cur = self.current
        if cur is not None and cur.cap_state == _ACTIVE and self.bdepth <= cur.cap_target:
            cur.cap_state, cur.cap_to = _DONE, pos
            self.last_key = None  # only a new geometry key may arm capture again
        if self.array_level and self.bdepth < self.array_level:
            self.array_level = 0

    def _at_entry_level(self) -> bool:
        """Whether the first root's entry list is open here: no other bracket open inside it."""
        if self.roots != 1:
            return False
        return bool(self.array_level) and self.bdepth == self.array_level if self.array else self.bdepth == 0


def scan(data: bytes, layout: ScanLayout = OBJECT_N) -> ScanResult:
    """Scan a response's bytes once (see the module docstring for the rules)."""
    sc = IncrementalScanner(layout)
    in_string = sc.run(data) >= 0
    cur = sc.current
    if cur is not None and cur.cap_state == _ACTIVE:
        cur.cap_to = len(data)
    return ScanResult(
        layout=layout.layout,
        objects=tuple(sc.objects),
        key_marks=tuple(sc.key_marks),
        boundaries=tuple(sc.boundaries),
        open_end=sc.open_end,
        root_start=sc.root_start,
        truncated=sc.depth != 0 or sc.bdepth != 0 or in_string,
        depth=sc.depth,
        roots=sc.roots,
        in_string=in_string,
        in_entry_list=not in_string and sc.depth == 1 and sc._at_entry_level(),
        root_keys=sc.root_keys,
        array_items=sc.n_array,
    )


def captured_indices(obj: ScannedObject, coord_starts: list[int], coord_idx: list[int]) -> tuple[int, ...]:
    """Token indices of the coord tokens that start inside ``obj``'s capture window."""
    if obj.cap_state == _NOT_ARMED:
        return ()
    lo = bisect_left(coord_starts, obj.cap_from)
    hi = bisect_left(coord_starts, obj.cap_to, lo)
    return tuple(coord_idx[lo:hi])


def max_object_index(sc: ScanResult, cut: int) -> int | None:
    """Largest object index in the prefix ``[0, cut)`` (reference §4.6): the FN numbering starts after it.

    object_n: every depth-1 ``object_N`` key whose closing quote lies before the cut, whatever its
    value (dropped, non-dict). objects_array has no keys: the largest 1-based position of an object
    started before the cut.
    """
    if sc.layout is Layout.OBJECT_N:
        marks = [n for pos, n in sc.key_marks if pos < cut]
    else:
        marks = [o.index for o in sc.objects if o.start < cut]
    return max(marks) if marks else None


def cut_candidates(sc: ScanResult, before: int) -> list[int]:
    """Append-ready cut points at or before ``before``, latest first, ending with the opening container."""
    out = [b for b in reversed(sc.boundaries) if b <= before]
    if 0 <= sc.open_end <= before and sc.open_end not in out:
        out.append(sc.open_end)
    return out


# ------------------------------------------------------------------------------------------------
# Other readers of the same events
# ------------------------------------------------------------------------------------------------


def events(data: bytes, start: int = 0) -> Iterator[re.Match[bytes]]:
    """The structural events of ``data`` from ``start`` on (strings whole, then the six bytes)."""
    return EVENT.finditer(data, start)


def desc_value_spans(data: bytes) -> tuple[tuple[int, int], ...]:
    """Byte spans ``[start, end)`` of every desc value (between its quotes, escapes honoured).

    A desc value is the string after a ``"desc"`` string and a ``:``. An unterminated value (a
    truncated rollout) runs to the end of the text: those bytes are desc text all the same.
    """
    spans = []
    state = 0  # 1: just read the string "desc"; 2: ... and then ":"
    for m in EVENT.finditer(data):
        if data[m.start()] == _QUOTE:
            if state == 2:
                spans.append((m.start() + 1, m.end(1)))
                state = 0
            else:
                state = 1 if m.group(2) is not None and m.group(1) == _DESC else 0
        elif state == 1 and data[m.start()] == _COLON:
            state = 2
        else:
            state = 0
    return tuple(spans)


def closing_brace(data: bytes, depth: int) -> int | None:
    """Offset of the ``}`` that brings the brace depth from ``depth`` to 0 (strings skipped), or None."""
    for m in EVENT.finditer(data):
        ch = data[m.start()]
        if ch == _LBRACE:
            depth += 1
        elif ch == _RBRACE:
            depth -= 1
            if depth == 0:
                return m.start()
    return None
