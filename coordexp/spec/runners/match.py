"""Runner for ``match``: predictions, GT objects and the matching knobs -> the MatchResult.

Input: one case ``{"preds": [shape, ...], "gts": [shape, ...], "cfg": {...}}`` or
``{"cases": [case, ...]}``; a shape is ``{"geom_type": "bbox_2d" | "poly", "points": [...]}``
(norm1000). ``cfg`` holds every MatchConfig field (the record has no defaults, so a fixture states its
whole config; ``iou_mode`` matters most, since exact and raster IoU give different numbers). IoUs are rounded to 6 decimals for the snapshot.
"""

from __future__ import annotations

from typing import Any

from coordexp.core.geometry import Shape
from coordexp.core.match import MatchConfig, match
from coordexp.errors import DataError
from coordexp.serde import structure, unstructure
from coordexp.spec.runners import each_case

TRANSITION = "match"


def shape_from_data(data: Any) -> Shape:
    """A Shape from fixture data, taking the points as written (no int coercion of floats)."""
    if not isinstance(data, dict) or set(data) != {"geom_type", "points"}:
        raise DataError(f"a shape is {{'geom_type', 'points'}}, got {data!r}")
    return Shape(data["geom_type"], tuple(data["points"]))


def _run_case(case: Any) -> dict[str, Any]:
    if not isinstance(case, dict) or set(case) != {"preds", "gts", "cfg"}:
        raise DataError(f"a match case has exactly the keys preds, gts, cfg; got {sorted(case)}")
    result = match(
        [shape_from_data(p) for p in case["preds"]],
        [shape_from_data(g) for g in case["gts"]],
        cfg=structure(case["cfg"], MatchConfig),
    )
    out = unstructure(result)
    out["matched_ious"] = [round(v, 6) for v in result.matched_ious]
    out["matched_iou_sum"] = round(result.matched_iou_sum, 6)
    return out


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
