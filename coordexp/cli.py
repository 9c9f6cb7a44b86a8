"""Command-line input checks shared by ``inspect`` and ``bench``: every bad argument is a message, never a traceback.

A command line carries whatever the shell passed: bytes that are not UTF-8 (Python keeps them as lone
surrogates), files that are not text, numbers out of range, JSON nested deeper than the parser's stack.
These helpers turn each into a ``DataError`` (or an argparse error) that names the flag, so a CLI's
``main`` only catches coordexp errors and exits 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from coordexp.errors import CoordexpError, DataError


def _bad_char(text: str) -> int | None:
    """Index of the first character that cannot be UTF-8 (a lone surrogate from undecodable argv bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_utf8(text: str, *, flag: str, error: type[CoordexpError] = DataError) -> str:
    """``text`` unchanged when it is valid Unicode; else ``error`` (a DataError by default) naming ``flag``."""
    index = _bad_char(text)
    if index is not None:
        raw = text[index].encode("utf-8", "surrogateescape")
        raise error(f"{flag}: the text is not valid UTF-8 (byte 0x{raw[0]:02x} at character {index}); "
                    "pass UTF-8 text")
    return text


def read_text(path: str, *, flag: str) -> str:
    """A UTF-8 text file named by ``flag``; missing, unreadable or non-UTF-8 files are DataErrors."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{flag} {path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                        f"{exc.start}); save the file as UTF-8") from exc


def load_json(path: str, *, flag: str) -> Any:
    """The JSON document in the file named by ``flag``; malformed or absurdly nested JSON is a DataError."""
    text = read_text(path, flag=flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{flag} {path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise DataError(f"{flag} {path}: JSON nested too deeply to read") from exc


def int_list(text: str, *, flag: str, low: int, high: int) -> list[int]:
    """Comma-separated integers, each in ``[low, high)``; the message names ``flag`` and the bad item."""
    out = []
    for item in check_utf8(text, flag=flag).replace(" ", "").split(","):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError as exc:
            raise DataError(f"{flag}: {item[:20]!r} is not an integer; give comma-separated token ids") from exc
        if not low <= value < high:
            raise DataError(f"{flag}: token id {value} is outside the vocabulary [{low}, {high}) of the tokenizer")
        out.append(value)
    return out


def count(minimum: int) -> Any:
    """An argparse ``type`` for an integer >= ``minimum`` (argparse names the flag and exits 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def generated_doc_main(argv: list[str] | None, *, prog: str, description: str, path: Path, render: Any,
                       regenerate: str) -> int:
    """The ``--write`` / ``--check`` / print command of a generated doc (config and metrics references)."""
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=description)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"rewrite {path.name}")
    group.add_argument("--check", action="store_true", help=f"exit 1 if {path.name} is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        path.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current != text:
            print(f"{path} is stale; regenerate it with: {regenerate}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0
