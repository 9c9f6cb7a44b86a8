"""Registry of scenario runners, one module per transition.

Each module in this package defines ``TRANSITION = "<name>"`` and ``run(input) -> JSON data``.
A runner feeds a fixture's ``input`` through the real code and returns plain data for the snapshot.
An expected error is returned as data (``expected_error``), so a scenario that says "raises" is
snapshotted like any other.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from coordexp.errors import CoordexpError, SpecError

Runner = Callable[[Any], Any]


def _discover() -> dict[str, Runner]:
    found: dict[str, Runner] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        name = mod.TRANSITION
        if name in found:
            raise RuntimeError(f"two runner modules claim transition {name!r}")
        found[name] = mod.run
    return found


_RUNNERS: dict[str, Runner] | None = None


def runners() -> dict[str, Runner]:
    """transition name -> runner (discovered once)."""
    global _RUNNERS
    if _RUNNERS is None:
        _RUNNERS = _discover()
    return _RUNNERS


def expected_error(exc: BaseException) -> dict[str, Any]:
    """How a runner reports an error the scenario expects."""
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def each_case(data: Any, run_one: Callable[[Any], Any], *, transition: str, key: str = "cases") -> Any:
    """Run one case, or every case of ``{key: [...]}`` (scenarios with sub-cases), in order."""
    if not isinstance(data, dict):
        raise SpecError(f"{transition} fixture input must be a mapping, got {type(data).__name__}")
    if key not in data:
        return run_one(data)
    if set(data) != {key}:
        raise SpecError(f"{transition} fixture input with {key!r} takes no other keys, got {sorted(data)}")
    return [run_one(case) for case in data[key]]


def is_json(text: str) -> bool:
    """Whether ``text`` parses as JSON (runners report it for prefix + append texts)."""
    import json

    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def run_scenario(transition: str, data: Any) -> Any:
    """Run one fixture input; coordexp's own errors (and ValueError) become snapshot data.

    A ``SpecError`` is not snapshotted: it means the fixture itself is malformed, which must fail.
    """
    table = runners()
    if transition not in table:
        raise KeyError(f"no runner for transition {transition!r}; known: {sorted(table)}")
    try:
        return table[transition](data)
    except SpecError:
        raise
    except (CoordexpError, ValueError) as exc:
        return expected_error(exc)
