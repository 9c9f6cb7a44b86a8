"""Runner for ``pack_select``: segment lengths and a token cap -> the selection.

Input: one case ``{"lengths": [...], "cap": N, "repeats": R?, "binpacking_missing": bool?}`` or
``{"cases": [case, ...]}``. ``repeats`` reruns the selection and reports whether every run agreed
(the determinism scenarios); ``binpacking_missing`` makes the import seam fail, so the scenario shows
the error a user gets without the package.

``{"exhaustive": {"max_segments": K, "min_length": a, "max_length": b, "cap": N}}`` runs the selector on
every buffer of 1..K lengths drawn from a..b and counts the buffers that break an invariant: a total below
the FIFO-greedy total (recomputed here, independently of the selector's own baseline), above the cap, a
total that is not the sum of the selected lengths, a selection without index 0, or indices not strictly
ascending. The first few offending buffers are listed.
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import attrs

from coordexp.core.pack import select_segments
from coordexp.serde import structure, unstructure
from coordexp.spec.runners import expected_error

TRANSITION = "pack_select"


@attrs.frozen
class SelectCase:
    lengths: tuple[int, ...]  # tokens per buffered segment, oldest first
    cap: int  # tokens
    repeats: int = 1
    binpacking_missing: bool = False


def missing_importer(name: str) -> ModuleType:
    """An importer that behaves as if ``name`` were not installed."""
    raise ModuleNotFoundError(f"No module named {name!r}")


def _run_case(case: SelectCase) -> dict[str, Any]:
    kwargs = {"importer": missing_importer} if case.binpacking_missing else {}
    try:
        runs = [select_segments(case.lengths, case.cap, **kwargs) for _ in range(max(1, case.repeats))]
    except ImportError as exc:
        return expected_error(exc)
    first = runs[0]
    out = unstructure(first)
    out["gain_vs_fifo"] = round(first.gain_vs_fifo, 6)
    if case.repeats > 1:
        out["stable_over_repeats"] = all(r == first for r in runs)
    return out


@attrs.frozen
class ExhaustiveCase:
    max_segments: int
    min_length: int  # tokens
    max_length: int  # tokens
    cap: int  # tokens


MAX_EXHAUSTIVE_BUFFERS = 200_000
SHOWN_VIOLATIONS = 3


def _fifo_total(lengths: tuple[int, ...], cap: int) -> int:
    """The FIFO-greedy baseline, written out again so the check does not trust the selector's own."""
    total = 0
    for n in lengths:
        if total + n <= cap:
            total += n
    return total


def _run_exhaustive(case: ExhaustiveCase) -> dict[str, Any]:
    values = range(case.min_length, case.max_length + 1)
    count = sum(len(values) ** k for k in range(1, case.max_segments + 1))
    if count > MAX_EXHAUSTIVE_BUFFERS:
        raise ValueError(f"exhaustive pack_select would run {count} buffers (limit {MAX_EXHAUSTIVE_BUFFERS}); "
                         "lower max_segments or the length range")
    broken = {"below_fifo": 0, "above_cap": 0, "wrong_total": 0, "missing_oldest": 0, "not_ascending": 0}
    shown: list[dict[str, Any]] = []
    fuller = 0
    for k in range(1, case.max_segments + 1):
        for lengths in itertools.product(values, repeat=k):
            sel = select_segments(lengths, case.cap)
            fifo = _fifo_total(lengths, case.cap)
            found = {
                "below_fifo": sel.total < fifo,
                "above_cap": sel.total > case.cap,
                "wrong_total": sel.total != sum(lengths[i] for i in sel.indices),
                "missing_oldest": 0 not in sel.indices,
                "not_ascending": list(sel.indices) != sorted(set(sel.indices)),
            }
            fuller += sel.total > fifo
            for name, bad in found.items():
                broken[name] += bad
            if any(found.values()) and len(shown) < SHOWN_VIOLATIONS:
                shown.append({"lengths": list(lengths), "indices": list(sel.indices), "fifo_total": fifo})
    return {"buffers": count, "violations": broken, "first_violations": shown, "fuller_than_fifo": fuller}


def run(data: dict[str, Any]) -> Any:
    if "exhaustive" in data:
        if set(data) != {"exhaustive"}:
            raise ValueError(f"pack_select input with 'exhaustive' takes no other keys, got {sorted(data)}")
        return _run_exhaustive(structure(data["exhaustive"], ExhaustiveCase))
    if "cases" in data:
        if set(data) != {"cases"}:
            raise ValueError(f"pack_select input with 'cases' takes no other keys, got {sorted(data)}")
        return [_run_case(structure(c, SelectCase)) for c in data["cases"]]
    return _run_case(structure(data, SelectCase))
