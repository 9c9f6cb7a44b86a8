"""Reading a config: YAML files, ``extends`` chains, ``--base_config``, ``--set`` overrides, then structuring.

Order (later wins): ``--base_config`` file, the config file's ``extends`` bases (left to right), the config
file itself, then each ``--set``. Merging is deep for mappings only; lists, scalars and an explicit ``null``
replace. Each file is brought to the canonical layout (``custom.extra.<section>``) before merging, so a base in
one layout and a leaf in the other combine cleanly; one file giving both spellings of a section is an error.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from coordexp.config.convert import structure_config
from coordexp.config.legacy import pop_removed_keys
from coordexp.config.schema_root import Config
from coordexp.errors import ConfigError

SECTIONS = ("rollout_matching", "stage2_ab")
PROMPT_FILE_KEYS = ("user_prompt_file", "system_prompt_file")
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@attrs.frozen
class Loaded:
    """A structured config plus how to show dotted keys in the user's layout."""

    config: Config
    top_level_sections: bool

    def display(self, path: str) -> str:
        return display_path(path, top_level=self.top_level_sections)


def display_path(path: str, *, top_level: bool) -> str:
    """Write a canonical dotted key in the layout the user wrote (``custom.extra.x`` or top-level ``x``)."""
    if top_level:
        for name in SECTIONS:
            canonical = f"custom.extra.{name}"
            if path == canonical or path.startswith(canonical + ".") or path.startswith(canonical + "["):
                return name + path[len(canonical) :]
    return path


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings recurse; lists, scalars and explicit null replace."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def normalize_layout(raw: dict[str, Any], *, source: str) -> tuple[dict[str, Any], bool]:
    """Move top-level ``rollout_matching`` / ``stage2_ab`` under ``custom.extra``; report whether any moved."""
    moved = False
    data = dict(raw)
    for name in SECTIONS:
        if name not in data:
            continue
        custom = data.get("custom") if isinstance(data.get("custom"), dict) else {}
        extra = custom.get("extra") if isinstance(custom.get("extra"), dict) else {}
        if name in extra:
            raise ConfigError(
                [f"`{name}` and `custom.extra.{name}` are both given; they are two spellings of one section. "
                 f"Fix: keep one of them."],
                source=source,
            )
        data["custom"] = {**custom, "extra": {**extra, name: data.pop(name)}}
        moved = True
    return data, moved


def _read_yaml(path: Path, *, via: str | None) -> dict[str, Any]:
    if not path.is_file():
        origin = f" (extended from {via})" if via else ""
        raise ConfigError([f"config file not found: {path}{origin}"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"])
    return data


def _absolute_prompt_files(data: dict[str, Any], folder: Path) -> None:
    custom = data.get("custom")
    if not isinstance(custom, dict):
        return
    for key in PROMPT_FILE_KEYS:
        value = custom.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            custom[key] = str(folder / value)


def _extends_list(value: Any, path: Path) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError([f"{path}: `extends` must be a path or a list of paths, got {value!r}"])


def load_file(path: Path, _stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], bool]:
    """One file with its ``extends`` chain resolved, in canonical layout; cycles are errors."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in (*_stack, path))
        raise ConfigError([f"`extends` cycle: {chain} ({path})"])
    raw = _read_yaml(path, via=str(_stack[-1]) if _stack else None)
    bases = _extends_list(raw.pop("extends"), path) if "extends" in raw else []
    data, moved = normalize_layout(raw, source=str(path))
    _absolute_prompt_files(data, path.parent)
    merged: dict[str, Any] = {}
    for base in bases:
        base_data, base_moved = load_file(path.parent / base, (*_stack, path))
        merged = deep_merge(merged, base_data)
        moved = moved or base_moved
    return deep_merge(merged, data), moved


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{a: {b: {c: value}}}`` with the value read as YAML (``true`` is a bool)."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.match(key):
        raise ConfigError([f"--set {text!r}: expected KEY=VALUE with a dotted key such as training.packing=true "
                           f"(lists are set whole: key='[a, b]')"])
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([f"--set {text!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def _empty_sections_to_none(data: dict[str, Any]) -> None:
    """``rollout_matching: {}`` counts as absent, as in the legacy loader (a forgotten section, not defaults)."""
    extra = data.get("custom", {}).get("extra") if isinstance(data.get("custom"), dict) else None
    if isinstance(extra, dict):
        for name in SECTIONS:
            if extra.get(name) == {}:
                extra[name] = None


def build(data: dict[str, Any], *, overrides: Iterable[str], source: str, top_level: bool) -> Loaded:
    """Apply overrides, refuse legacy keys, structure; all problems of this stage in one ConfigError."""
    data = copy.deepcopy(data)  # the steps below edit in place; callers keep their mapping
    for text in overrides:
        override, moved = normalize_layout(parse_override(text), source=f"--set {text}")
        data = deep_merge(data, override)
        top_level = top_level or moved
    show: Callable[[str], str] = lambda p: display_path(p, top_level=top_level)  # noqa: E731
    _empty_sections_to_none(data)
    messages = pop_removed_keys(data, display=show)
    try:
        config = structure_config(data, source=source, display=show)
    except ConfigError as exc:
        raise ConfigError(messages + exc.messages, source=source) from exc
    if messages:
        raise ConfigError(messages, source=source)
    return Loaded(config, top_level)


def load(path: str | Path, *, base_config: str | Path | None = None, overrides: Iterable[str] = ()) -> Loaded:
    data, moved = load_file(Path(path))
    if base_config is not None:
        base_data, base_moved = load_file(Path(base_config))
        data, moved = deep_merge(base_data, data), moved or base_moved
    return build(data, overrides=overrides, source=str(path), top_level=moved)


def load_config(path: str | Path, *, base_config: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read, merge and strictly structure a config file (cross-field rules: ``validate``)."""
    return load(path, base_config=base_config, overrides=overrides).config


def load_config_data(data: Mapping[str, Any], *, overrides: Iterable[str] = (), source: str = "<mapping>") -> Loaded:
    """The same pipeline for an in-memory mapping (fixtures, tests); ``extends`` is not allowed here."""
    if "extends" in data:
        raise ConfigError([f"{source}: `extends` needs a file; load the file with load_config instead"])
    normalized, moved = normalize_layout(dict(data), source=source)
    return build(normalized, overrides=overrides, source=source, top_level=moved)
