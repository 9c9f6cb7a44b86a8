"""Runner for ``append``: SerializeAppend of FN objects after a rollout prefix.

Input: one case or ``{"cases": [case, ...]}``; a case is
``{"prefix_text": str, "fn": [GTObject...], "start_index": int?, "max_prefix_index": int|null?,
"layout": "object_n"|"objects_array"?}`` where a GTObject is
``{"index", "desc", "geom_type": "bbox_2d"|"poly", "points": [bins]}`` (arity unchecked, as FN
objects reach the serializer). Without ``start_index`` the start comes from ``max_prefix_index``.
Output: ``{"append_text", "start_index", "valid_json"}`` (``valid_json``: prefix + append parses as
JSON) or the expected error.
"""

from __future__ import annotations

from typing import Any

import attrs

from coordexp.core.coordjson import GTObject, Layout, append_start_index, serialize_append
from coordexp.errors import AppendError
from coordexp.serde import structure
from coordexp.spec.runners import each_case, expected_error, is_json

TRANSITION = "append"


@attrs.frozen
class AppendCase:
    prefix_text: str
    fn: tuple[GTObject, ...] = ()
    start_index: int | None = None
    max_prefix_index: int | None = None
    layout: Layout = Layout.OBJECT_N


def _run_case(case: AppendCase) -> dict[str, Any]:
    if case.start_index is not None and case.max_prefix_index is not None:
        raise TypeError("an append case takes start_index or max_prefix_index, not both")
    start = case.start_index if case.start_index is not None else append_start_index(case.max_prefix_index)
    try:
        text = serialize_append(case.fn, start_index=start, prefix_text=case.prefix_text, layout=case.layout)
    except AppendError as exc:
        return expected_error(exc)
    return {"append_text": text, "start_index": start, "valid_json": is_json(case.prefix_text + text)}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, lambda c: _run_case(structure(c, AppendCase)), transition=TRANSITION)
