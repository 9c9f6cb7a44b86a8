"""Runner for ``pack_select``: segment lengths and a token cap -> the selection.

Input: one case ``{"lengths": [...], "cap": N, "repeats": R?, "binpacking_missing": bool?}`` or
``{"cases": [case, ...]}``. ``repeats`` reruns the selection and reports whether every run agreed
(the determinism scenarios); ``binpacking_missing`` makes the import seam fail, so the scenario shows
the error a user gets without the package.
"""

from __future__ import annotations

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


def run(data: dict[str, Any]) -> Any:
    if "cases" in data:
        if set(data) != {"cases"}:
            raise ValueError(f"pack_select input with 'cases' takes no other keys, got {sorted(data)}")
        return [_run_case(structure(c, SelectCase)) for c in data["cases"]]
    return _run_case(structure(data, SelectCase))
