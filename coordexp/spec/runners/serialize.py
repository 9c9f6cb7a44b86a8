"""Runner for ``serialize``: data-contract objects -> the GT CoordJSON answer text.

Input: one case or ``{"cases": [case, ...]}``; a case is ``{"objects": [JSONL object dicts],
"layout": "object_n"|"objects_array"?}``. Objects go through the data-contract checks first, so a
scenario can show the error a bad object gets. Output: ``{"text", "objects"}`` (``objects``: the
records that were serialized) or the expected error.
"""

from __future__ import annotations

from typing import Any

import attrs

from coordexp.core.coordjson import Layout, serialize
from coordexp.data.jsonl import gt_object_from_dict
from coordexp.errors import DataError
from coordexp.serde import structure, unstructure
from coordexp.spec.runners import each_case, expected_error

TRANSITION = "serialize"


@attrs.frozen
class SerializeCase:
    objects: tuple[dict[str, Any], ...]
    layout: Layout = Layout.OBJECT_N


def _run_case(case: SerializeCase) -> dict[str, Any]:
    try:
        objs = tuple(gt_object_from_dict(o, index=i, where="fixture") for i, o in enumerate(case.objects, 1))
    except DataError as exc:
        return expected_error(exc)
    return {"text": serialize(objs, layout=case.layout), "objects": unstructure(objs)}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, lambda c: _run_case(structure(c, SerializeCase)), transition=TRANSITION)
