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


Locate = Callable[[str], "str | None"]


def format_structure_error(
    exc: BaseValidationError, root: type, *, display: Callable[[str], str] = str, locate: Locate = lambda _p: None
) -> list[str]:
    """All messages of one structuring failure, in the order cattrs found them.

    ``locate(dotted key)`` gives the ``file:line`` that set a key (None when no file did); a message about
    a key a file set starts with it. A missing key is located at its section, where it has to be added.
    """
    found: list[tuple[str, str]] = []
    _walk(exc, "", root, found, display)
    out = []
    for where_key, message in found:
        where = locate(where_key) if where_key else None
        out.append(f"{where}: {message}" if where else message)
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


def _walk(
    exc: BaseException, path: str, root: type, out: list[tuple[str, str]], display: Callable[[str], str]
) -> None:
    """Collect (key to locate, message) pairs."""
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            hint = _suggest(key, exc.cl, path, root, display)
            out.append((_join(path, key),
                        f"{display(_join(path, key))}: unknown key{hint}. Fix: remove it or correct the spelling "
                        f"({DOCS_HINT})."))
        return
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            _walk(sub, _sub_path(path, sub), root, out, display)
        return
    where = path
    if isinstance(exc, KeyError):  # a missing key is added in its section, so that is where it is located
        where = path.rsplit(".", 1)[0] if "." in path else ""
    out.append((where, _leaf_message(exc, path, root, display)))


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
    got_text = show_value(getattr(exc, "value", None))
    kind = getattr(exc, "kind", None) or ("invalid value" if expected.startswith("one of") else "wrong type")
    return f"{shown}: {kind}, expected {expected}, got {got_text}. Fix: use {expected}.{_yaml_bool_hint(exc, expected)}"


# Words YAML 1.1 (PyYAML) reads as booleans when unquoted; a choice spelled like one needs quotes.
_YAML_BOOL_WORDS = ("yes", "no", "on", "off", "true", "false", "y", "n")


def _yaml_bool_hint(exc: BaseException, expected: str) -> str:
    """``eval_strategy: no`` arrives as False: say why, and how to write the word so it stays a string."""
    if type(getattr(exc, "value", None)) is not bool or not expected.startswith("one of"):
        return ""
    words = [w for w in _YAML_BOOL_WORDS if f"'{w}'" in expected]
    if not words:
        return ""
    return (f" YAML reads an unquoted {words[0]} as a boolean: quote it (`\"{words[0]}\"` in the file, "
            f"`--set 'key=\"{words[0]}\"'` on the command line).")


SHOWN_CHARS = 40  # a value longer than this (a 400-digit int, a pasted blob) is shown by its head and size


def show_value(value: Any) -> str:
    """A value as a message shows it: its repr and YAML type, clipped so an absurd value stays readable."""
    if value is None:
        return "null"
    if type(value) is int and abs(value) >= 10**SHOWN_CHARS:  # str() of a huge int is slow or refused
        return f"an int of about {int(value.bit_length() * 0.30103) + 1} digits (int)"
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = f"{text[:SHOWN_CHARS - 10]}... ({len(text)} chars)"
    return f"{text} ({type(value).__name__})"


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
