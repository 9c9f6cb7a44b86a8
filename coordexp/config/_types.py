"""Schema introspection shared by the error formatter and the docs generator.

Both need the same answers: which attrs section a type is, how a type reads for a human ("int or null",
"list of section"), and every dotted key of the schema.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

import attrs

NoneType = type(None)


def fields_of(cls: type) -> tuple[attrs.Attribute, ...]:
    """attrs fields with resolved (non-string) types."""
    attrs.resolve_types(cls)
    return attrs.fields(cls)


def union_members(t: Any) -> tuple[Any, ...]:
    if get_origin(t) in (typing.Union, types.UnionType):
        return get_args(t)
    return (t,)


def section_class(t: Any) -> type | None:
    """The attrs class behind ``X``, ``X | None``; None for anything else."""
    for member in union_members(t):
        if isinstance(member, type) and attrs.has(member):
            return member
    return None


def tuple_item(t: Any) -> Any | None:
    """``X`` for ``tuple[X, ...]`` (also inside ``| None``); None otherwise."""
    for member in union_members(t):
        if get_origin(member) is tuple:
            args = get_args(member)
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
    return None


def type_name(t: Any) -> str:
    """A short human spelling of a field type, used in errors and in docs/config.md."""
    members = union_members(t)
    if len(members) > 1:
        parts = [type_name(m) for m in members if m is not NoneType]
        text = " or ".join(parts)
        return f"{text} or null" if NoneType in members else text
    if get_origin(t) is Literal:
        return " | ".join(repr(a) for a in get_args(t))
    if get_origin(t) is tuple:
        return f"list of {type_name(get_args(t)[0])}"
    if get_origin(t) is dict:
        key, value = get_args(t)
        return f"mapping {type_name(key)} -> {type_name(value)}"
    if isinstance(t, type) and attrs.has(t):
        return "section"
    return getattr(t, "__name__", str(t))


def walk_schema(cls: type, prefix: str = "") -> Iterator[tuple[str, attrs.Attribute]]:
    """Every (dotted path, field) of the schema, depth-first; list items appear as ``name[]``."""
    for field in fields_of(cls):
        path = f"{prefix}{field.name}"
        yield path, field
        nested = section_class(field.type)
        item = tuple_item(field.type)
        if nested is not None:
            yield from walk_schema(nested, f"{path}.")
        elif item is not None and section_class(item) is not None:
            yield from walk_schema(section_class(item), f"{path}[].")
