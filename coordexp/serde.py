"""The one cattrs converter used for configs, records, recordings, fixtures and snapshots.

Strict keys everywhere: an unknown key is an error, never ignored, because the legacy trainer's worst
failures were keys that silently did nothing.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import cattrs

T = TypeVar("T")


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # Tuples travel as JSON lists; enums as their values. Both are cattrs defaults, stated here so a
    # reader knows what a snapshot will look like.
    conv.register_unstructure_hook(enum.Enum, lambda e: e.value)
    return conv


converter: cattrs.Converter = _make_converter()


def structure(data: Any, cls: type[T]) -> T:
    """Build a record from plain data with the strict converter."""
    return converter.structure(data, cls)


def unstructure(obj: Any) -> Any:
    """Turn a record into plain JSON-able data (dicts, lists, numbers, strings)."""
    return converter.unstructure(obj)
