"""Traceability between scenarios, fixtures and runners.

For each change: which scenarios have a fixture, which are pending (their transition has no runner yet,
so no fixture can run), and which are broken. Broken means one of:
- missing: the transition has a runner but the scenario has no fixture;
- orphan: a fixture names no known scenario, or sits in another change's folder;
- mismatch: the fixture's transition differs from the scenario's `Transition:`;
- no runner: a fixture names a transition that has no runner;
- unreadable: a fixture file breaks the fixture format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from coordexp.errors import SpecError
from coordexp.spec.fixtures import Fixture, load_fixture
from coordexp.spec.lint import display_path
from coordexp.spec.model import Change, Scenario, load_changes
from coordexp.spec.paths import FIXTURES_DIR, SPEC_DIR

_NOT_FIXTURE_DIRS = frozenset({"tokenizer"})


@attrs.frozen
class TraceError:
    kind: str  # missing | orphan | mismatch | no_runner | unreadable
    change: str
    scenario: str | None
    path: Path | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = display_path(self.path) if self.path is not None else self.change
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: [{self.kind}] {self.message}"


@attrs.frozen
class ChangeTrace:
    change: str
    total: int
    with_fixture: tuple[str, ...]
    pending: Mapping[str, tuple[str, ...]]  # transition -> scenario ids (no runner yet)
    errors: tuple[TraceError, ...]

    @property
    def pending_count(self) -> int:
        return sum(len(v) for v in self.pending.values())


@attrs.frozen
class TraceReport:
    changes: tuple[ChangeTrace, ...]
    errors: tuple[TraceError, ...]  # all errors, including those of folders that are not changes

    @property
    def ok(self) -> bool:
        return not self.errors

    def pending(self) -> dict[str, dict[str, list[str]]]:
        return {c.change: {t: list(ids) for t, ids in c.pending.items()} for c in self.changes if c.pending}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changes": [
                {
                    "change": c.change,
                    "scenarios": c.total,
                    "with_fixture": len(c.with_fixture),
                    "pending": {t: list(ids) for t, ids in c.pending.items()},
                    "errors": [_error_json(e) for e in c.errors],
                }
                for c in self.changes
            ],
            "errors": [_error_json(e) for e in self.errors],
        }

    def render(self) -> str:
        lines = []
        for c in self.changes:
            lines.append(f"{c.change}: {c.total} scenario(s), {len(c.with_fixture)} with fixture, "
                         f"{c.pending_count} pending, {len(c.errors)} error(s)")
            for transition, ids in c.pending.items():
                lines.append(f"  pending [{transition}] ({len(ids)}): {', '.join(ids)}")
        change_names = {c.change for c in self.changes}
        if self.errors:
            lines.append("errors:")
            lines.extend(f"  {e}" for e in self.errors)
        stray = [e for e in self.errors if e.change not in change_names]
        lines.append(
            f"trace: {sum(c.total for c in self.changes)} scenario(s), "
            f"{sum(len(c.with_fixture) for c in self.changes)} with fixture, "
            f"{sum(c.pending_count for c in self.changes)} pending, {len(self.errors)} error(s)"
            + (f" ({len(stray)} outside any change)" if stray else "")
        )
        return "\n".join(lines)


def _error_json(e: TraceError) -> dict[str, Any]:
    return {"kind": e.kind, "change": e.change, "scenario": e.scenario,
            "path": display_path(e.path) if e.path is not None else None, "line": e.line,
            "message": e.message}


def load_fixture_files(root: Path = FIXTURES_DIR) -> tuple[list[Fixture], list[TraceError]]:
    """Every fixture under `root` (the folders `iter_fixtures` reads), keeping unreadable ones as errors
    instead of stopping at the first."""
    fixtures: list[Fixture] = []
    errors: list[TraceError] = []
    if not root.is_dir():
        return fixtures, errors
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _NOT_FIXTURE_DIRS):
        for path in sorted(d.glob("*.json")):
            try:
                fixtures.append(load_fixture(path))
            except SpecError as exc:
                errors.append(TraceError("unreadable", d.name, path.stem, path, str(exc)))
    return fixtures, errors


def trace(
    changes: Iterable[Change],
    fixtures: Iterable[Fixture],
    runner_names: Iterable[str],
    *,
    load_errors: Iterable[TraceError] = (),
) -> TraceReport:
    """The pure traceability check over already-loaded specs, fixtures and runner names."""
    changes = list(changes)
    runner_set = set(runner_names)
    owner: dict[str, tuple[str, Scenario]] = {}
    for c in changes:
        for s in c.scenarios:
            owner.setdefault(s.id, (c.id, s))
    errors: list[TraceError] = list(load_errors)
    covered: dict[str, set[str]] = {c.id: set() for c in changes}
    for f in fixtures:
        errors.extend(_check_fixture(f, owner, runner_set, covered))
    per_change = []
    for c in changes:
        with_fixture, pending = [], {}
        for s in c.scenarios:
            if s.id in covered[c.id]:
                with_fixture.append(s.id)
            elif s.transition in runner_set:
                errors.append(TraceError(
                    "missing", c.id, s.id, s.path,
                    f"{s.id} has no fixture although transition {s.transition!r} has a runner; "
                    f"write fixtures/{c.id}/{s.id}.json",
                    s.line,
                ))
            else:
                pending.setdefault(s.transition or "<none>", []).append(s.id)
        mine = tuple(e for e in errors if e.change == c.id)
        per_change.append(ChangeTrace(c.id, len(c.scenarios), tuple(with_fixture),
                                      {t: tuple(v) for t, v in sorted(pending.items())}, mine))
    return TraceReport(tuple(per_change), tuple(errors))


def _check_fixture(f: Fixture, owner, runner_set, covered) -> list[TraceError]:
    known = owner.get(f.scenario)
    if known is None:
        return [TraceError("orphan", f.change, f.scenario, f.path,
                           f"fixture names scenario {f.scenario}, which no spec defines; add the scenario to "
                           f"spec/changes/{f.change}/spec.md or rename the fixture")]
    change_id, scn = known
    out = []
    if change_id != f.change:
        out.append(TraceError("orphan", f.change, f.scenario, f.path,
                              f"scenario {f.scenario} belongs to change {change_id}; move the fixture to "
                              f"fixtures/{change_id}/"))
    if f.transition != scn.transition:
        out.append(TraceError("mismatch", f.change, f.scenario, f.path,
                              f"fixture transition {f.transition!r} differs from the scenario's "
                              f"Transition {scn.transition!r} ({display_path(scn.path)}:{scn.line})"))
    if f.transition not in runner_set:
        out.append(TraceError("no_runner", f.change, f.scenario, f.path,
                              f"fixture transition {f.transition!r} has no runner in coordexp.spec.runners"))
    if not out:
        covered[change_id].add(f.scenario)
    return out


def trace_tree(spec_dir: Path = SPEC_DIR, fixtures_dir: Path = FIXTURES_DIR,
               runner_names: Iterable[str] | None = None) -> TraceReport:
    """Trace the files on disk; runners default to the registry in coordexp.spec.runners."""
    if runner_names is None:
        from coordexp.spec.runners import runners

        runner_names = runners().keys()
    fixtures, load_errors = load_fixture_files(fixtures_dir)
    return trace(load_changes(spec_dir), fixtures, runner_names, load_errors=load_errors)
