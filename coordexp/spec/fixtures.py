"""Loading scenario fixtures: ``fixtures/<change-id>/<SCENARIO-ID>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from coordexp.errors import SpecError
from coordexp.spec.paths import FIXTURES_DIR


@attrs.frozen
class Fixture:
    change: str
    scenario: str
    transition: str
    input: Any
    path: Path


def load_fixture(path: Path) -> Fixture:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    missing = {"scenario", "transition", "input"} - set(data)
    extra = set(data) - {"scenario", "transition", "input", "note"}
    if missing or extra:
        raise SpecError(
            f"{path}: fixture keys must be scenario, transition, input (optional note); "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    if data["scenario"] != path.stem:
        raise SpecError(f"{path}: file is named {path.stem} but names scenario {data['scenario']!r}")
    return Fixture(path.parent.name, data["scenario"], data["transition"], data["input"], path)


def iter_fixtures(change: str | None = None, root: Path = FIXTURES_DIR) -> list[Fixture]:
    """All fixtures (of one change, if given), sorted by scenario id for stable test order."""
    dirs = [root / change] if change else sorted(p for p in root.iterdir() if p.is_dir() and p.name != "tokenizer")
    out = []
    for d in dirs:
        if d.is_dir():
            out.extend(load_fixture(p) for p in sorted(d.glob("*.json")))
    return out
