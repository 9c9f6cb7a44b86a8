"""Reading a config: YAML files, ``extends`` chains, ``--base_config``, ``--set`` overrides, then structuring.

Order (later wins): ``--base_config`` file, the config file's ``extends`` bases (left to right), the config
file itself, then each ``--set``. Merging is deep for mappings only; lists, scalars and an explicit ``null``
replace. Each file is brought to the canonical layout (``custom.extra.<section>``) before merging, so a base in
one layout and a leaf in the other combine cleanly; one file (or one ``--set`` list) giving both spellings of
a section's key is an error.

Each file's key lines travel with the merge (``Loaded.origins``: canonical dotted key -> ``file:line`` of the
file whose value won), so a schema or validation error about a key names the file of the chain that set it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from coordexp.cli import check_utf8
from coordexp.config.convert import structure_config
from coordexp.config.errors_format import show_value
from coordexp.config.legacy import pop_removed_keys
from coordexp.config.schema_root import Config
from coordexp.config.yaml_io import parse_yaml, read_yaml_file
from coordexp.errors import ConfigError

SECTIONS = ("rollout_matching", "stage2_ab")
PROMPT_FILE_KEYS = ("user_prompt_file", "system_prompt_file")
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


Origins = Mapping[str, str]  # canonical dotted key -> "file:line" of the file whose value is in effect


@attrs.frozen
class Loaded:
    """A structured config, how to show dotted keys in the user's layout, and where each key was set."""

    config: Config
    top_level_sections: bool
    origins: Origins = attrs.field(factory=dict)

    def display(self, path: str) -> str:
        return display_path(path, top_level=self.top_level_sections)

    def locate(self, path: str) -> str | None:
        """``file:line`` of the file that set ``path`` (canonical dotted key); None for defaults and --set."""
        return self.origins.get(path)


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


def _mapping_or_empty(value: Any, key: str, *, beside: str, source: str) -> dict[str, Any]:
    """``value`` when it is a mapping (or absent); moving ``beside`` into it must not drop what the user wrote."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            [f"`{key}` must be a mapping of settings, got {show_value(value)}, while top-level "
             f"`{beside}` is given (which lives under `{key}`). Fix: make `{key}` a mapping or remove it."],
            source=source,
        )
    return value


def normalize_layout(raw: dict[str, Any], *, source: str) -> tuple[dict[str, Any], bool]:
    """Move top-level ``rollout_matching`` / ``stage2_ab`` under ``custom.extra``; report whether any moved."""
    moved = False
    data = dict(raw)
    for name in SECTIONS:
        if name not in data:
            continue
        custom = _mapping_or_empty(data.get("custom"), "custom", beside=name, source=source)
        extra = _mapping_or_empty(custom.get("extra"), "custom.extra", beside=name, source=source)
        if name in extra:
            raise ConfigError(
                [f"`{name}` and `custom.extra.{name}` are both given; they are two spellings of one section. "
                 f"Fix: keep one of them."],
                source=source,
            )
        data["custom"] = {**custom, "extra": {**extra, name: data.pop(name)}}
        moved = True
    return data, moved


def _read_yaml(path: Path, *, via: str | None) -> tuple[dict[str, Any], dict[str, int]]:
    data, lines = read_yaml_file(path, via=via)
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"])
    return data, lines


def canonical_key(path: str) -> str:
    """A dotted key in the canonical layout (top-level ``rollout_matching.x`` -> ``custom.extra.rollout_matching.x``)."""
    for name in SECTIONS:
        if path == name or path.startswith((name + ".", name + "[")):
            return f"custom.extra.{path}"
    return path


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _replaced_keys(data: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose value replaces (not merges into) what a base set: every non-mapping value."""
    out, stack = [], [(data, "")]
    while stack:
        node, prefix = stack.pop()
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                stack.append((value, path))
            else:
                out.append(path)
    return out


def merge_origins(base: Origins, top: Origins, top_data: Mapping[str, Any]) -> dict[str, str]:
    """The origins after ``deep_merge(base_data, top_data)``: top's keys win, and keys under a value that
    top replaced (a list, scalar or null where base had a section) are no longer the base file's."""
    replaced = _replaced_keys(top_data)
    kept = {k: v for k, v in base.items() if not any(_under(k, r) for r in replaced)}
    return {**kept, **top}


def _file_origins(lines: Mapping[str, int], path: Path) -> dict[str, str]:
    return {canonical_key(key): f"{path}:{line}" for key, line in lines.items() if not _under(key, "extends")}


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


@attrs.frozen
class FileData:
    """One file with its ``extends`` chain merged: canonical-layout data, layout flag, key origins."""

    data: dict[str, Any]
    moved: bool  # some file of the chain used the top-level section layout
    origins: Origins


def load_file(path: Path, _stack: tuple[Path, ...] = ()) -> FileData:
    """One file with its ``extends`` chain resolved, in canonical layout; cycles are errors."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in (*_stack, path))
        raise ConfigError([f"`extends` cycle: {chain} ({path})"])
    raw, lines = _read_yaml(path, via=str(_stack[-1]) if _stack else None)
    bases = _extends_list(raw.pop("extends"), path) if "extends" in raw else []
    data, moved = normalize_layout(raw, source=str(path))
    _absolute_prompt_files(data, path.parent)
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for base in bases:
        below = load_file(path.parent / base, (*_stack, path))
        merged = deep_merge(merged, below.data)
        origins = merge_origins(origins, below.origins, below.data)
        moved = moved or below.moved
    return FileData(deep_merge(merged, data), moved, merge_origins(origins, _file_origins(lines, path), data))


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{a: {b: {c: value}}}`` with the value read as YAML (``true`` is a bool)."""
    check_utf8(text, flag=f"--set {text.partition('=')[0].strip()}", error=ConfigError)
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.match(key):
        raise ConfigError([f"--set {text!r}: expected KEY=VALUE with a dotted key such as training.packing=true "
                           f"(lists are set whole: key='[a, b]')"])
    value = parse_yaml(value_text, where=f"--set {key}")[0] if value_text.strip() else None
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


def _check_override_layouts(overrides: Sequence[str]) -> None:
    """One key set through --set in both spellings (``x.k`` and ``custom.extra.x.k``) is ambiguous, as in a file."""
    spelled: dict[str, str] = {}
    problems = []
    for text in overrides:
        key = text.partition("=")[0].strip()
        canonical = canonical_key(key)
        for other_canonical, other in spelled.items():
            clash = _under(canonical, other_canonical) or _under(other_canonical, canonical)
            if clash and (other == other_canonical) != (key == canonical):
                problems.append(f"--set {other} and --set {key} set one key in both layouts (`{SECTIONS_TEXT}` "
                                "at top level and under `custom.extra`). Fix: keep one of them")
        spelled.setdefault(canonical, key)
    if problems:
        raise ConfigError(problems)


SECTIONS_TEXT = "` / `".join(SECTIONS)


def build(
    data: dict[str, Any], *, overrides: Iterable[str], source: str, top_level: bool, origins: Origins | None = None
) -> Loaded:
    """Apply overrides, refuse legacy keys, structure; all problems of this stage in one ConfigError."""
    data = copy.deepcopy(data)  # the steps below edit in place; callers keep their mapping
    origins = dict(origins or {})
    overrides = list(overrides)
    _check_override_layouts(overrides)
    for text in overrides:
        override, moved = normalize_layout(parse_override(text), source=f"--set {text}")
        data = deep_merge(data, override)
        origins = merge_origins(origins, {}, override)  # --set values are named by their key, not a file
        top_level = top_level or moved
    show: Callable[[str], str] = lambda p: display_path(p, top_level=top_level)  # noqa: E731
    _empty_sections_to_none(data)
    messages = pop_removed_keys(data, display=show)
    messages = [f"{origins[k]}: {m}" if k in origins else m for k, m in messages]
    try:
        config = structure_config(data, source=source, display=show, locate=origins.get)
    except ConfigError as exc:
        raise ConfigError(messages + exc.messages, source=source) from exc
    if messages:
        raise ConfigError(messages, source=source)
    return Loaded(config, top_level, origins)


def load(path: str | Path, *, base_config: str | Path | None = None, overrides: Iterable[str] = ()) -> Loaded:
    leaf = load_file(Path(path))
    data, moved, origins = leaf.data, leaf.moved, leaf.origins
    if base_config is not None:
        base = load_file(Path(base_config))
        data, moved = deep_merge(base.data, data), moved or base.moved
        origins = merge_origins(base.origins, origins, leaf.data)
    return build(data, overrides=overrides, source=str(path), top_level=moved, origins=origins)


def load_config(path: str | Path, *, base_config: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read, merge and strictly structure a config file (cross-field rules: ``validate``)."""
    return load(path, base_config=base_config, overrides=overrides).config


def load_config_data(data: Mapping[str, Any], *, overrides: Iterable[str] = (), source: str = "<mapping>") -> Loaded:
    """The same pipeline for an in-memory mapping (fixtures, tests); ``extends`` is not allowed here."""
    if "extends" in data:
        raise ConfigError([f"{source}: `extends` needs a file; load the file with load_config instead"])
    normalized, moved = normalize_layout(dict(data), source=source)
    return build(normalized, overrides=overrides, source=source, top_level=moved)
