"""Strict structuring of a merged config mapping into ``Config``, with every problem reported at once.

The converter is a copy of the project converter (``coordexp.serde``: forbid extra keys) with strict scalar
hooks added for configs: YAML already types its values, so ``"false"`` for a bool or ``3.7`` for an int is a
mistake to report, not a value to coerce (cattrs would turn ``"false"`` into ``True``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote

from coordexp.config._types import tuple_item, type_name
from coordexp.config.errors_format import format_structure_error, show_value
from coordexp.config.schema_ab import RampPoint
from coordexp.config.schema_root import Config
from coordexp.errors import ConfigError
from coordexp.serde import converter as project_converter

STRUCTURE_ERRORS = (ValueError, TypeError, KeyError, cattrs.BaseValidationError)
# Every int of the schema is a count, a size, a step or a seed: anything beyond int64 is a typo, and letting it
# through would overflow later (int / int -> float) far from the key that caused it.
INT_LIMIT = 2**63 - 1


class TypeMismatch(ValueError):
    """A value of the wrong YAML type (or out of the representable range); carries the message parts.

    ``kind`` is the message's opening ("invalid value"; None lets the formatter choose), ``expected`` what
    would be right.
    """

    def __init__(self, expected: str, value: Any, *, kind: str | None = None) -> None:
        self.expected = expected
        self.value = value
        self.kind = kind
        super().__init__(f"expected {expected}, got {_show(value)}")


def _show(value: Any) -> str:
    return show_value(value)


def _int(value: Any, _t: Any) -> int:
    if type(value) is not int:
        raise TypeMismatch("int", value)
    if abs(value) > INT_LIMIT:
        raise TypeMismatch("an int with |value| <= 2**63 - 1", value, kind="invalid value")
    return value


def _float(value: Any, _t: Any) -> float:
    """A finite number: ``.inf`` / ``.nan`` would pass every range check (or fail them all) silently."""
    if type(value) not in (int, float):
        raise TypeMismatch("float", value)
    if type(value) is int and abs(value) > INT_LIMIT:
        raise TypeMismatch("a finite number with |value| <= 2**63 - 1", value, kind="invalid value")
    if not math.isfinite(value):
        raise TypeMismatch("a finite number", value, kind="invalid value")
    return float(value)


def _bool(value: Any, _t: Any) -> bool:
    if type(value) is not bool:
        raise TypeMismatch("bool (true/false)", value)
    return value


def _str(value: Any, _t: Any) -> str:
    if type(value) is not str:
        raise TypeMismatch("string", value)
    return value


def _literal(value: Any, t: Any) -> Any:
    options = get_args(t)
    if type(value) is not str or value not in options:
        raise TypeMismatch("one of " + ", ".join(repr(o) for o in options), value)
    return value


def _make_tuple_hook(conv: cattrs.Converter) -> Callable[[Any, Any], tuple]:
    def structure_tuple(value: Any, t: Any) -> tuple:
        if not isinstance(value, list | tuple):
            raise TypeMismatch(f"a list ({type_name(t)})", value)
        item_type = tuple_item(t)
        items, errors = [], []
        for index, item in enumerate(value):
            try:
                items.append(conv.structure(item, item_type))
            except STRUCTURE_ERRORS as exc:
                exc.add_note(IterableValidationNote(f"Structuring {t} @ index {index}", index, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {t}", errors, t)
        return tuple(items)

    return structure_tuple


def _make_b_ratio_hook(conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    ramp_type = tuple[RampPoint, ...]

    def structure_b_ratio(value: Any, _t: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return conv.structure(value, ramp_type)
        if type(value) in (int, float):
            return float(value)
        raise TypeMismatch("a number in [0, 1] or a list of {until_step, value}", value)

    return structure_b_ratio


def make_config_converter() -> cattrs.Converter:
    """The project converter plus strict scalars, literal and list checks, and the b_ratio union."""
    conv = project_converter.copy()
    for scalar, hook in ((int, _int), (float, _float), (bool, _bool), (str, _str)):
        conv.register_structure_hook(scalar, hook)
    conv.register_structure_hook_func(lambda t: get_origin(t) is Literal, _literal)
    conv.register_structure_hook_func(
        lambda t: get_origin(t) is tuple and tuple_item(t) is not None, _make_tuple_hook(conv)
    )
    b_ratio_type = float | tuple[RampPoint, ...] | None
    conv.register_structure_hook_func(lambda t: t == b_ratio_type, _make_b_ratio_hook(conv))
    return conv


config_converter = make_config_converter()


def structure_config(
    data: Any,
    *,
    source: str | None = None,
    display: Callable[[str], str] = str,
    locate: Callable[[str], str | None] = lambda _p: None,
) -> Config:
    """Build ``Config`` from merged plain data; every structural problem becomes one ConfigError message.

    ``locate`` maps a dotted key to the ``file:line`` that set it, so messages name the file of an extends
    chain where the problem is written.
    """
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a mapping of sections, got {type(data).__name__}"], source=source)
    try:
        return config_converter.structure(data, Config)
    except cattrs.BaseValidationError as exc:
        messages = format_structure_error(exc, Config, display=display, locate=locate)
        raise ConfigError(messages, source=source) from exc
