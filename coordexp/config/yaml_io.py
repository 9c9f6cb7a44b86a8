"""Reading YAML strictly: UTF-8 only, no duplicate keys, and the line of every key, for error messages.

PyYAML's ``safe_load`` keeps the last of two equal keys silently, so a config that says ``lora_rank: 8`` and
later ``lora_rank: 64`` trains with 64 and nobody is told; here that is an error naming both lines. Key
lines are kept so a schema error found after merging an ``extends`` chain can name the file and line that
set the key. Every way a file or a ``--set`` value can be unreadable (not UTF-8, not YAML, nested beyond
the parser's recursion limit, an integer literal longer than Python accepts) becomes a ConfigError, never a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from coordexp.errors import ConfigError

# Why each exception can come out of the YAML parser on hostile input (none of them is a YAMLError):
# RecursionError: nesting deeper than the interpreter's stack; ValueError: an int literal over Python's
# 4300-digit limit; UnicodeError: lone surrogates in a value passed on the command line.
_PARSER_FAILURES = (RecursionError, ValueError, UnicodeError)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key (a list or mapping as key); SafeLoader reports it
                continue
            if seen is not None:
                raise ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first set on line {seen}); a second value would silently win",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _key_lines(root: yaml.Node | None) -> dict[str, int]:
    """Dotted path (as written in the file) -> 1-based line of its key; list items as ``name[i]``.

    Iterative, because the document may be nested as deep as the parser allowed.
    """
    out: dict[str, int] = {}
    stack: list[tuple[yaml.Node | None, str]] = [(root, "")]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                    out[path] = key_node.start_mark.line + 1
                    stack.append((value_node, path))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{prefix}[{index}]") for index, item in enumerate(node.value))
    return out


def _problem(exc: yaml.YAMLError, where: str, *, one_line: bool) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f"{where}:{mark.line + 1}" if mark is not None and not one_line else where
    return f"{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})"


def parse_yaml(text: str, *, where: str) -> tuple[Any, dict[str, int]]:
    """The document in ``text`` and the line of each key; ``where`` names the text in messages."""
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader refuses non-printable characters already here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError([_problem(exc, where, one_line="\n" not in text.strip())]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{where}: nested too deeply to read (YAML/JSON nesting beyond the parser's limit)"]) from exc
    except _PARSER_FAILURES as exc:
        raise ConfigError([f"{where}: not readable as YAML ({exc})"]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return data, _key_lines(node)


def read_yaml_file(path: Path, *, via: str | None = None) -> tuple[Any, dict[str, int]]:
    """A config file's document and key lines; a missing, unreadable or non-UTF-8 file is a ConfigError."""
    if not path.is_file():
        origin = f" (extended from {via})" if via else ""
        raise ConfigError([f"config file not found: {path}{origin}"])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read ({exc.strerror or exc})"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}). "
                           "Fix: save the file as UTF-8"]) from exc
    return parse_yaml(text, where=str(path))
