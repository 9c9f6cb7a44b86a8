"""Key reach: which schema keys some code path reads, so a key that is accepted and does nothing is caught.

A key the schema accepts but nothing reads is the legacy failure (``candidate_top_k`` in a YAML that no code
looked at). The test ``tests/unit/bind/test_reach.py`` walks every leaf of the schema and requires each one to
be reached, or listed with its reason in ``coordexp.bind.unread``, and no listed key to be reached.

How a key counts as reached, and why this way:

1. **Traced through ``bind``.** ``traced_reads(fn, config)`` hands ``fn`` a recording proxy of the config:
   every attribute read of a schema field is logged by its dotted key, list items as ``name[]``. A key counts
   only when ``bind`` really reads it for some config of the probe set (the shipped configs plus a few
   variants), so reach is observed, not claimed. A recording proxy was chosen over an AST scan for this
   part because field names repeat across sections (``enabled``, ``mode``, ``every_steps`` ...): only the
   running code knows which section an attribute belongs to.
2. **Declared by the module that reads it.** Code that needs a model or a process to run (the learner, the
   tuner, the executor) cannot be traced in a unit test. Such a module declares, at module level,
   ``CONFIG_READS = ("training.learning_rate", ...)``: a tuple of string literals, found by parsing every
   module of the package (nothing is imported, so the check stays fast and torch-free). A declaration is
   checked, not trusted blindly: each key must be a schema leaf, and the declaring module must contain an
   attribute read of that key's last name (``.learning_rate``), so a declaration left behind after the code
   moved fails the test.

Reads by the config validator do not count: a rule reading a key to check its range does not make the key
do anything. A key whose only purpose is a check (``prompt_len_estimate``) is listed in the unread table with
that reason.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from coordexp.config._types import NoneType, tuple_item, union_members, walk_schema
from coordexp.config.schema_root import Config

DECLARATION = "CONFIG_READS"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the coordexp package


def _is_leaf(field_type: Any) -> bool:
    """A field holding values (a number, a list of strings, a number-or-ramp), not only sections."""
    for member in union_members(field_type):
        if member is NoneType:
            continue
        if isinstance(member, type) and attrs.has(member):
            continue
        item = tuple_item(member)
        if isinstance(item, type) and attrs.has(item):  # a list of sections: its items' fields are the leaves
            continue
        return True
    return False


def schema_leaves(root: type = Config) -> frozenset[str]:
    """Every dotted key of the schema that holds a value (list items as ``name[].field``)."""
    return frozenset(path for path, field in walk_schema(root) if _is_leaf(field.type))


class _Recorder:
    """Stands in for one attrs section: logs each field read and wraps what it returns."""

    __slots__ = ("_log", "_path", "_target")

    def __init__(self, target: Any, path: str, log: set[str]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_log", log)

    def __getattr__(self, name: str) -> Any:
        target = object.__getattribute__(self, "_target")
        path = object.__getattribute__(self, "_path")
        log = object.__getattribute__(self, "_log")
        cls = type(target)
        if name in attrs.fields_dict(cls):
            key = f"{path}.{name}" if path else name
            log.add(key)
            return _wrap(getattr(target, name), key, log)
        prop = getattr(cls, name, None)
        if isinstance(prop, property):  # e.g. Config.rollout_matching: evaluated on the proxy, so reads log
            return prop.fget(self)
        raise AttributeError(f"{cls.__name__} proxy: {name!r} is neither a field nor a property")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("config sections are read-only")

    def __repr__(self) -> str:
        return f"<recording {type(object.__getattribute__(self, '_target')).__name__} at {object.__getattribute__(self, '_path')!r}>"


def _wrap(value: Any, path: str, log: set[str]) -> Any:
    if attrs.has(type(value)):
        return _Recorder(value, path, log)
    if isinstance(value, tuple) and value and all(attrs.has(type(v)) for v in value):
        return tuple(_Recorder(v, f"{path}[]", log) for v in value)
    return value


def traced_reads(fn: Callable[[Any], Any], config: Config) -> frozenset[str]:
    """The dotted keys ``fn(config)`` reads (``fn`` runs on a recording proxy; its result is dropped)."""
    log: set[str] = set()
    fn(_Recorder(config, "", log))
    return frozenset(log)


@attrs.frozen
class Declaration:
    module: str  # dotted module name
    path: Path
    keys: tuple[str, ...]
    attributes: frozenset[str]  # every attribute name the module reads


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _declared_keys(tree: ast.Module, path: Path) -> tuple[str, ...] | None:
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == DECLARATION and node.value is not None:
            value = ast.literal_eval(node.value)
            if not (isinstance(value, tuple) and all(isinstance(k, str) for k in value)):
                raise ValueError(f"{path}:{node.lineno}: {DECLARATION} must be a tuple of dotted-key strings")
            return value
    return None


def declarations(package_dir: Path = PACKAGE_DIR) -> Iterator[Declaration]:
    """Every module of the package that declares ``CONFIG_READS``, parsed, not imported."""
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if DECLARATION not in text:
            continue
        tree = ast.parse(text, filename=str(path))
        keys = _declared_keys(tree, path)
        if keys is None:
            continue
        attributes = frozenset(n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute))
        yield Declaration(_module_name(path, package_dir), path, keys, attributes)


def declaration_problems(decls: Iterable[Declaration], leaves: frozenset[str]) -> list[str]:
    """Declared keys that are not schema leaves, or whose module never reads an attribute of that name."""
    problems = []
    for decl in decls:
        for key in decl.keys:
            leaf = key.rsplit(".", 1)[-1].removesuffix("[]")
            if key not in leaves:
                problems.append(f"{decl.module}: declares {key!r}, which is not a key of the schema")
            elif leaf not in decl.attributes:
                problems.append(f"{decl.module}: declares {key!r} but never reads an attribute `.{leaf}`")
    return problems


def reach_report(
    probes: Iterable[Config], readers: Mapping[str, Callable[[Any], Any]], decls: Iterable[Declaration]
) -> dict[str, set[str]]:
    """Reached key -> who reached it (a traced reader's name or a declaring module)."""
    who: dict[str, set[str]] = {}
    for config in probes:
        for name, reader in readers.items():
            for key in traced_reads(reader, config):
                who.setdefault(key, set()).add(name)
    for decl in decls:
        for key in decl.keys:
            who.setdefault(key, set()).add(decl.module)
    return who
