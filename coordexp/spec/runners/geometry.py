"""Runner for ``geometry``: pairs of shapes -> their IoU in the requested mode.

Input: ``{"cases": [{"case": label, "a": shape, "b": shape, "mode": "exact" | "raster",
"resolution": R}, ...]}`` with shapes as in the match runner (``resolution`` is spelt out even
where exact mode ignores it, so every case reads the same).
Output: ``[{"case": label, "iou": x}, ...]``, IoU rounded to 6 decimals, so a reviewer reads each
number next to its label.
"""

from __future__ import annotations

from typing import Any

from coordexp.core.geometry import iou
from coordexp.errors import DataError
from coordexp.spec.runners.match import shape_from_data

TRANSITION = "geometry"

_KEYS = {"case", "a", "b", "mode", "resolution"}


def _run_case(case: Any) -> dict[str, Any]:
    if not isinstance(case, dict) or set(case) != _KEYS:
        raise DataError(f"a geometry case has exactly the keys {sorted(_KEYS)}; got {case!r}")
    value = iou(
        shape_from_data(case["a"]),
        shape_from_data(case["b"]),
        mode=case["mode"],
        resolution=case["resolution"],
    )
    return {"case": case["case"], "iou": round(value, 6)}


def run(data: dict[str, Any]) -> Any:
    if set(data) != {"cases"}:
        raise DataError(f"geometry input is {{'cases': [...]}}, got keys {sorted(data)}")
    return [_run_case(c) for c in data["cases"]]
