"""The streaming structure scanner behind Parse: one pass over a rollout's text.

It finds where each predicted object's value starts and ends, which coord tokens sit in its
geometry array, which object keys appear, and whether the text ends mid-structure. It does not
validate objects (``coordexp.core.parse`` does, after the cut).

Speed matters (a dense rollout has ~60 objects and ~2k tokens, parsed every step), so the scan
walks a regex over structural events only: a whole JSON string is one event (its content is only
looked at when it is a key), and the other events are the six characters ``{ } [ ] , :``.
Coord capture works at token granularity without touching tokens one by one: a geometry array's
capture window is a char interval, and the coord tokens inside it are found by bisecting the
sorted start offsets of the response's coord tokens (coord pieces hold no structural character,
so a token starting inside the window was "seen while capture was active").

Legacy semantics (reference §4.3) are kept on purpose, quirks included:
- object_n layout: a depth-1 key ``object_N`` is remembered as *pending* until the next depth-2
  dict, even across a non-dict value or another key, so ``{"object_4": 123, "foo": {...}}``
  attributes the ``foo`` dict to object_4 (P39, P32). A depth-2 dict with no pending key is
  ignored (P38). A second root object ``{A} {B}`` is scanned like the first (W10).
- Keys, ``,`` and ``:`` are recognised only when no bracket is open anywhere (object_n layout):
  the legacy bracket depth is global, not per brace level.
- ``last_key`` is global across depths, so a nested dict's key can arm capture.
"""

from __future__ import annotations

import re
from bisect import bisect_left

import attrs

_EVENT = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)(")?|[{}\[\],:]', re.S)
_OBJECT_KEY = re.compile(r"object_(\d+)")
_ESCAPE = re.compile(r"\\(.)", re.S)
_GEOM_KEYS = frozenset({"bbox_2d", "poly"})
_ARRAY_KEY = "objects"

# capture states of one object
_NOT_ARMED, _ACTIVE, _DONE = 0, 1, 2


@attrs.frozen
class ScanLayout:
    """Scanner rules of one answer layout: where objects live, and the empty append-ready prefix.

    ``relative_brackets``: whether keys are recognised relative to the bracket depth at which their
    dict was opened (needed when objects sit inside an array) or only with no bracket open at all
    (the legacy object_n rule, kept for scenario parity).
    """

    name: str
    open_text: str  # the fallback prefix when the opening container is missing
    relative_brackets: bool


OBJECT_N = ScanLayout("object_n", "{", relative_brackets=False)
OBJECTS_ARRAY = ScanLayout("objects_array", '{"objects": [', relative_brackets=True)
# keyed by ``coordexp.core.coordjson.Layout`` values, the project-wide name of a layout
SCAN_LAYOUTS: dict[str, ScanLayout] = {lay.name: lay for lay in (OBJECT_N, OBJECTS_ARRAY)}


class ScannedObject:
    """One object value as the scanner saw it (mutable while scanning, then read by validation)."""

    __slots__ = ("key", "index", "start", "end", "cap_state", "cap_target", "cap_from", "cap_to")

    def __init__(self, key: str, index: int, start: int) -> None:
        self.key = key
        self.index = index
        self.start = start  # char offset of the value's "{"
        self.end = -1  # char offset after its "}", -1 while unclosed
        self.cap_state = _NOT_ARMED
        self.cap_target = 0
        self.cap_from = 0  # capture window [cap_from, cap_to) in chars
        self.cap_to = 0


@attrs.frozen
class ScanResult:
    objects: tuple[ScannedObject, ...]
    key_marks: tuple[tuple[int, int], ...]  # (char offset of the key's closing quote, N), in order
    closed_ends: tuple[int, ...]  # char offset after each closed object value, ascending
    open_end: int  # char offset after the opening container ("{" or "["), -1 if none
    truncated: bool


class _Scanner:
    """State of one scan; the hot loop lives in ``run`` and rare events go to small methods."""

    def __init__(self, layout: ScanLayout) -> None:
        self.array = layout is OBJECTS_ARRAY
        self.relative = layout.relative_brackets
        self.depth = 0
        self.bdepth = 0
        self.expect = [False]  # expecting_key per brace depth (index = depth)
        self.base = [0]  # bracket depth at which keys count, per brace depth
        self.last_key: str | None = None
        self.pending: tuple[str, int] | None = None
        self.current: ScannedObject | None = None
        self.objects: list[ScannedObject] = []
        self.key_marks: list[tuple[int, int]] = []
        self.closed_ends: list[int] = []
        self.open_end = -1
        self.array_level = 0  # bracket depth inside the "objects" array, 0 when not inside
        self.n_array = 0

    def run(self, text: str) -> bool:
        """Scan ``text``; returns whether it ended inside a string."""
        expect = self.expect
        for m in _EVENT.finditer(text):
            pos = m.start()
            ch = text[pos]
            if ch == '"':
                if m.group(2) is None:
                    return True
                depth = self.depth
                if expect[depth] and self.bdepth == self.base[depth]:
                    self._key(m.group(1), pos + len(m.group()) - 1)
            elif ch == "," or ch == ":":
                depth = self.depth
                if depth and self.bdepth == self.base[depth]:
                    expect[depth] = ch == ","
            elif ch == "{":
                self._open_brace(pos)
            elif ch == "}":
                self._close_brace(pos)
            elif ch == "[":
                self._open_bracket(pos)
            else:
                self._close_bracket(pos)
        return False

    def _key(self, raw: str, quote_pos: int) -> None:
        key = _ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
        self.last_key = key
        if self.depth == 1 and not self.array:
            m = _OBJECT_KEY.fullmatch(key)
            if m is not None:
                n = int(m.group(1))
                self.key_marks.append((quote_pos, n))
                self.pending = (key, n)

    def _open_brace(self, pos: int) -> None:
        self.depth += 1
        self.expect.append(True)
        self.base.append(self.bdepth if self.relative else 0)
        if self.depth == 1:
            if self.open_end < 0 and not self.array:
                self.open_end = pos + 1
        elif self.depth == 2:
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
            self.closed_ends.append(pos + 1)
            self.current = None
        if self.depth > 0:
            self.expect.pop()
            self.base.pop()
            self.depth -= 1

    def _open_bracket(self, pos: int) -> None:
        self.bdepth += 1
        cur = self.current
        if self.depth == 2 and cur is not None and cur.cap_state == _NOT_ARMED and self.last_key in _GEOM_KEYS:
            cur.cap_state, cur.cap_target, cur.cap_from = _ACTIVE, self.bdepth - 1, pos + 1
        elif (
            self.array
            and self.depth == 1
            and not self.array_level
            and self.last_key == _ARRAY_KEY
            and self.bdepth == self.base[1] + 1
        ):
            self.array_level = self.bdepth
            if self.open_end < 0:
                self.open_end = pos + 1

    def _close_bracket(self, pos: int) -> None:
        if self.bdepth > 0:
            self.bdepth -= 1
        cur = self.current
        if cur is not None and cur.cap_state == _ACTIVE and self.bdepth <= cur.cap_target:
            cur.cap_state, cur.cap_to = _DONE, pos
        if self.array_level and self.bdepth < self.array_level:
            self.array_level = 0


def scan(text: str, layout: ScanLayout = OBJECT_N) -> ScanResult:
    """Scan a response text once (see the module docstring for the rules and kept quirks)."""
    sc = _Scanner(layout)
    in_string = sc.run(text)
    cur = sc.current
    if cur is not None and cur.cap_state == _ACTIVE:
        cur.cap_to = len(text)
    return ScanResult(
        objects=tuple(sc.objects),
        key_marks=tuple(sc.key_marks),
        closed_ends=tuple(sc.closed_ends),
        open_end=sc.open_end,
        truncated=sc.depth != 0 or sc.bdepth != 0 or in_string,
    )


def captured_indices(obj: ScannedObject, coord_starts: list[int], coord_idx: list[int]) -> tuple[int, ...]:
    """Token indices of the coord tokens that start inside ``obj``'s capture window."""
    if obj.cap_state == _NOT_ARMED:
        return ()
    lo = bisect_left(coord_starts, obj.cap_from)
    hi = bisect_left(coord_starts, obj.cap_to, lo)
    return tuple(coord_idx[lo:hi])
