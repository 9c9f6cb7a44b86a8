"""Turn a cattrs validation error tree into one message per problem, named by dotted key.

cattrs collects every problem of one structuring pass in an exception group whose notes say which
attribute / list index each came from. This walk rebuilds the dotted path from those notes
(``custom.extra.rollout_matching.vllm.server.servers[0].unknown_flag``) and adds a "did you mean" for
unknown keys: first among the siblings, else where a key of that name lives elsewhere in the schema.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import attrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from coordexp.config._fields import help_of
from coordexp.config._types import type_name, walk_schema

DOCS_HINT = "every key is listed in docs/config.md"


def format_structure_error(exc: BaseValidationError, root: type, *, display: Callable[[str], str] = str) -> list[str]:
    """All messages of one structuring failure, in the order cattrs found them."""
    out: list[str] = []
    _walk(exc, "", root, out, display)
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _sub_path(path: str, exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return _join(path, note.name)
        if isinstance(note, IterableValidationNote):
            return f"{path}[{note.index}]" if isinstance(note.index, int) else _join(path, str(note.index))
    return path


def _walk(exc: BaseException, path: str, root: type, out: list[str], display: Callable[[str], str]) -> None:
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            hint = _suggest(key, exc.cl, path, root, display)
            out.append(
                f"{display(_join(path, key))}: unknown key{hint}. Fix: remove it or correct the spelling ({DOCS_HINT})."
            )
        return
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            _walk(sub, _sub_path(path, sub), root, out, display)
        return
    out.append(_leaf_message(exc, path, root, display))


def _leaf_message(exc: BaseException, path: str, root: type, display: Callable[[str], str]) -> str:
    shown = display(path)
    field = _schema_fields(root).get(re.sub(r"\[\d+\]", "[]", path))
    if isinstance(exc, KeyError):
        meaning = f" ({help_of(field).rstrip('.')})" if field is not None else ""
        return f"{shown}: required key is missing. Fix: add `{path.rsplit('.', 1)[-1]}`{meaning}."
    expected = getattr(exc, "expected", None)
    if expected is None and field is not None:
        expected = type_name(field.type)
    if expected is None:
        return f"{shown}: {exc}."
    got = getattr(exc, "value", None)
    got_text = "null" if got is None else f"{got!r} ({type(got).__name__})"
    kind = "invalid value" if expected.startswith("one of") else "wrong type"
    return f"{shown}: {kind}, expected {expected}, got {got_text}. Fix: use {expected}."


def _suggest(key: str, cls: type, path: str, root: type, display: Callable[[str], str]) -> str:
    siblings = [f.name for f in attrs.fields(cls)]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f" (did you mean `{display(_join(path, close[0]))}`?)"
    elsewhere = [p for p in _schema_fields(root) if p.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return " (did you mean " + " or ".join(f"`{display(p)}`" for p in elsewhere[:3]) + "?)"
    return ""


@cache
def _schema_fields(root: type) -> dict[str, Any]:
    return dict(walk_schema(root))
